"""The relay's part in coordination: the one runner of the namespaces' relay-side hooks.

The namespaces (``collab/namespaces``) are pure: they say what is admissible and what a log
means. Some outcomes need an actor with a clock and with authority over several feeds, and
that is the relay (docs/coordination.md). Each namespace that needs it registers a
:class:`relay.coordination.hooks.Plugin` (``relay/coordination/namespaces/``); this module
names none of them, it runs their hooks:

* **Openings.** A relay-owned feed (``ledger/``, ``vouch/``) is opened by the relay: its plug-in's
  ``opening`` event is sealed as seq 1 with the first event the feed accepts.
* **Gated publishes.** A publish of a kind some plug-in gates goes to that plug-in's ``gate``
  (the auction locks a bid's stake in the ledger, then sequences the bid).
* **Follow-ups.** After a record of a followed feed commits on its home relay, the plug-in's
  ``on_commit`` gets the states before and after it and publishes relay-signed events whose
  ``ts`` is the record's ``rtime`` and whose body is a function of the record, so they have
  deterministic ids: a second process of the same site, or a restart that replays them
  (``replay_on_start``), publishes the same event and gets a duplicate answer.
* **Timers.** Deadlines the plug-in reads from the state after every record (``timers``),
  fired as the relay-signed event ``on_timer`` returns.
* **Loads.** Whenever this process loads a followed feed (at start, for a client, for a timer
  of a feed it had unloaded) its timers are armed from the loaded state and the plug-in's
  ``on_load`` makes the follow-ups that state owes. On a Redis site every process that holds a
  feed runs its timers; a process that did not hold it when another died (its records never
  passed through here) takes them over as soon as anything loads the feed here.

Everything is done through ``Hub.publish`` with the relay's own key, so it goes through
the same validation as any agent's event.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from collab.errors import ColonyError
from collab.events import Event, Record, namespace_of, now_ms
from collab.feedcore import FeedCore

from relay.coordination.fence import publish_fenced
from relay.coordination.hooks import Plugin, Plugins, TrustSettings
from relay.coordination.namespaces import default_plugins
from relay.core.hub import Hub
from relay.core.worker import FeedRuntime

log = logging.getLogger(__name__)

#: locks kept for gated publishes before the idle ones are dropped
MAX_LOCKS = 10_000

__all__ = ["Coordinator", "TrustSettings"]


class Coordinator:
    """Runs beside the :class:`Hub`; ``start`` after the hub is up, ``close`` before it goes.

    ``plugins`` are the namespaces' relay-side hooks (default: the built-in ones); the
    coordinator is the :class:`relay.coordination.hooks.Context` every hook receives.
    """

    def __init__(self, hub: Hub, operators: tuple[str, ...] = (), trust: TrustSettings | None = None,
                 plugins: Plugins | None = None) -> None:
        self.hub = hub
        self.operators = tuple(sorted(set(operators)))
        self.trust = trust or TrustSettings()
        self.plugins = plugins if plugins is not None else default_plugins()
        self._states: dict[str, tuple[int, Any]] = {}  # feed -> (seq, state) as last seen
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._queue: asyncio.Queue[tuple[str, Record | None, Any, Any]] = asyncio.Queue()  # None: a load
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
        self.hub.loaded.append(self._on_load)
        self.hub.routes.register_gate(self.plugins.gated_kinds, self.gate)
        self.hub.routes.register_opening(self.opening)
        self.hub.routes.register_fence(self.fenced)
        self._worker = asyncio.get_running_loop().create_task(self._follow(), name="coordinator")
        for ns in self.plugins.followed_namespaces():
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
        if self._on_load in self.hub.loaded:
            self.hub.loaded.remove(self._on_load)
        self.hub.routes.unregister_gate()
        self.hub.routes.register_opening(None)
        self.hub.routes.register_fence(None)
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
        """Resume a feed after a start: replay its follow-ups if its plug-in asks (duplicates are
        harmless), re-arm its timers."""
        plugin = self.plugins.followed(feed)
        if plugin is None:
            return
        loaded = feed in self.hub.feeds
        rt = await self.hub.runtime(feed)
        if plugin.replay_on_start:
            await self._replay_follow_ups(rt, plugin)
        if loaded:  # (else loading it ran _on_load)
            self._on_load(rt)

    async def _replay_follow_ups(self, rt: FeedRuntime, plugin: Plugin) -> None:
        core = FeedCore(rt.feed, rt.ns, id_cache=0)
        since = 0
        while True:
            rows = await self.hub.storage.read(rt.feed, since, 1000)
            for row in rows:
                rec = Record.from_wire(json.loads(row.data), verify_sigs=False)
                before = core.state
                core.fold(rec)
                await plugin.on_commit(self, rec, before, core.state)
                since = row.seq
            if len(rows) < 1000:
                return

    # -- the hooks' context ----------------------------------------------------------------------
    async def publish(self, ev: Event) -> tuple[int, bool]:
        return await self.hub.publish(ev, self.relay)

    async def try_publish(self, ev: Event) -> None:
        try:
            await self.publish(ev)
        except ColonyError as exc:  # e.g. another process already moved it: the state says so
            log.info("coordinator: %s in %s refused: %s", ev.kind, ev.feed, exc)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= MAX_LOCKS:
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- gated publishes -----------------------------------------------------------------------
    async def gate(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Sequence ``event`` through the plug-in that gates its kind (a ledger lock first, ...)."""
        return await self.plugins.gate_for(event.kind).gate(self, event, session_key)

    async def fenced(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Check a fenced event's lease epoch, then gate or sequence it (relay.coordination.fence)."""
        return await publish_fenced(self, event, session_key)

    def opening(self, feed: str) -> Event | None:
        """The event the relay opens the relay-owned ``feed`` with (its plug-in's, if any)."""
        plugin = self.plugins.get(namespace_of(feed))
        return plugin.opening(self, feed) if plugin is not None else None

    # -- following records ------------------------------------------------------------------------
    def _on_record(self, rec: Record, _rjson: str) -> None:
        feed = rec.event.feed
        if self.plugins.followed(feed) is None or not self.hub.routing.is_home(feed):
            return  # a mirrored feed: its home relay runs its timers and follow-ups
        rt = self.hub.feeds.get(feed)
        if rt is None:
            return
        prev = self._states.get(feed)
        before = prev[1] if prev is not None and prev[0] == rec.seq - 1 else None
        self._states[feed] = (rec.seq, rt.state)
        self._queue.put_nowait((feed, rec, before, rt.state))

    def _on_load(self, rt: FeedRuntime) -> None:
        """This process loaded ``rt``: arm its timers, queue the plug-in's ``on_load``."""
        feed = rt.feed
        plugin = self.plugins.followed(feed)
        if plugin is None or not self.hub.routing.is_home(feed):
            return
        try:
            self._states[feed] = (rt.seq, rt.state)
            self._arm(feed, rt.state, plugin)
            self._queue.put_nowait((feed, None, None, rt.state))
        except Exception:  # never fail the load of a feed for its coordination
            log.exception("arming the timers of %s failed", feed)

    async def _follow(self) -> None:
        while True:
            feed, rec, before, after = await self._queue.get()
            try:
                plugin = self.plugins.followed(feed)
                if plugin is None:
                    continue
                if rec is None:
                    rt = self.hub.feeds.get(feed)
                    if rt is not None:
                        await plugin.on_load(self, rt)
                    continue
                if before is None and rec.seq > 1:
                    before = await self._state_at(feed, rec.seq - 1)
                elif before is None:
                    before = self.hub.registry.for_feed(feed).initial(feed)
                await plugin.on_commit(self, rec, before, after)
                self._arm(feed, after, plugin)
            except Exception:
                log.exception("coordinating %s#%d failed", feed, rec.seq if rec is not None else 0)

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

    # -- timers ----------------------------------------------------------------------------------
    def _arm(self, feed: str, state: Any, plugin: Plugin) -> None:
        for h in self._timers.pop(feed, []):
            h.cancel()
        due = list(plugin.timers(state))
        if not due:
            return
        loop = asyncio.get_running_loop()
        now = now_ms()
        handles = []
        for deadline, what in due:
            delay = max(0.0, (deadline - now) / 1000) + 0.002  # strictly after the deadline
            handles.append(loop.call_later(delay, self._fire, feed, deadline, what))
        self._timers[feed] = handles

    def _fire(self, feed: str, deadline: int, what: str) -> None:
        task = asyncio.get_running_loop().create_task(self._fire_async(feed, deadline, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire_async(self, feed: str, deadline: int, what: str) -> None:
        try:
            plugin = self.plugins.followed(feed)
            if plugin is None:
                return
            rt = await self.hub.runtime(feed)
            ev = await plugin.on_timer(self, rt, deadline, what)
            if ev is not None:
                await self.publish(ev)
        except ColonyError as exc:  # another process fired first, or the state moved on
            log.info("timer %s of %s: %s", what, feed, exc)
        except Exception:
            log.exception("timer %s of %s failed", what, feed)
