"""The relay's part in coordination: timers, cross-feed steps and relay-signed events.

The namespaces (``collab/namespaces``) are pure: they say what is admissible and what a log
means. Some outcomes need an actor with a clock and with authority over several feeds, and
that is the relay (docs/coordination.md):

* **Gated publishes.** A bid (or an auction's escrowed reward) must be covered by the
  ledger *before* it is sequenced: the coordinator locks the stake with a relay-signed
  ``ledger.lock``, then sequences the bid, and releases the lock if the bid is refused.
* **Follow-ups.** After an auction record commits, the ledger moves it implies (release,
  reward, slash) and the trust outcome (``vouch.outcome``) are published as relay-signed
  events whose ``ts`` is the record's ``rtime`` and whose body is a function of the record,
  so they have deterministic ids: a second process of the same site, or a restart that
  reconciles, publishes the same event and gets a duplicate answer.
* **Timers.** Bid deadlines (``auction.award``), result deadlines (``auction.expire``) and
  heartbeat windows (``task.stalled``), scheduled from the state after every record.

Everything is done through ``Hub.publish`` with the relay's own key, so it goes through
the same validation as any agent's event.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from collab.errors import ColonyError, InvalidEvent
from collab.events import Event, Record, namespace_of, now_ms
from collab.feedcore import FeedCore
from collab.namespaces.base import Admission

from relay.core.hub import Hub
from relay.core.worker import FeedRuntime

log = logging.getLogger(__name__)

#: kinds whose publish goes through :meth:`Coordinator.gate` (a ledger lock first)
GATED_KINDS = frozenset(("auction.bid", "auction.open", "ledger.grant"))
#: namespaces whose records the coordinator follows (timers, follow-ups)
FOLLOWED = ("auction", "task")
DEFAULT_LEDGER = "ledger/main"
DEFAULT_TRUST = "vouch/global"


@dataclass(frozen=True, slots=True)
class TrustSettings:
    pretrusted: frozenset[str] = frozenset()
    half_life_ms: int = 30 * 24 * 3600 * 1000


class Coordinator:
    """Runs beside the :class:`Hub`; ``start`` after the hub is up, ``close`` before it goes."""

    def __init__(self, hub: Hub, operators: tuple[str, ...] = (), trust: TrustSettings | None = None) -> None:
        self.hub = hub
        self.operators = tuple(sorted(set(operators)))
        self.trust = trust or TrustSettings()
        self._states: dict[str, tuple[int, Any]] = {}  # feed -> (seq, state) as last seen
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._queue: asyncio.Queue[tuple[str, Record, Any, Any]] = asyncio.Queue()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def relay(self) -> str:
        return self.hub.relay_key.public_hex

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("the coordinator is already running")
        self.hub.listeners.append(self._on_record)
        self.hub.routes.register_gate(GATED_KINDS, self.gate)
        self._worker = asyncio.get_running_loop().create_task(self._follow(), name="coordinator")
        for ns in FOLLOWED:
            for head in await self.hub.storage.feeds(ns + "/", 100_000):
                if not self.hub.routing.is_home(head.feed):
                    continue
                try:
                    await self._adopt(head.feed)
                except Exception:
                    log.exception("could not resume coordination of %s", head.feed)

    async def close(self) -> None:
        if self._on_record in self.hub.listeners:
            self.hub.listeners.remove(self._on_record)
        self.hub.routes.unregister_gate()
        for handles in self._timers.values():
            for h in handles:
                h.cancel()
        self._timers.clear()
        for t in [self._worker, *self._tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in [self._worker, *self._tasks] if t is not None), return_exceptions=True)
        self._worker = None

    async def _adopt(self, feed: str) -> None:
        """Resume a feed after a start: replay its follow-ups (duplicates are harmless), re-arm timers."""
        rt = await self.hub.runtime(feed)
        if namespace_of(feed) == "auction":
            await self._replay_follow_ups(rt)
        self._states[feed] = (rt.seq, rt.state)
        self._arm(feed, rt.state)

    async def _replay_follow_ups(self, rt: FeedRuntime) -> None:
        core = FeedCore(rt.feed, rt.ns, id_cache=0)
        since = 0
        while True:
            rows = await self.hub.storage.read(rt.feed, since, 1000)
            for row in rows:
                rec = Record.from_wire(json.loads(row.data), verify_sigs=False)
                before = core.state
                core.fold(rec)
                await self._follow_up(rt.feed, rec, before, core.state)
                since = row.seq
            if len(rows) < 1000:
                return

    # -- the ledger ----------------------------------------------------------------------------
    async def ensure_ledger(self, feed: str) -> None:
        """Open a ledger (relay-signed ``ledger.open`` with the configured operators) if new."""
        rt = await self.hub.runtime(feed)
        if rt.seq == 0:
            ev = Event.create(self.hub.relay_key, feed, "ledger.open", {"operators": list(self.operators)}, ts=0)
            await self._publish(ev)

    async def _publish(self, ev: Event) -> tuple[int, bool]:
        return await self.hub.publish(ev, self.relay)

    async def _try(self, ev: Event) -> None:
        try:
            await self._publish(ev)
        except ColonyError as exc:  # e.g. another process already moved it: the state says so
            log.info("coordinator: %s in %s refused: %s", ev.kind, ev.feed, exc)

    # -- gated publishes -----------------------------------------------------------------------
    async def gate(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Lock the stake (or reward escrow) in the ledger, then sequence the event. A grant
        first opens its ledger (ledgers are opened lazily, with the configured operators)."""
        if event.kind == "ledger.grant":
            await self.ensure_ledger(event.feed)
            return await self.hub.runtime_publish(event, session_key)
        rt = await self.hub.runtime(event.feed)
        if event.id in rt.ids:
            return rt.ids[event.id], True
        body = event.body if isinstance(event.body, dict) else {}
        rt.access.check_write(event, session_key, rt.seq + 1)
        rt.ns.validate(rt.state, event, Admission(now_ms(), self.relay))  # refuse early, lock nothing
        if event.kind == "auction.open":
            amount, ledger = body.get("reward", 0), body.get("ledger", DEFAULT_LEDGER)
        else:
            amount, ledger = body.get("stake", 0), getattr(rt.state, "ledger", DEFAULT_LEDGER)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return await rt.publish(event, session_key)  # nothing to lock (a zero stake or reward)
        lock = self._locks.setdefault((event.feed, event.author), asyncio.Lock())
        async with lock:
            if event.id in rt.ids:  # a retried copy that waited for the first one
                return rt.ids[event.id], True
            await self.ensure_ledger(ledger)
            ref = event.feed
            lock_ev = Event.create(self.hub.relay_key, ledger, "ledger.lock",
                                   {"key": event.author, "amount": amount, "ref": ref})
            await self._publish(lock_ev)  # InsufficientFunds goes back to the bidder as is
            try:
                return await rt.publish(event, session_key)
            except BaseException:
                release = Event.create(self.hub.relay_key, ledger, "ledger.release", {"key": event.author, "ref": ref})
                await self._try(release)
                raise
        if len(self._locks) > 10_000:
            for k in [k for k, v in self._locks.items() if not v.locked()]:
                del self._locks[k]

    # -- following records ------------------------------------------------------------------------
    def _on_record(self, rec: Record, _rjson: str) -> None:
        feed = rec.event.feed
        if namespace_of(feed) not in FOLLOWED or not self.hub.routing.is_home(feed):
            return  # a mirrored feed: its home relay runs its timers and follow-ups
        rt = self.hub.feeds.get(feed)
        if rt is None:
            return
        prev = self._states.get(feed)
        before = prev[1] if prev is not None and prev[0] == rec.seq - 1 else None
        self._states[feed] = (rec.seq, rt.state)
        self._queue.put_nowait((feed, rec, before, rt.state))

    async def _follow(self) -> None:
        while True:
            feed, rec, before, after = await self._queue.get()
            try:
                if before is None and rec.seq > 1:
                    before = await self._state_at(feed, rec.seq - 1)
                elif before is None:
                    before = self.hub.registry.for_feed(feed).initial(feed)
                await self._follow_up(feed, rec, before, after)
                self._arm(feed, after)
            except Exception:
                log.exception("coordinating %s#%d failed", feed, rec.seq)

    async def _state_at(self, feed: str, seq: int) -> Any:
        core = FeedCore(feed, self.hub.registry.for_feed(feed), id_cache=0)
        since = 0
        while since < seq:
            rows = await self.hub.storage.read(feed, since, min(1000, seq - since))
            if not rows:
                break
            for row in rows:
                core.fold(Record.from_wire(json.loads(row.data), verify_sigs=False))
                since = row.seq
        return core.state

    async def _follow_up(self, feed: str, rec: Record, before: Any, after: Any) -> None:
        if namespace_of(feed) != "auction":
            return
        from collab import auction

        ledger = getattr(after, "ledger", DEFAULT_LEDGER)
        for kind, body in auction.ledger_moves(before, after, rec):
            await self.ensure_ledger(ledger)
            await self._try(Event.create(self.hub.relay_key, ledger, kind, body, ts=rec.rtime))
        outcome = auction.outcome(before, after, rec)
        if outcome is not None:
            trust_feed = getattr(after, "trust", DEFAULT_TRUST)
            await self._try(Event.create(self.hub.relay_key, trust_feed, "vouch.outcome", outcome, ts=rec.rtime))

    # -- timers ----------------------------------------------------------------------------------
    def _arm(self, feed: str, state: Any) -> None:
        for h in self._timers.pop(feed, []):
            h.cancel()
        ns = namespace_of(feed)
        if ns == "auction":
            from collab import auction

            due = auction.timers(state)
        elif ns == "task":
            from collab.namespaces.task import stall_deadlines

            due = [(t, "stall:" + sub) for t, sub in stall_deadlines(state)]
        else:
            return
        loop = asyncio.get_running_loop()
        now = now_ms()
        handles = []
        for deadline, what in due:
            delay = max(0.0, (deadline - now) / 1000) + 0.002  # strictly after the deadline
            handles.append(loop.call_later(delay, self._fire, feed, deadline, what))
        if handles:
            self._timers[feed] = handles

    def _fire(self, feed: str, deadline: int, what: str) -> None:
        task = asyncio.get_running_loop().create_task(self._fire_async(feed, deadline, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire_async(self, feed: str, deadline: int, what: str) -> None:
        try:
            rt = await self.hub.runtime(feed)
            ev = await self._timer_event(rt, deadline, what)
            if ev is not None:
                await self._publish(ev)
        except ColonyError as exc:  # another process fired first, or the state moved on
            log.info("timer %s of %s: %s", what, feed, exc)
        except Exception:
            log.exception("timer %s of %s failed", what, feed)

    async def _timer_event(self, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        key = self.hub.relay_key
        if what == "award":
            from collab import auction, trust

            trust_feed = getattr(rt.state, "trust", DEFAULT_TRUST)
            trt = await self.hub.runtime(trust_feed)
            scores = trust.scores(trt.state, self.trust_params(), relay=self.relay)
            body = auction.award_body(rt.state, scores, trt.seq, max(deadline, now_ms()))
            return Event.create(key, rt.feed, "auction.award", body, ts=deadline)
        if what == "expire":
            from collab import auction

            if getattr(rt.state, "assignee", None) is None:
                return None
            return Event.create(key, rt.feed, "auction.expire", auction.expire_body(rt.state), ts=deadline)
        if what.startswith("stall:"):
            sub = what[len("stall:"):]
            st = rt.state.subs.get(sub)
            if st is None:
                return None
            return Event.create(key, rt.feed, "task.stalled",
                                {"sub": sub, "assignee": st.assignee, "last_seen": st.last_seen}, ts=deadline)
        raise InvalidEvent(f"unknown timer {what}")

    def trust_params(self) -> Any:
        from collab.trust import TrustParams

        return TrustParams(pretrusted=self.trust.pretrusted, half_life_ms=self.trust.half_life_ms)
