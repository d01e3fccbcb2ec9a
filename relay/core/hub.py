"""The hub: every feed loaded in this relay process, and the one publish call.

The :class:`Hub` loads feeds lazily (one :class:`relay.core.worker.FeedRuntime` each), routes
publishes (``Hub.publish``: forward to the feed's home relay, pass the coordinator's gate, or
sequence here; the detours are registered on its :class:`relay.core.routes.PublishRoutes`),
takes records other processes appended from the bus, and unloads idle feeds.

What is loaded is bounded (docs/reliability.md, Cheap requests): at most
``Limits.max_loaded_feeds`` feeds; loading one more first unloads idle ones, least recently
active first, and refuses with :class:`collab.errors.Busy` when none is idle (each has
subscribers or queued work). A feed with no records is unloaded as soon as its last subscriber
leaves (nothing to snapshot), so anonymous sub/unsub or ``/yjs`` connects to random names
leave nothing behind.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from collab.access import Access
from collab.errors import BadSignature, Busy
from collab.events import BAD_SIGNATURE, Event
from collab.feedcore import RecordListener
from collab.keys import Keypair
from collab.namespaces import Registry
from collab.sandbox_supervisor import Sandbox

from relay.core.bus import Bus, LocalBus
from relay.core.config import Config
from relay.core.fanout import Subscriber
from relay.core.limits import FeedQuota
from relay.core.presence import PresenceStore
from relay.core.routes import PublishRoutes, fenced
from relay.core.sequencer import SEQ_PREFIX, Sequencer
from relay.core.verifier import Verifier
from relay.core.worker import FeedRuntime
from relay.core.routing import Member, Routing
from relay.core.watch import WATCH_FEED, Watches
from relay.core.metrics import Metrics
from relay.storage.base import Storage

log = logging.getLogger(__name__)

ALARM_FEED = "relay/alarms"  # the relay's own log of alarms (relay.federation.alarms, quarantines)


class Hub:
    """All loaded feeds of this relay process."""

    def __init__(self, storage: Storage, registry: Registry, relay_key: Keypair, config: Config,
                 bus: Bus | None = None, presence: PresenceStore | None = None,
                 routes: PublishRoutes | None = None, handoff: Sequencer | None = None) -> None:
        self.storage, self.registry, self.relay_key, self.config = storage, registry, relay_key, config
        self.bus: Bus = bus or LocalBus()
        self.presence: PresenceStore = presence or PresenceStore()
        self.routes = routes or PublishRoutes(Routing(Member(relay_key.public_hex, "")))
        self.feeds: dict[str, FeedRuntime] = {}
        self.handoff = handoff  # a Redis site: one process sequences each feed (relay.core.sequencer)
        self.metrics = Metrics()  # relay.endpoints.metrics: bumped by the feed workers and sessions
        self.sandbox = Sandbox(config.sandbox)  # the Yjs engine's child processes (started on first use)
        # signature checks (submit) and receipt signatures (the workers) off the event loop
        self.verifier = Verifier(config.verify_in_child, key=relay_key)
        self._loading: dict[str, asyncio.Future[FeedRuntime]] = {}
        self._early: dict[str, list[tuple[Event, str | None, asyncio.Future[tuple[int, bool]],
                                          asyncio.Future[bool] | None]]] = {}
        self._early_tasks: set[asyncio.Task[None]] = set()
        self.listeners: list[RecordListener] = []  # called with every record committed here
        self.loaded: list[Callable[[FeedRuntime], None]] = []  # called with every feed this process loads
        self._unwatching: set[asyncio.Task[None]] = set()
        self.quota = FeedQuota(config.limits, exempt=relay_key.public_hex)  # feeds created per key
        self._alarm_tasks: set[asyncio.Task[None]] = set()
        # watchers of feed-id prefixes (relay.core.watch): told of every record committed here
        self.watches = Watches(self.bus, self._access_of, lambda: storage.last_append)
        self.listeners.append(self.watches.on_record)
        if handoff is not None:  # a publish handed to another process is answered by its record
            self.listeners.append(handoff.committed)

    # -- the detours, read-only (register them on ``routes``) -------------------------------
    @property
    def routing(self) -> Routing:
        """Who homes each feed (the federation's routing once it registered)."""
        return self.routes.routing

    @property
    def gated_kinds(self) -> frozenset[str]:
        return self.routes.gated_kinds

    @property
    def draining(self) -> bool:
        """The relay is stopping: new publishes are refused (``Relay.drain``)."""
        return self.routes.draining

    def remote(self, feed: str) -> bool:
        """Whether another member of the federation homes ``feed`` (publishes are forwarded)."""
        return self.routes.remote(feed)

    async def peer_heads(self, peer_key: str, heads: list[dict[str, Any]]) -> None:
        """A federation peer sent its heads: compare them with ours (nothing without federation)."""
        if self.routes.peer_heads is not None:
            await self.routes.peer_heads(peer_key, heads)

    def known(self, event: Event) -> bool:
        """Whether ``event`` is already stored as far as this process knows without I/O (its feed
        is loaded and its recent ids hold it): a duplicate that costs its author nothing."""
        rt = self.feeds.get(event.feed)
        return rt is not None and event.id in rt.ids

    def opening(self, feed: str) -> Event | None:
        """The event the relay opens the relay-owned ``feed`` with, if its plug-in has one (the
        feed's worker seals it as seq 1 together with the first event it accepts there)."""
        make = self.routes.opening
        return make(feed) if make is not None else None

    def detours(self, event: Event) -> bool:
        """Whether :meth:`publish` forwards or gates ``event`` instead of sequencing it here
        directly (an endpoint may then hand it to the feed's worker itself)."""
        return self.routes.detours(event)

    # -- feeds -----------------------------------------------------------------------------
    async def runtime(self, feed: str) -> FeedRuntime:
        rt = self.feeds.get(feed)
        if rt is not None:
            return rt
        pending = self._loading.get(feed)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[FeedRuntime] = asyncio.get_running_loop().create_future()
        self._loading[feed] = fut
        try:
            await self._make_room()
            rt = FeedRuntime(feed, self.registry.for_feed(feed), self.storage, self.config, self.metrics,
                             self.relay_key, self.presence, self.listeners, quota=self.quota,
                             sandbox=self.sandbox, alarm=self.quarantine_alarm, opener=self.opening,
                             handoff=self.handoff, signer=self.verifier if self.config.verify_in_child else None)
            await self.bus.watch(feed)  # before loading: nothing appended meanwhile can slip by
            await rt.load()
            if self.presence.shared:  # participants on other processes: in the first list already
                try:
                    await rt.people.reconcile()
                except Exception as exc:  # best effort: the presence sweep reconciles again
                    log.debug("presence of %s not loaded: %r", feed, exc, exc_info=True)
            self.feeds[feed] = rt
            for on_load in self.loaded:
                on_load(rt)
            fut.set_result(rt)
            return rt
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._loading[feed]

    def on_bus(self, feed: str, payload: str) -> None:
        """Another process appended to ``feed`` (or sent a notice about it)."""
        if feed == WATCH_FEED:
            self.watches.received(payload)
            return
        if feed.startswith(SEQ_PREFIX):
            if self.handoff is not None:
                self.handoff.received(payload)
            return
        rt = self.feeds.get(feed)
        if rt is None:
            return
        if payload.startswith("{"):
            rt.ingest(payload)
        else:
            rt.on_notice(payload)

    def _access_of(self, feed: str) -> Access | None:
        rt = self.feeds.get(feed)
        return rt.access if rt is not None else None

    async def resync(self) -> None:
        for rt in list(self.feeds.values()):
            rt.request_sync()

    async def sweep_presence(self) -> None:
        """Refresh this process's participant entries and reconcile every watched feed."""
        await self.presence.refresh((feed, key) for feed, rt in self.feeds.items() for key in rt.people.local)
        for rt in list(self.feeds.values()):
            if rt.subs:
                await rt.people.reconcile()

    async def sweep_heads(self) -> int:
        """Anti-entropy: catch up every loaded feed whose stored head is ahead of ours."""
        behind = 0
        for feed, rt in list(self.feeds.items()):
            head = await self.storage.head(feed)
            if head is not None and head.seq > rt.seq:
                rt.request_sync()
                behind += 1
        return behind

    # -- publishing and subscribing ----------------------------------------------------------
    async def publish(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """THE publish call: forward if another relay homes the feed, check a fence, gate for
        gated kinds, else sequence here."""
        routes = self.routes
        if routes.forward is not None and not routes.routing.is_home(event.feed):
            return await routes.forward(event, session_key)
        if routes.fence is not None and fenced(event):
            return await routes.fence(event, session_key)
        return await self.publish_here(event, session_key)

    async def publish_here(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Gate or sequence ``event`` on this relay (after its fence, if any, was checked)."""
        routes = self.routes
        if routes.gate is not None and event.kind in routes.gated_kinds:
            return await routes.gate(event, session_key)
        return await self.runtime_publish(event, session_key)

    def submit(self, event: Event, session_key: str | None,
               signed: bytes | None = None) -> asyncio.Future[tuple[int, bool]]:
        """:meth:`publish` for endpoints that answer when the future resolves. An event of a
        loaded feed that takes no detour goes straight into its worker's queue (no task per
        event on the hot path); anything else runs :meth:`publish` as a task. Either way one
        connection's publishes to a feed are queued in the order they were submitted.
        ``signed``: the event's signing bytes when its signature is not checked yet
        (``Event.unverified``): the :attr:`verifier` checks it, and nothing is sequenced,
        forwarded or gated before it passes (else the publish is refused ``bad_signature``)."""
        check = self.verifier.check(event, signed) if signed is not None else None
        if self.routes.detours(event):
            return asyncio.ensure_future(self._publish_checked(event, session_key, check))
        feed = event.feed
        rt = self.feeds.get(feed)
        if rt is not None and feed not in self._early:
            return rt.publish(event, session_key, check)
        # The feed is not loaded yet: queue behind the publishes already waiting for it, so
        # the ones submitted after it loads cannot overtake them (a doc writer's later edits
        # would then wait for their dependencies).
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        early = self._early.get(feed)
        if early is None:
            early = self._early[feed] = []
            task = asyncio.ensure_future(self._publish_early(feed))
            self._early_tasks.add(task)
            task.add_done_callback(self._early_tasks.discard)
        early.append((event, session_key, fut, check))
        return fut

    async def _publish_checked(self, event: Event, session_key: str | None,
                               check: asyncio.Future[bool] | None) -> tuple[int, bool]:
        if check is not None and not await check:
            raise BadSignature(BAD_SIGNATURE)
        return await self.publish(event, session_key)

    async def _publish_early(self, feed: str) -> None:
        """Load ``feed``, then queue what was submitted meanwhile on its worker, in order."""
        try:
            rt = await self.runtime(feed)
        except BaseException as exc:
            for _, _, fut, _ in self._early.pop(feed, []):
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for event, session_key, fut, check in self._early.pop(feed, []):
            _chain(rt.publish(event, session_key, check), fut)

    async def runtime_publish(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Sequence ``event`` in its feed, bypassing the gate (the gate itself calls this)."""
        rt = await self.runtime(event.feed)
        return await rt.publish(event, session_key)

    async def subscribe(self, sub: Subscriber, feed: str, since: int) -> None:
        rt = await self.runtime(feed)
        routes = self.routes
        if routes.forward is not None and not routes.routing.is_home(feed) and routes.ensure_mirror is not None:
            await routes.ensure_mirror(feed)  # its records come from its home
        await rt.subscribe(sub, since)

    def unsubscribe(self, sub: Subscriber, feed: str) -> bool:
        rt = self.feeds.get(feed)
        if rt is None:
            return False
        gone = rt.unsubscribe(sub)
        self.release_if_empty(feed)  # nothing stored, nobody left: nothing worth keeping
        return gone

    def release_if_empty(self, feed: str) -> None:
        """Unload ``feed`` now if it has no records and nobody uses it (a refused or finished
        ``/yjs`` connection to a document nobody wrote)."""
        rt = self.feeds.get(feed)
        if rt is not None and rt.seq == 0 and self._idle(rt):
            self._drop(rt)

    def _idle(self, rt: FeedRuntime) -> bool:
        """Whether ``rt`` may be unloaded: idle, and no publish handed off for it waits for its
        record (it answers them: ``Sequencer.committed``)."""
        return rt.idle and (self.handoff is None or not self.handoff.awaits(rt.feed))

    # -- lifecycle -------------------------------------------------------------------------
    def _drop(self, rt: FeedRuntime) -> None:
        """Forget a loaded feed now (its snapshot, if any, is saved already); stop watching it
        on the bus unless it was loaded again meanwhile."""
        if self.feeds.get(rt.feed) is not rt:
            return
        del self.feeds[rt.feed]
        if self.handoff is not None:
            self.handoff.forget(rt.feed)
        rt.people.close()
        if self.bus.name == "local":
            return
        task = asyncio.get_running_loop().create_task(self._unwatch(rt.feed))
        self._unwatching.add(task)
        task.add_done_callback(self._unwatching.discard)

    async def _unwatch(self, feed: str) -> None:
        if feed in self.feeds or feed in self._loading:
            return  # loaded again before this ran: it watches (watch returned at once, still subscribed)
        try:
            await self.bus.unwatch(feed)
        except Exception:
            log.warning("unwatching %s failed", feed, exc_info=True)

    async def _unload(self, rt: FeedRuntime) -> bool:
        """Snapshot an idle feed and drop it; False if it got busy meanwhile."""
        if not self._idle(rt):
            return False
        await rt.save_snapshot()
        if not self._idle(rt) or self.feeds.get(rt.feed) is not rt:
            return False
        self._drop(rt)
        return True

    async def _make_room(self) -> None:
        """Called with the new feed in ``_loading``: unload idle feeds (least recently active
        first) until the loaded ones plus those loading fit ``max_loaded_feeds``."""
        cap = self.config.limits.max_loaded_feeds
        if len(self.feeds) + len(self._loading) <= cap:
            return
        for rt in sorted((rt for rt in self.feeds.values() if self._idle(rt)), key=lambda rt: rt.last_active):
            if await self._unload(rt):
                self.metrics.feeds_evicted.inc()
            if len(self.feeds) + len(self._loading) <= cap:
                return
        raise Busy(f"this relay holds {cap} feeds and none is idle; retry later")

    async def unload_idle(self) -> int:
        """Snapshot and drop feeds nobody used for a while; returns how many were dropped."""
        cutoff = time.monotonic() - self.config.idle_feed_seconds
        dropped = 0
        for rt in list(self.feeds.values()):
            if self._idle(rt) and rt.last_active < cutoff and await self._unload(rt):
                dropped += 1
        return dropped

    def quarantine_alarm(self, body: dict[str, Any]) -> None:
        """A stored record was left out of its feed's fold (the Yjs engine fails on it): a
        relay-signed ``alarm.quarantine`` in ``relay/alarms`` (docs/reliability.md)."""
        ev = Event.create(self.relay_key, ALARM_FEED, "alarm.quarantine", body)

        async def publish() -> None:
            try:
                await self.runtime_publish(ev, self.relay_key.public_hex)
            except Exception:
                log.exception("could not record the quarantine alarm of %s", body.get("feed"))

        task = asyncio.get_running_loop().create_task(publish(), name="quarantine-alarm")
        self._alarm_tasks.add(task)
        task.add_done_callback(self._alarm_tasks.discard)

    async def close(self) -> None:
        for alarm in list(self._alarm_tasks):
            await asyncio.wait({alarm}, timeout=5)
        for rt in list(self.feeds.values()):
            task = rt.task
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), 5)
                except Exception:
                    log.warning("feed %s did not drain before shutdown", rt.feed, exc_info=True)
            try:
                await rt.save_snapshot()
            except Exception:
                log.exception("snapshot of %s at shutdown failed", rt.feed)
        await self.watches.close()  # what the drained feeds committed is announced
        await self.sandbox.close()
        await self.verifier.close()


def _chain(src: asyncio.Future[tuple[int, bool]], dst: asyncio.Future[tuple[int, bool]]) -> None:
    """Settle ``dst`` as ``src`` settles."""
    def done(f: asyncio.Future[tuple[int, bool]]) -> None:
        if dst.done():
            return
        if f.cancelled():
            dst.cancel()
        elif f.exception() is not None:
            dst.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            dst.set_result(f.result())
    src.add_done_callback(done)
