"""One sequencer per feed on a Redis site: the other processes hand their publishes to it.

Several relay processes on one Redis used to race on a busy feed's head: each sealed its own
batches, lost compare-and-set rounds to the others and sealed them again (two processes
delivered about half of what one does on one hot document). Now one process at a time
*sequences* a feed for the whole site, under a lease in Redis with a fencing epoch
(``relay.storage.redis_lease``: the append script refuses any append that does not name the
current lease, so a deposed sequencer can never append):

* **Sequencing here.** A publish to a feed whose lease this process holds goes straight to the
  feed's worker (``FeedRuntime.enqueue``), as on a single process.
* **Handing off.** Otherwise :meth:`Sequencer.hand_off` asks Redis for the lease (one round
  trip, once per feed: the answer is remembered): granted, the publish is sequenced here; held
  by another process, the publish is sent to that process's hand-off channel (the bus
  pseudo-feed ``~seq/<token>``: per destination and event-loop turn one pub/sub message of one
  line per request or answer, split at :data:`MAX_MESSAGE`) and
  the caller's future waits for the answer routed back on ours. The sequencer's records reach
  every process's subscribers the way any record does: on the feed's bus channel.
* **Serving.** Requests received on our channel are queued on the feed's worker in the order
  they arrived (a connection's publishes keep their order). A publish stored is answered by its
  record: the append publishes it on the feed's channel, and the requester's worker, committing
  it, answers the publish handed off for that event id (:meth:`Sequencer.committed`; a lost
  message shows as a gap at the next batch, whose sync from storage answers it the same way).
  Only a duplicate (its ``seq``) or a refusal (its code) goes back as an answer line: no answer
  message per stored batch, and the requester's ack waits for no second hop. Events arrive
  checked already (signature, size, rate limits by IP and key, on the process the author is
  connected to): the processes of a site trust each other as they trust their Redis.
* **Failover.** The lease lasts ``ttl`` (2 s) after its last renewal (every ``ttl``/4) and is
  released after :data:`relay.storage.redis_lease.IDLE_RELEASE` without publishes. A request
  unanswered for :data:`STALL` makes the requester ask for the lease again every
  :data:`TICK`: once the dead sequencer's lease lapsed, the requester (or whoever asked
  first) is granted a newer epoch and the waiting publishes are sequenced there (event ids make
  this idempotent: what the dead process appended comes back ``dup`` with its seq). While the
  sequencer still holds the lease, the requester reads the feed's log (a stored record whose
  message was lost answers it) and sends the request again after :data:`RESEND`. A refusal
  because the answering process was deposed meanwhile re-routes the publish the same way.
  Requests unanswered for :data:`GIVE_UP` are answered ``unavailable`` (the SDK retries).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collab.errors import ColonyError, RelayError, Unavailable
from collab.events import Event, Record

from relay.core.bus import Bus
from relay.core.jobs import fail, ok
from relay.storage.base import Deposed
from relay.storage.redis_lease import Leases

log = logging.getLogger(__name__)

SEQ_PREFIX = "~seq/"  # bus pseudo-feeds: a process's hand-off channel ("~": never a feed id)
TICK = 0.25           # seconds between checks of unanswered hand-offs (renewals every ttl/4)
STALL = 0.5           # seconds without an answer before the requester asks for the lease again
RESEND = 2.0          # seconds without an answer from a sequencer that still holds the lease: send again
GIVE_UP = 15.0        # seconds after which a hand-off is answered ``unavailable``
MAX_HOPS = 3          # a request handed on by processes whose view of the holder was stale
MOVED = "moved"       # the answer of a process deposed meanwhile (never sent to clients)
MAX_MESSAGE = 256 << 10  # bytes of one hand-off message (far below Redis's pub/sub output buffer limits)

Answer = tuple[int, bool]


class Target(Protocol):
    """The feed's worker as the sequencer sees it (``relay.core.worker.FeedRuntime``)."""

    @property
    def feed(self) -> str: ...

    def enqueue(self, event: Event, session_key: str | None) -> asyncio.Future[Answer]: ...

    def request_sync(self) -> None: ...


@dataclass(slots=True, eq=False)
class Pending:
    rid: int
    rt: Target
    event: Event
    session_key: str | None
    fut: asyncio.Future[Answer]
    hops: int = 0
    t0: float = field(default_factory=time.monotonic)
    sent_at: float = 0.0
    to: str = ""  # the token of the process it was sent to


@dataclass(slots=True)
class Route:
    holder: str | None = None  # the token of the feed's sequencer as last learned (None: ask)
    waiting: list[Pending] = field(default_factory=list)  # not sent yet, in order
    asking: asyncio.Task[None] | None = None


def event_row(event: Event) -> list[Any]:
    return [event.feed, event.kind, event.author, event.ts, event.ctx, event.body, event.sig, event.id, event.size]


def row_event(row: list[Any]) -> Event:
    """An event another process of the site checked already (no signature work here)."""
    feed, kind, author, ts, ctx, body, sig, eid, size = row
    return Event(feed, kind, author, ts, ctx, body, sig, eid, size)


def refusal(code: str, message: str) -> ColonyError:
    return Unavailable(message) if code == "unavailable" else RelayError(code, message)


class Sequencer:
    """This process's side of a site's sequencing (see the module docstring)."""

    def __init__(self, leases: Leases, bus: Bus, ttl: float) -> None:
        self.leases, self.bus = leases, bus
        leases.configure(ttl)
        self.me = leases.token
        self.channel = SEQ_PREFIX + self.me
        self.routes: dict[str, Route] = {}
        self.inflight: dict[int, Pending] = {}  # sent to another process, not answered yet
        self._by_id: dict[str, list[Pending]] = {}  # the same by event id: answered by its record
        self._settled = asyncio.Event()  # set while nothing is in flight (a drain waits for it)
        self._settled.set()
        self._rid = 0
        self._out: dict[str, list[str]] = {}  # token -> lines to send it (requests "q[..]", answers "a[..]")
        self._flushing: dict[str, asyncio.Task[None]] = {}
        self._serving: deque[tuple[str, list[Any]]] = deque()
        self._server: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._runtime: Callable[[str], Awaitable[Any]] | None = None
        self._loaded: Callable[[str], Any] = lambda feed: None
        self.handed_off = 0  # publishes sent to another process
        self.served = 0      # publishes received from other processes
        self.rerouted = 0    # publishes sent again (sequencer changed, or an answer lost)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, runtime: Callable[[str], Awaitable[Target]], loaded: Callable[[str], Target | None]) -> None:
        self._runtime, self._loaded = runtime, loaded
        await self.bus.watch(self.channel)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="sequencer-leases")

    async def close(self) -> None:
        for task in (self._ticker, self._server, *self._flushing.values()):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for p in list(self.inflight.values()):
            fail(p.fut, Unavailable("the relay is stopping; retry"))
        self.inflight.clear()
        self._settled.set()
        try:  # a graceful stop hands the feeds over at once instead of after the lease lapses
            await asyncio.wait_for(self.leases.release_all(), 2.0)
        except (Unavailable, TimeoutError) as exc:
            log.debug("releasing sequencing leases failed: %r", exc)

    # -- publishing ---------------------------------------------------------------------------
    def sequencing(self, feed: str) -> bool:
        """Whether this process sequences ``feed`` now (its publishes go straight to the worker)."""
        return self.leases.holds(feed)

    def hand_off(self, rt: Target, event: Event, session_key: str | None, hops: int = 0) -> asyncio.Future[Answer]:
        """Sequence ``event`` wherever the feed's lease is (here once granted)."""
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._rid += 1
        self._route(Pending(self._rid, rt, event, session_key, fut, hops))
        return fut

    def _route(self, p: Pending) -> None:
        r = self.routes.get(p.rt.feed)
        if r is None:
            r = self.routes[p.rt.feed] = Route()
        if r.holder is not None and r.asking is None and not r.waiting:
            self._send(p, r.holder)
            return
        r.waiting.append(p)
        if r.asking is None:
            r.asking = asyncio.get_running_loop().create_task(self._ask(p.rt.feed, r))

    async def _ask(self, feed: str, r: Route) -> None:
        """Ask Redis who sequences ``feed`` (granting it to us if nobody does), then dispatch the
        publishes waiting for the answer, in order."""
        try:
            try:
                grant = await self.leases.acquire(feed)
            except Unavailable as exc:
                waiting, r.waiting = r.waiting, []
                for p in waiting:
                    fail(p.fut, exc)
                return
            # what was sent to a sequencer that is no longer the holder goes first, in order
            waiting, r.waiting = [*self._stale(feed, grant.holder), *r.waiting], []
            r.holder = grant.holder
            for p in waiting:
                if grant.holder is None:
                    self._local(p)
                else:
                    self._send(p, grant.holder)
        finally:
            r.asking = None

    def _local(self, p: Pending) -> None:
        """Sequence ``p`` here; if the append finds we were deposed meanwhile, route it again."""
        def done(f: asyncio.Future[Answer]) -> None:
            if p.fut.done():
                return
            if f.cancelled():
                p.fut.cancel()
            elif isinstance(exc := f.exception(), Deposed) and p.hops < MAX_HOPS:
                p.hops += 1
                self.rerouted += 1
                self._route(p)
            elif exc is not None:
                p.fut.set_exception(exc)
            else:
                p.fut.set_result(f.result())
        p.rt.enqueue(p.event, p.session_key).add_done_callback(done)

    def _send(self, p: Pending, to: str) -> None:
        if to == self.me:  # our own lease, as Redis last said: sequence here (the append checks it)
            self._local(p)
            return
        p.to, p.sent_at = to, time.monotonic()
        self.inflight[p.rid] = p
        self._by_id.setdefault(p.event.id, []).append(p)
        self._settled.clear()
        self.handed_off += 1
        self._queue(to, "q", [p.rid, p.hops, p.session_key, *event_row(p.event)])

    def _queue(self, to: str, kind: str, item: list[Any]) -> None:
        box = self._out.get(to)
        if box is None:
            box = self._out[to] = []
        box.append(kind + json.dumps(item, separators=(",", ":")))
        task = self._flushing.get(to)
        if task is None or task.done():
            self._flushing[to] = asyncio.get_running_loop().create_task(self._flush(to), name=f"handoff:{to[:8]}")

    async def _flush(self, to: str) -> None:
        """Send what is queued for ``to``, one message per round, in order."""
        await asyncio.sleep(0)  # the rest of this loop turn's publishes and answers go along
        while True:
            box = self._out.get(to)
            if not box:
                self._out.pop(to, None)
                return
            n = size = 0  # one message of at most MAX_MESSAGE bytes (and at least one line)
            while n < len(box) and (n == 0 or size + len(box[n]) <= MAX_MESSAGE):
                size += len(box[n]) + 1
                n += 1
            lines, self._out[to] = box[:n], box[n:]
            await self.bus.publish(SEQ_PREFIX + to, "\n".join((self.me, *lines)))

    # -- receiving ----------------------------------------------------------------------------
    def received(self, payload: str) -> None:
        """A message on our hand-off channel: requests to sequence, answers to our requests."""
        origin, *lines = payload.split("\n")
        for line in lines:
            try:
                item = json.loads(line[1:])
                if line[0] == "a":
                    rid, seq, *rest = item
                    self._answered(rid, seq, rest)
                elif line[0] == "q":
                    self._serving.append((origin, item))
            except (ValueError, KeyError, TypeError, IndexError):
                log.warning("ignoring a malformed hand-off line")
        if self._serving and (self._server is None or self._server.done()):
            self._server = asyncio.get_running_loop().create_task(self._serve(), name="sequencer-serve")

    def committed(self, rec: Record, line: str) -> None:
        """A record committed here (a listener of the hub): it answers the publishes of its
        event we handed off (the first stored, any other a duplicate of it)."""
        if not self._by_id:
            return
        waiting = self._by_id.get(rec.event.id)
        if waiting is None:
            return
        for i, p in enumerate(list(waiting)):
            self._untrack(p.rid)
            ok(p.fut, (rec.seq, i > 0))

    def _answered(self, rid: int, seq: int | None, rest: list[Any]) -> None:
        p = self._untrack(rid)
        if p is None:
            return  # answered already (sent twice), or given up
        if seq is not None:
            ok(p.fut, (seq, bool(rest[0])))
            return
        code, message = rest
        if code == MOVED and p.hops < MAX_HOPS:  # that process no longer sequences the feed: ask again
            r = self.routes.get(p.rt.feed)
            if r is not None and r.holder == p.to:
                r.holder = None
            p.hops += 1
            self.rerouted += 1
            self._route(p)
            return
        fail(p.fut, refusal("unavailable" if code == MOVED else code, message))

    async def _serve(self) -> None:
        """Queue the received requests on their feeds' workers, in the order they came."""
        while self._serving:
            origin, req = self._serving.popleft()
            rid, hops, session_key, *row = req
            feed = row[0]
            try:
                event = row_event(row)
                rt = self._loaded(feed)
                if rt is None and self._runtime is not None:
                    rt = await self._runtime(feed)
                if rt is None:
                    raise Unavailable("not started")
            except Exception as exc:  # any failure to load is the requester's answer
                log.debug("a hand-off to %s could not be served", feed, exc_info=True)
                self._answer(origin, rid, exc)
                continue
            self.served += 1
            if self.sequencing(feed):
                fut = rt.enqueue(event, session_key)
            elif hops >= MAX_HOPS:
                self._answer(origin, rid, Unavailable(f"nobody sequences {feed} right now; retry"))
                continue
            else:  # the requester's view of the holder was stale: hand it on (or take the lease)
                fut = self.hand_off(rt, event, session_key, hops + 1)
            fut.add_done_callback(lambda f, o=origin, i=rid: self._answer(o, i, f))

    def _answer(self, origin: str, rid: int, f: asyncio.Future[Answer] | BaseException) -> None:
        exc = f if isinstance(f, BaseException) else (
            Unavailable("cancelled") if f.cancelled() else f.exception())
        if exc is None:
            seq, dup = f.result()  # type: ignore[union-attr]
            if dup:  # stored now: the requester answers it when it commits the record (committed)
                self._queue(origin, "a", [rid, seq, dup])
            return
        if isinstance(exc, Deposed):
            code = MOVED
        elif isinstance(exc, ColonyError):
            code = exc.code
        else:
            log.warning("a handed-off publish failed: %r", exc, exc_info=exc)
            code = "unavailable"
        message = exc.message if isinstance(exc, RelayError) else str(exc)
        self._queue(origin, "a", [rid, None, code, message])

    # -- leases and unanswered requests -------------------------------------------------------
    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.leases.ttl / 4
        last_renew = 0.0
        while True:
            await asyncio.sleep(TICK)
            try:
                if loop.time() - last_renew >= renew_every - 0.01:
                    last_renew = loop.time()
                    await self.leases.renew()
                await self._check_inflight()
            except Unavailable as exc:  # Redis down: publishes say so already; try again
                log.debug("sequencer tick failed: %r", exc)
            except Exception:
                log.warning("sequencer tick failed; the next one retries", exc_info=True)

    async def _check_inflight(self) -> None:
        now = time.monotonic()
        stalled: dict[str, list[Pending]] = {}
        for p in list(self.inflight.values()):
            if now - p.t0 >= GIVE_UP:
                self._untrack(p.rid)
                fail(p.fut, Unavailable(f"the sequencer of {p.rt.feed} did not answer; retry"))
            elif now - p.sent_at >= STALL:
                stalled.setdefault(p.rt.feed, []).append(p)
        for feed, ps in stalled.items():
            grant = await self.leases.acquire(feed)
            r = self.routes.setdefault(feed, Route())
            r.holder = grant.holder
            if grant.holder == ps[0].to:  # its record may be stored, its message lost: read the log
                ps[0].rt.request_sync()
            again = [p for p in ps if grant.holder == p.to and now - p.sent_at >= RESEND and p.rid in self.inflight]
            for p in again:  # the sequencer still holds the feed: a message was lost, send again
                self._untrack(p.rid)
                self.rerouted += 1
            for p in sorted([*self._stale(feed, grant.holder), *again], key=lambda p: p.rid):
                if grant.holder is None:
                    self._local(p)
                else:
                    self._send(p, grant.holder)

    def _stale(self, feed: str, holder: str | None) -> list[Pending]:
        """Take back the publishes of ``feed`` in flight to another process than ``holder``
        (None: us), in the order they were handed off."""
        stale = sorted((p for p in self.inflight.values() if p.rt.feed == feed and p.to != holder),
                       key=lambda p: p.rid)
        for p in stale:
            self._untrack(p.rid)
            self.rerouted += 1
        return stale

    def _untrack(self, rid: int) -> Pending | None:
        p = self.inflight.pop(rid, None)
        if p is not None and (same := self._by_id.get(p.event.id)) is not None:
            same.remove(p)
            if not same:
                del self._by_id[p.event.id]
        if not self.inflight:
            self._settled.set()
        return p

    async def settled(self) -> None:
        """Return once every publish handed to another process was answered (a drain waits)."""
        await self._settled.wait()

    def awaits(self, feed: str) -> bool:
        """Whether a publish to ``feed`` we handed off waits for its record (the feed must stay
        loaded here: its records answer them)."""
        return any(p.rt.feed == feed for p in self.inflight.values())

    def forget(self, feed: str) -> None:
        """``feed`` was unloaded here: drop what we remembered of its sequencer."""
        r = self.routes.get(feed)
        if r is not None and not r.waiting and r.asking is None:
            del self.routes[feed]

    def health(self) -> dict[str, int]:
        return {"handed_off": self.handed_off, "served": self.served, "rerouted": self.rerouted,
                "awaiting_answers": len(self.inflight)}


__all__ = ["SEQ_PREFIX", "Sequencer", "Target"]
