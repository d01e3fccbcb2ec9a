"""Mirrors: this relay's verified copies of feeds that a peer homes (docs/federation.md).

A mirrored feed is subscribed over the home's link and every record is checked before it is
stored: the author's signature and id, the receipt's signature, that the receipt is the home's,
and that it extends our stored chain (``seq`` = head + 1, ``prev`` = head hash). A record we
already have must be the very same one (same hash), or the home has equivocated. A failure
refuses the record (nothing stored), raises an alarm and ends that feed's subscription only
(``link.unsubscribe``): the link and its other feeds go on. The feed is subscribed again from
its stored head on a later sync tick, after a backoff that doubles with each refusal in a row
(up to ``MAX_RETRY``), or when the link reconnects.
Records that pass are handed to ``FeedRuntime.mirror``, which appends them verbatim in order.

Heads (``on_heads``, from either direction of a peer's links) are bounded like an agent's
publishes: at most ``peer_heads_burst`` per frame and ``peer_heads_per_sec`` per peer. Only
heads that concern us are looked at: feeds the peer homes and we mirror (a mismatch is the
home's equivocation: alarm, that feed refused), and feeds we home (checked against our own
log first; a head our log does not hold is false evidence: nothing is written, the peer is cut
off, :class:`FalseEvidence`). Heads of feeds a third member homes carry its signed receipt and
are compared with ours too (``relay.federation.gossip``): a home cannot show two mirrors two
records at one seq unseen.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from collab import frames
from collab.errors import ColonyError, MalformedFrame, ProtocolError, RateLimited, TooLarge
from collab.events import GENESIS, Record, check_feed
from collab.feedcore_chain import link as chain_link

from relay.core.limits import RateLimiter
from relay.core.mirrorstore import MirrorConflict
from relay.core.routing import LOCAL_PREFIX, Member, Routing
from relay.federation.gossip import Forks

if TYPE_CHECKING:
    from relay.core.hub import Hub
    from relay.federation.alarms import Alarms

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2048   # records handed to a runtime but not yet stored, per feed, before we wait
DISCOVERY_LIMIT = 10_000
MAX_RETRY = 60.0       # seconds: the longest wait before a refused feed is subscribed again


class FalseEvidence(ProtocolError):
    """A peer's head for a feed this relay homes is not in our log: the peer is cut off."""

    code = "false_evidence"


@dataclass(eq=False, slots=True)
class _Feed:
    """One mirrored feed: its home, the verified tail (stored or handed over) and the queue."""

    feed: str
    home: Member
    link: Any
    tail_seq: int = 0
    tail_head: str = GENESIS
    active: bool = False
    gen: int = 0  # bumped when a subscription ends: records of an older one are ignored
    queue: deque[tuple[int, Any, asyncio.Future[None]]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    pending: asyncio.Future[None] | None = None  # the last record handed to the runtime
    ending: asyncio.Task[None] | None = None  # unsubscribing: a new subscribe waits for it
    in_flight: int = 0
    refusals: int = 0  # refusals in a row (the backoff before subscribing again doubles with each)
    retry_at: float = 0.0  # monotonic time before which the feed is not subscribed again


class Mirrors:
    """Every feed this relay mirrors; ``start`` runs discovery and heads exchange."""

    def __init__(self, hub: Hub, routing: Routing, links: dict[str, Any], alarms: Alarms,
                 sync_interval: float) -> None:
        self.hub, self.routing, self.links, self.alarms = hub, routing, links, alarms
        self.sync_interval = sync_interval
        lim = hub.config.limits
        self.max_heads = lim.peer_heads_burst
        self.heads_rate = RateLimiter(lim.peer_heads_per_sec, lim.peer_heads_burst, 1024)
        self.false_evidence = 0  # heads refused as false evidence (the peer was cut off)
        self.feeds: dict[str, _Feed] = {}
        self.forks = Forks(self)  # signed heads passed on between mirrors of a third member's feeds
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.http: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        for link in self.links.values():
            link.add_on_connect(lambda *_a, _l=link: self._spawn(self._reensure(_l.peer.key, backoff=False)))
            link.add_on_heads(functools.partial(self.on_heads, link.peer.key))
            link.add_on_refused(functools.partial(self._sub_refused, link))
        self.http = httpx.AsyncClient(timeout=max(2.0, self.sync_interval * 4))
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="mirrors")

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks, *(m.task for m in self.feeds.values())) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:
                log.exception("mirror sync failed; next try in %.1fs", self.sync_interval)
            await asyncio.sleep(self.sync_interval)

    async def sync_once(self) -> None:
        """One tick: discover replicated feeds on each peer, re-ensure dropped ones, send heads
        (peers concurrently: one that does not answer must not hold up the others)."""
        try:
            signed = await self.forks.heads()
        except Exception:  # e.g. our storage is down: the other heads and discovery go on
            log.exception("reading the heads to pass on failed")
            signed = []
        await asyncio.gather(*(self._sync_peer(key, link, [h for home, h in signed if home != key])
                               for key, link in self.links.items()))

    async def _sync_peer(self, key: str, link: Any, signed: list[dict[str, Any]]) -> None:
        try:
            for prefix in self.routing.replicate:
                for feed in await self._discover(link.peer, prefix):
                    if self.routing.home(feed).key == key:
                        await self._ensure_quietly(feed)
            await self._reensure(key)
            if link.connected:
                heads = self.heads_for(key) + signed
                for i in range(0, len(heads), self.max_heads):  # a frame carries at most peer_heads_burst
                    await _call(link.send_heads, heads[i:i + self.max_heads])
        except Exception:
            log.exception("mirror sync with %s failed", link.peer.url)

    async def _discover(self, peer: Member, prefix: str) -> list[str]:
        if self.http is None:
            return []
        try:
            resp = await self.http.get(f"{peer.url}/feeds", params={"prefix": prefix, "limit": DISCOVERY_LIMIT})
            resp.raise_for_status()
            out = []
            for f in resp.json()["feeds"]:
                try:
                    out.append(check_feed(f["feed"]))
                except (ColonyError, KeyError, TypeError):
                    log.warning("peer %s listed a bad feed id %r", peer.url, f)
            return out
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("listing %s feeds on %s failed: %r", prefix, peer.url, exc)
            return []

    async def _reensure(self, peer_key: str, backoff: bool = True) -> None:
        """Subscribe again the peer's feeds whose subscription ended (on a sync tick, only those
        whose backoff after a refusal is over; after a reconnect, all)."""
        now = time.monotonic()
        for m in list(self.feeds.values()):
            if m.home.key == peer_key and not m.active and (not backoff or m.retry_at <= now):
                await self._ensure_quietly(m.feed)

    async def _ensure_quietly(self, feed: str) -> None:
        try:
            await self.ensure(feed)
        except Exception:
            log.exception("could not mirror %s", feed)

    def heads_for(self, peer_key: str) -> list[dict[str, Any]]:
        """Our heads of the loaded feeds we home (but ``relay/``) and of those we mirror from the peer."""
        me, out = self.routing.me.key, []
        for feed, rt in list(self.hub.feeds.items()):
            if rt.seq == 0 or feed.startswith(LOCAL_PREFIX):
                continue
            home = self.routing.home(feed).key
            if home == me or (home == peer_key and feed in self.feeds):
                out.append({"feed": feed, "seq": rt.seq, "hash": rt.head})
        return out

    # -- subscribing ---------------------------------------------------------------------------
    async def ensure(self, feed: str) -> None:
        """Mirror ``feed`` from its home (idempotent; nothing for feeds this relay homes)."""
        home = self.routing.home(feed)
        if home.key == self.routing.me.key:
            return
        m = self.feeds.get(feed)
        if m is not None and m.active:
            return
        link = self.links.get(home.key)
        if link is None:
            raise RuntimeError(f"no link to {home.url}, the home of {feed}")
        if m is None:
            m = self.feeds[feed] = _Feed(feed, home, link)
        m.active = True  # before any await: a concurrent ensure returns at once
        m.gen += 1  # and a late failure of the previous subscription's records cannot halt this one
        gen = m.gen
        try:
            if m.ending is not None:  # its unsub must not land after our sub
                await asyncio.wait([m.ending])
            await self._settle(m)
            rt = await self.hub.runtime(feed)
            m.tail_seq, m.tail_head = rt.seq, rt.head  # since = our stored head
            await _call(link.subscribe, feed, lambda: m.tail_seq, lambda d: self._on_record(m, gen, d))
        except BaseException:
            m.active = False
            raise

    async def settled(self, feed: str) -> None:
        """Wait until every record received for ``feed`` so far is checked and stored (or refused)."""
        m = self.feeds.get(feed)
        if m is None:
            return
        while m.task is not None and not m.task.done():
            await asyncio.wait([m.task])
        await self._settle(m)

    def _on_record(self, m: _Feed, gen: int, d: Any) -> asyncio.Future[None]:
        """Queue a record from the link; the future is done once it is checked and handed over."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if gen != m.gen or not m.active:
            fut.set_result(None)  # from a subscription we ended
            return fut
        m.queue.append((gen, d, fut))
        if m.task is None or m.task.done():
            m.task = asyncio.get_running_loop().create_task(self._drain(m), name=f"mirror:{m.feed}")
        return fut

    async def _drain(self, m: _Feed) -> None:
        while m.queue:
            gen, d, fut = m.queue.popleft()
            try:
                if gen == m.gen:
                    await self._check(m, d)
            except Exception:  # e.g. our storage is down: resubscribe from the stored head later
                log.exception("mirroring a record of %s failed", m.feed)
                self._halt(m)
            finally:
                if not fut.done():
                    fut.set_result(None)

    # -- verification --------------------------------------------------------------------------
    async def _check(self, m: _Feed, d: Any) -> None:
        raw = d.get("seq") if isinstance(d, dict) else None
        seq = raw if isinstance(raw, int) else 0
        try:
            rec = Record.from_wire(d)
        except ColonyError as exc:
            await self._refuse(m, "invalid", seq, None, d, f"record does not verify: {exc}")
            return
        if rec.relay != m.home.key:
            await self._refuse(m, "invalid", seq, None, d,
                               f"receipt signed by {rec.relay[:16]}…, not by the home {m.home.key[:16]}…")
            return
        if rec.feed != m.feed:
            await self._refuse(m, "invalid", seq, None, d, f"record of {rec.feed} on the {m.feed} subscription")
            return
        if rec.seq <= m.tail_seq:
            await self._settle(m)
            if not m.active:
                return
        if rec.seq <= m.tail_seq:  # we have that seq: it must be the very same record
            stored = await self.stored(m.feed, rec.seq)
            if stored is not None and stored["hash"] == rec.hash:
                return  # a duplicate (resent after a reconnect)
            ours = stored["record"] if stored else None
            await self._refuse(m, "equivocation", rec.seq, ours, d, f"the home showed another record #{rec.seq}")
            return
        how = chain_link(m.tail_seq, m.tail_head, rec)
        if how == "gap":
            await self._refuse(m, "gap", rec.seq, None, d, f"record #{rec.seq} after our head #{m.tail_seq}")
            return
        if how == "break":
            await self._settle(m)
            stored = await self.stored(m.feed, m.tail_seq) if m.tail_seq else None
            kind = "equivocation" if m.tail_seq else "invalid"
            await self._refuse(m, kind, rec.seq, stored["record"] if stored else None, d,
                               f"record #{rec.seq} does not link to our record #{m.tail_seq}")
            return
        if m.in_flight >= MAX_IN_FLIGHT:
            await self._settle(m)
            if not m.active:
                return
        rt = self.hub.feeds.get(m.feed) or await self.hub.runtime(m.feed)
        fut = rt.mirror(rec, frames.encode(rec.to_wire()))
        m.pending, m.tail_seq, m.tail_head = fut, rec.seq, rec.hash
        m.in_flight += 1
        gen = m.gen
        fut.add_done_callback(lambda f: self._stored_done(m, gen, rec, f))

    def _stored_done(self, m: _Feed, gen: int, rec: Record, fut: asyncio.Future[None]) -> None:
        m.in_flight -= 1
        exc = None if fut.cancelled() else fut.exception()
        if exc is None and not fut.cancelled():
            m.refusals = 0
            return
        if gen != m.gen:
            return  # that subscription ended already (its first failure did it)
        if isinstance(exc, MirrorConflict):  # another process of this site stored another record
            self.refuse_feed(m, f"equivocation: {m.feed}#{rec.seq}")
            ours = json.loads(exc.stored) if exc.stored else None
            self._spawn(self.alarms.raise_("equivocation", m.feed, rec.seq, ours, rec.to_wire(), m.home.key, str(exc)))
        else:  # our storage failed: no alarm, no drop; subscribe again from the stored head later
            self._halt(m)
            log.warning("storing mirrored %s#%d failed (%r); resubscribing later", m.feed, rec.seq, exc)

    def _sub_refused(self, link: Any, feed: str, code: str) -> None:
        """The home refused our subscription (e.g. ``unavailable``: its storage was down): the sync
        tick subscribes again after the backoff."""
        m = self.feeds.get(feed)
        if m is not None and m.link is link:
            self.refuse_feed(m, f"the home refused the subscription ({code})")

    async def _refuse(self, m: _Feed, kind: str, seq: int, ours: dict[str, Any] | None, theirs: Any,
                      reason: str) -> None:
        self.refuse_feed(m, f"{kind}: {m.feed}#{seq}")
        await self.alarms.raise_(kind, m.feed, seq, ours, theirs, m.home.key, reason)

    def refuse_feed(self, m: _Feed, why: str) -> None:
        """Refuse the feed's mirroring (only this feed's: the link goes on) and back off."""
        if not m.active:
            return
        delay = min(MAX_RETRY, self.sync_interval * 2 ** min(m.refusals, 16))
        m.refusals += 1
        m.retry_at = time.monotonic() + delay
        log.warning("mirroring of %s from %s refused (%s); subscribing again in %.1fs", m.feed, m.home.url, why, delay)
        self._halt(m)

    def _halt(self, m: _Feed) -> None:
        """End the feed's subscription: drop queued records, unsubscribe (the link goes on)."""
        if not m.active:
            return
        m.gen += 1
        m.active = False
        for _, _, fut in m.queue:
            if not fut.done():
                fut.set_result(None)
        m.queue.clear()
        m.ending = self._spawn(self._disconnect(m.link, m.feed, ""))

    async def _disconnect(self, link: Any, feed: str | None, reason: str) -> None:
        """Unsubscribe ``feed``; if ``reason``, also cut the link (``Link.drop``: it reconnects)."""
        try:
            if feed is not None:
                await _call(link.unsubscribe, feed)
            if reason:
                await _call(link.drop, reason)
        except Exception:
            log.exception("dropping the link to %s failed", link.peer.url)

    async def _settle(self, m: _Feed) -> None:
        """Wait for the records handed over to be stored; after a failure, rewind to the store."""
        while m.pending is not None and not m.pending.done():
            await asyncio.wait([m.pending])
        if not m.active:
            return
        rt = self.hub.feeds.get(m.feed)
        if rt is not None and m.in_flight == 0:
            m.tail_seq, m.tail_head = rt.seq, rt.head

    async def stored(self, feed: str, seq: int) -> dict[str, Any] | None:
        rows = await self.hub.storage.read(feed, seq - 1, 1)
        if not rows or rows[0].seq != seq:
            return None
        return {"hash": rows[0].hash, "record": json.loads(rows[0].data)}

    # -- heads ---------------------------------------------------------------------------------
    def on_heads(self, peer_key: str, heads: Any) -> asyncio.Task[None]:
        """Compare a peer's heads with our log (awaitable; runs even if not awaited). Refused at
        once (``too_large``, ``rate_limited``) past ``peer_heads_burst`` / ``peer_heads_per_sec``;
        the task fails with :class:`FalseEvidence` if the peer was cut off."""
        if not isinstance(heads, list):
            raise MalformedFrame("heads must be a list of {feed, seq, hash} objects")
        if len(heads) > self.max_heads:
            raise TooLarge(f"{len(heads)} heads in one frame; the limit is {self.max_heads} (peer_heads_burst)")
        if not self.heads_rate.allow(peer_key, len(heads)):
            raise RateLimited(f"over {self.heads_rate.rate:g} heads per second (peer_heads_per_sec); "
                              "send them again next interval")
        task = self._spawn(self._on_heads(peer_key, heads))
        task.add_done_callback(_retrieve)  # a false-evidence failure is handled inside; awaiting is optional
        return task

    async def _on_heads(self, peer_key: str, heads: list[Any]) -> None:
        me = self.routing.me.key
        for h in heads:
            if not isinstance(h, dict):
                continue
            feed, seq, hsh = h.get("feed"), h.get("seq"), h.get("hash")
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(hsh, str):
                continue
            try:
                feed = check_feed(feed)
            except ColonyError:
                continue
            if feed.startswith(LOCAL_PREFIX):
                continue  # each relay's own (never sent by a member)
            home = self.routing.home(feed).key
            m = self.feeds.get(feed)
            if home == me:
                await self._check_own_head(peer_key, feed, seq, hsh)
                continue
            if m is None:
                continue  # a feed we do not mirror: nothing to compare
            if home != peer_key:  # another mirror's head: its home receipt must agree with ours
                if "rsig" in h:
                    await self.forks.check(peer_key, m, {**h, "feed": feed}, seq, hsh)
                continue
            rt = self.hub.feeds.get(feed)
            if rt is not None and (rt.seq < seq or (rt.seq == seq and rt.head == hsh)):
                continue  # ahead of us (the subscription catches up), or the same head
            stored = await self.stored(feed, seq)
            if stored is None or stored["hash"] == hsh:
                continue
            self.refuse_feed(m, f"equivocation: {feed}#{seq}")
            await self.alarms.raise_("equivocation", feed, seq, stored["record"], h, peer_key,
                                     f"peer's head #{seq} differs from our record")

    async def _check_own_head(self, peer_key: str, feed: str, seq: int, hsh: str) -> None:
        """A peer's head of a feed we home must be in our log; else cut the peer off."""
        rt = self.hub.feeds.get(feed)
        if rt is not None and rt.seq == seq and rt.head == hsh:
            return
        stored = await self.stored(feed, seq)
        if stored is not None:
            if stored["hash"] == hsh:
                return
            why = f"its head {feed}#{seq} is not our record #{seq}"
        else:
            head = await self.hub.storage.head(feed)
            if head is not None and head.seq >= seq:
                return  # compacted away: nothing to check it against
            why = f"its head {feed}#{seq} is past our log (#{head.seq if head else 0})"
        self.false_evidence += 1
        log.error("peer %s sent false evidence about a feed this relay homes (%s): cutting it off",
                  peer_key[:16], why)
        if peer_key in self.links:
            await self._disconnect(self.links[peer_key], None, f"false evidence: {why}")
        raise FalseEvidence(f"false evidence: {why}")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and isinstance(task.exception(), Exception) \
            and not isinstance(task.exception(), FalseEvidence):
        log.error("comparing a peer's heads failed", exc_info=task.exception())


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a link method that may be sync or async."""
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result
