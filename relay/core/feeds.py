"""Per-feed sequencing and fan-out.

Each loaded feed has one worker task that owns its state: it takes queued publishes in
batches (validate, authorize, seal records, one durable append, then ack and fan out) and
serves new subscriptions *between* batches, so a subscriber always starts from a committed
head and never misses or duplicates a record. The :class:`Hub` loads feeds lazily and keeps
the registry of loaded feeds.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from collab import frames
from collab.access import CONTROL_KINDS, Access, apply_access, validate_control
from collab.errors import ColonyError, InvalidEvent, TooLarge, Unauthorized, Unavailable
from collab.events import GENESIS, Event, Record, Snapshot, now_ms
from collab.keys import Keypair
from collab.namespaces import Namespace, Registry
from collab.namespaces.base import Admission

from relay.core.bus import Bus, LocalBus
from relay.core.config import Config
from relay.federation.routing import Member, Routing
from relay.ops.metrics import Metrics
from relay.core.presence import Participants, PresenceStore
from relay.storage.base import HeadMoved, Storage, StoredSnapshot
from relay.endpoints.wsdirect import SharedText

log = logging.getLogger(__name__)

ID_CACHE = 50_000
MAX_BATCH = 512
MAX_APPEND_ATTEMPTS = 16
SHARED_MAX_BYTES = 256 << 10  # a batch up to this size goes out as one message (the outbox's coalescing limit)


class Subscriber(Protocol):
    """What the hub needs of a connection: its key and two ways to hand it a frame."""

    key: str | None

    def deliver(self, frame: str) -> None:
        """Queue a frame without waiting; a connection that is too far behind closes itself."""

    async def deliver_wait(self, frame: str) -> None:
        """Queue a frame, waiting for room (used for backlogs, which must not be dropped)."""

    # Optional ``reads_any = True``: the subscriber does its own read checks for every client
    # behind it (the Yjs endpoint's room, whose clients read ``members`` feeds by capability).


@dataclass(slots=True)
class _Publish:
    event: Event
    session_key: str | None
    fut: asyncio.Future[tuple[int, bool]]
    t0: float = 0.0  # perf_counter() at enqueue (the publish -> ack latency metric)


@dataclass(slots=True)
class _Subscribe:
    sub: Subscriber
    since: int
    fut: asyncio.Future[None]


@dataclass(slots=True)
class _Ingest:
    payload: str


@dataclass(slots=True)
class _Sync:
    pass


@dataclass(slots=True)
class _Mirror:
    rec: Record  # sealed by the feed's home relay, verified by relay.federation.mirror
    line: str
    fut: asyncio.Future[None]


class MirrorConflict(ColonyError):
    """A mirrored record does not extend our head; ``stored`` is our record at its seq, if any."""

    def __init__(self, message: str, stored: str | None = None) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(slots=True)
class _SubState:
    key: str | None = None  # the key the subscriber had when it subscribed (its presence entry)
    live: bool = False
    buffer: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


RecordListener = Callable[[Record, str], None]


def record_frame(feed: str, record_json: str) -> str:
    return '{"t":"rec","feed":' + json.dumps(feed) + ',"rec":' + record_json + "}"


class FeedRuntime:
    """One loaded feed: committed head, namespace state, access state, subscribers."""

    def __init__(self, hub: Hub, feed: str, ns: Namespace[Any]) -> None:
        self.hub, self.feed, self.ns = hub, feed, ns
        self.seq = 0
        self.head = GENESIS
        self.state: Any = ns.initial(feed)
        fixed = ns.initial_access(feed)
        self.fixed_access = fixed is not None
        self.access = fixed or Access(policy=ns.default_policy)
        self.ids: dict[str, int] = {}
        self.ids_complete = True
        self.subs: dict[Subscriber, _SubState] = {}
        self.people = Participants(feed, hub.presence, self._broadcast)
        self.snapshot_seq = 0
        self.last_active = time.monotonic()
        self._jobs: deque[_Publish | _Subscribe | _Ingest | _Sync | _Mirror] = deque()
        self._task: asyncio.Task[None] | None = None
        self._snap_cache: tuple[int, str] | None = None
        self.base_seq = 0  # compacted (relay/ops/compact.py): records 1..base_seq are gone, base_frame stands for them
        self.base_frame = ""

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        storage = self.hub.storage
        snap = await storage.load_snapshot(self.feed)
        since = 0
        base = await storage.load_base(self.feed)  # a compacted feed: records 1..base.seq are gone
        if base is not None:
            self.base_seq, self.base_frame = base.seq, frames.encode(
                {"t": "snapshot", "feed": self.feed, "snap": base.snap.to_wire()})
            if snap is None or snap.seq < base.seq:
                self.state = self.ns.load(self.feed, base.snap.state)
                self.access = Access.from_json(json.loads(base.meta)["access"])
                self.seq, self.head, since = base.seq, base.snap.head, base.seq
                self.snapshot_seq = base.seq
                self.ids_complete = False
                snap = None
        if snap is not None:
            meta = json.loads(snap.meta)
            self.state = self.ns.load(self.feed, snap.state)
            self.access = Access.from_json(meta["access"])
            self.seq, self.head, since = snap.seq, snap.head, snap.seq
            self.snapshot_seq = snap.seq
            self.ids_complete = False
        page = self.hub.config.limits.max_backlog_page
        while True:
            rows = await storage.read(self.feed, since, page)
            for row in rows:
                rec = Record.from_wire(json.loads(row.data), verify_sigs=False)
                self._fold(rec)
                since = row.seq
            if len(rows) < page:
                break
        if len(self.ids) > ID_CACHE:
            self._trim_ids()

    def _fold(self, rec: Record) -> None:
        ev = rec.event
        self.access = apply_access(self.access, ev, rec.seq)
        if ev.kind not in CONTROL_KINDS:
            self.state = self.ns.apply(self.state, rec)
        self.seq, self.head = rec.seq, rec.hash
        self.ids[ev.id] = rec.seq

    def _trim_ids(self) -> None:
        excess = len(self.ids) - ID_CACHE
        for k in list(self.ids)[:excess]:
            del self.ids[k]
        self.ids_complete = False

    # -- jobs ------------------------------------------------------------------------------
    def _kick(self) -> None:
        self.last_active = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._work(), name=f"feed:{self.feed}")

    def publish(self, event: Event, session_key: str | None) -> asyncio.Future[tuple[int, bool]]:
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Publish(event, session_key, fut, time.perf_counter()))
        self._kick()
        return fut

    def subscribe(self, sub: Subscriber, since: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Subscribe(sub, since, fut))
        self._kick()
        return fut

    def ingest(self, payload: str) -> None:
        """Records another process appended (from the bus); applied in order by the worker."""
        self._jobs.append(_Ingest(payload))
        self._kick()

    def mirror(self, rec: Record, line: str) -> asyncio.Future[None]:
        """Store a record of a feed another relay homes, as received (docs/federation.md, Mirrors).
        Fails with :class:`MirrorConflict` unless it extends our head (or is stored already)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Mirror(rec, line, fut))
        self._kick()
        return fut

    def request_sync(self) -> None:
        """Catch up from storage (after a bus reconnect, or when a sweep saw a newer head)."""
        if not any(isinstance(j, _Sync) for j in self._jobs):
            self._jobs.append(_Sync())
            self._kick()

    async def _work(self) -> None:
        while self._jobs:
            job = self._jobs[0]
            if isinstance(job, _Subscribe):
                self._jobs.popleft()
                try:
                    self._start_subscription(job.sub, job.since)
                except ColonyError as exc:
                    _fail(job.fut, exc)
                except Exception as exc:
                    log.exception("subscribe to %s failed", self.feed)
                    _fail(job.fut, exc)
                else:
                    _ok(job.fut, None)
                continue
            if isinstance(job, (_Ingest, _Sync)):
                self._jobs.popleft()
                try:
                    if isinstance(job, _Ingest):
                        await self._ingest(job.payload)
                    else:
                        await self._sync()
                except Exception:
                    log.exception("catching %s up failed; the next record or sweep retries", self.feed)
                continue
            if isinstance(job, _Mirror):
                mirrored: list[_Mirror] = []
                while self._jobs and isinstance(self._jobs[0], _Mirror) and len(mirrored) < MAX_BATCH:
                    mirrored.append(self._jobs.popleft())  # type: ignore[arg-type]
                try:
                    await self._store_mirrored(mirrored)
                except Exception as exc:
                    log.warning("storing mirrored records of %s failed: %r", self.feed, exc, exc_info=True)
                    for m in mirrored:
                        _fail(m.fut, exc)
                    if isinstance(exc, Unavailable):
                        await self._reload_quietly()
                continue
            batch: list[_Publish] = []
            while self._jobs and isinstance(self._jobs[0], _Publish) and len(batch) < MAX_BATCH:
                batch.append(self._jobs.popleft())  # type: ignore[arg-type]
            try:
                await self._sequence(batch)
            except Exception as exc:
                if not isinstance(exc, ColonyError):
                    log.exception("sequencing %s failed", self.feed)
                    exc = Unavailable("could not store the event; retry")
                for p in batch:
                    _fail(p.fut, exc)

    async def _ingest(self, payload: str) -> None:
        last = payload[payload.rfind("\n") + 1:]
        if 0 < _wire_seq(last) <= self.seq:
            return  # our own batch coming back, or one we caught up with already: skip the parsing
        for line in payload.split("\n"):
            rec = Record.from_wire(json.loads(line), verify_sigs=False)  # our own storage wrote it
            if rec.seq <= self.seq:
                continue  # ours, or already caught up
            if rec.seq == self.seq + 1 and rec.prev == self.head:
                self._commit([(rec, line)])
            else:  # a gap: pub/sub lost something; the log has it
                await self._sync()
                return

    async def _sync(self) -> None:
        page = self.hub.config.limits.max_backlog_page
        while True:
            rows = await self.hub.storage.read(self.feed, self.seq, page)
            recs = [(Record.from_wire(json.loads(r.data), verify_sigs=False), r.data) for r in rows]
            if recs and recs[0][0].prev != self.head:
                raise RuntimeError(f"{self.feed}: stored record {recs[0][0].seq} does not link to our head")
            self._commit(recs)
            if len(rows) < page:
                return

    def _commit(self, recs: list[tuple[Record, str]]) -> None:
        """Fold durable records into the state and send them to local subscribers."""
        changed_acl = False
        parts: list[str] = []
        for rec, rjson in recs:
            self._fold(rec)
            changed_acl |= rec.event.kind in ("acl.revoke", "acl.grant")  # a grant may set read: false
            parts.append(record_frame(self.feed, rjson))
            for listener in self.hub.listeners:
                listener(rec, rjson)
        self._fan_out_batch(parts)
        if len(self.ids) > ID_CACHE:
            self._trim_ids()
        if changed_acl:
            self._drop_unreadable()

    async def _sequence(self, batch: list[_Publish]) -> None:
        for attempt in range(MAX_APPEND_ATTEMPTS):
            accepted = await self._seal(batch)
            if not accepted:
                return
            try:
                await self.hub.storage.append(self.feed, self.seq, [(r, j) for _, r, j in accepted])
            except HeadMoved as moved:
                # another process appended first: take its records (the refusal carries the first
                # of them; read any others), then validate and seal again
                if moved.records:
                    await self._ingest("\n".join(moved.records))
                if self.seq < moved.actual:
                    await self._sync()
                batch = [p for p, _, _ in accepted]
                continue  # no pause: the storage keeps it fair (Redis: a process that keeps losing gets a turn)
            except Unavailable as exc:
                log.warning("append to %s failed: %s", self.feed, exc)
                for p, _, _ in accepted:
                    _fail(p.fut, exc)
                await self._reload_quietly()
                return
            self._commit([(r, j) for _, r, j in accepted])
            metrics, t1 = self.hub.metrics, time.perf_counter()
            metrics.events_in.inc(self.ns.name, n=len(accepted))
            for p, rec, _ in accepted:
                metrics.publish_latency.observe(t1 - p.t0)
                _ok(p.fut, (rec.seq, False))
            if self.seq - self.snapshot_seq >= self.hub.config.snapshot_every:
                await self.save_snapshot()
            return
        for p in batch:
            _fail(p.fut, Unavailable("the feed is too contended right now; retry"))

    async def _store_mirrored(self, batch: list[_Mirror]) -> None:
        """Append the home's records verbatim (one append per batch), then commit as if sealed here."""
        for _ in range(MAX_APPEND_ATTEMPTS):
            todo: list[_Mirror] = []
            seq, head = self.seq, self.head
            for m in batch:
                r = m.rec
                if r.seq <= self.seq:  # another process of this site stored it first: the same one?
                    rows = await self.hub.storage.read(self.feed, r.seq - 1, 1)
                    row = rows[0] if rows and rows[0].seq == r.seq else None
                    if row is not None and row.hash == r.hash:
                        _ok(m.fut, None)
                    else:
                        stored = row.data if row else None
                        _fail(m.fut, MirrorConflict(f"{self.feed}#{r.seq} differs from ours", stored))
                elif r.seq == seq + 1 and r.prev == head:
                    todo.append(m)
                    seq, head = r.seq, r.hash
                else:
                    _fail(m.fut, MirrorConflict(f"{self.feed}#{r.seq} does not extend head {seq}"))
            if not todo:
                return
            try:
                await self.hub.storage.append(self.feed, self.seq, [(m.rec, m.line) for m in todo])
            except HeadMoved as moved:
                if moved.records:
                    await self._ingest("\n".join(moved.records))
                if self.seq < moved.actual:
                    await self._sync()
                batch = todo
                continue
            self._commit([(m.rec, m.line) for m in todo])
            for m in todo:
                _ok(m.fut, None)
            if self.seq - self.snapshot_seq >= self.hub.config.snapshot_every:
                await self.save_snapshot()
            return
        for m in batch:
            _fail(m.fut, Unavailable("the feed is too contended right now; retry"))

    async def _seal(self, batch: list[_Publish]) -> list[tuple[_Publish, Record, str]]:
        """Answer duplicates and refusals; seal the rest as the next records (not yet stored)."""
        unknown = [p.event.id for p in batch if p.event.id not in self.ids]
        stored = {} if self.ids_complete or not unknown else await self.hub.storage.lookup_ids(self.feed, unknown)
        seq, head, access, state = self.seq, self.head, self.access, self.state
        tentative = self.ns.immutable_state
        limits = self.hub.config.limits
        now = now_ms()  # every record of the batch carries this rtime; deadlines are judged on it
        adm = Admission(now, self.hub.relay_key.public_hex)
        accepted: list[tuple[_Publish, Record, str]] = []
        in_batch: dict[str, int] = {}
        for p in batch:
            ev = p.event
            known = self.ids.get(ev.id) or stored.get(ev.id) or in_batch.get(ev.id)
            if known:
                _ok(p.fut, (known, True))
                continue
            try:
                if ev.size > limits.max_event_bytes:
                    raise TooLarge(f"event is {ev.size} bytes; the limit is {limits.max_event_bytes}")
                access.check_write(ev, p.session_key, seq + 1)
                if ev.kind in CONTROL_KINDS:
                    if self.fixed_access:
                        raise InvalidEvent(f"{self.ns.name} feeds have fixed access; control kinds are refused")
                    validate_control(access, ev, seq + 1)
                else:
                    if self.ns.kinds and ev.kind not in self.ns.kinds:
                        raise InvalidEvent(f"{self.ns.name} feeds accept kinds {sorted(self.ns.kinds)}")
                    self.ns.validate(state, ev, adm)
            except ColonyError as exc:
                _fail(p.fut, exc)
                continue
            seq += 1
            rec = Record.seal(self.hub.relay_key, ev, seq, head, now)
            head = rec.hash
            access = apply_access(access, ev, seq)
            if tentative and ev.kind not in CONTROL_KINDS:
                state = self.ns.apply(state, rec)  # later events in this batch see this one
            in_batch[ev.id] = seq
            accepted.append((p, rec, frames.encode(rec.to_wire())))
        return accepted

    async def _reload_quietly(self) -> None:
        try:
            await self._reload()
        except Exception as exc:  # storage still down: the next batch will find out again
            log.warning("reloading %s after a failed append failed: %r", self.feed, exc, exc_info=True)

    async def _reload(self) -> None:
        fresh = FeedRuntime(self.hub, self.feed, self.ns)
        await fresh.load()
        self.seq, self.head, self.state, self.access = fresh.seq, fresh.head, fresh.state, fresh.access
        self.ids, self.ids_complete = fresh.ids, fresh.ids_complete
        self.base_seq, self.base_frame = fresh.base_seq, fresh.base_frame
        self._snap_cache = None

    # -- fan-out ---------------------------------------------------------------------------
    def _fan_out_batch(self, parts: list[str]) -> None:
        """Send one batch's record frames to every subscriber; connections that can take a
        shared message get it framed once for all (``relay.endpoints.wsdirect.SharedText``)."""
        if not parts:
            return
        if self.subs:
            self.hub.metrics.events_out.inc(self.ns.name, n=len(parts) * len(self.subs))
        shared = SharedText(parts) if len(parts) == 1 or sum(map(len, parts)) <= SHARED_MAX_BYTES else None
        for sub, st in self.subs.items():
            if not st.live:
                st.buffer.extend(parts)
            elif shared is not None and hasattr(sub, "deliver_shared"):
                sub.deliver_shared(shared)  # type: ignore[attr-defined]
            else:
                for frame in parts:
                    sub.deliver(frame)

    def _broadcast(self, frame: str) -> None:
        for sub, st in self.subs.items():
            if st.live:
                sub.deliver(frame)
            else:
                st.buffer.append(frame)

    def _start_subscription(self, sub: Subscriber, since: int) -> None:
        if not self.access.can_read(sub.key) and not getattr(sub, "reads_any", False):
            raise Unauthorized("this feed is members-only and your key may not read it")
        if sub in self.subs:
            raise InvalidEvent(f"already subscribed to {self.feed}")
        if sub.key is not None:
            self.people.add(sub.key)  # announced to the others before this one is listening
        st = _SubState(key=sub.key)
        self.subs[sub] = st
        dump_ok = self.ns.name == "doc" and not getattr(sub, "records_only", False)  # a mirror stores records
        head = self.seq
        if head > 0 and dump_ok and (since == 0 or since < self.base_seq
                                     or head - since > self.hub.config.snapshot_catchup):
            sub.deliver(self._snapshot_frame())
            self._go_live(sub, st, head, self.head)
        elif since < self.base_seq:  # the records it lacks are compacted: the base, then the tail
            sub.deliver(self.base_frame)
            st.task = asyncio.get_running_loop().create_task(self._catch_up(sub, st, self.base_seq, head))
        elif since >= head:
            self._go_live(sub, st, head, self.head)
        else:
            st.task = asyncio.get_running_loop().create_task(self._catch_up(sub, st, since, head))

    def _snapshot_frame(self) -> str:
        if self._snap_cache is None or self._snap_cache[0] != self.seq:
            state = self.ns.dump(self.state) or b""
            snap = Snapshot.seal(self.hub.relay_key, self.feed, self.seq, self.head, state)
            self._snap_cache = (self.seq, frames.encode({"t": "snapshot", "feed": self.feed, "snap": snap.to_wire()}))
        return self._snap_cache[1]

    def _go_live(self, sub: Subscriber, st: _SubState, seq: int, head: str) -> None:
        """Send the caught-up marker, then what arrived meanwhile, then the participant list."""
        sub.deliver(frames.encode({"t": "synced", "feed": self.feed, "seq": seq, "head": head}))
        for frame in st.buffer:
            sub.deliver(frame)
        st.buffer.clear()
        st.live = True
        sub.deliver(self.people.list_frame())

    async def _catch_up(self, sub: Subscriber, st: _SubState, since: int, head: int) -> None:
        page = self.hub.config.limits.max_backlog_page
        last_hash = ""
        try:
            while since < head:
                rows = await self.hub.storage.read(self.feed, since, min(page, head - since))
                if not rows:
                    break
                for row in rows:
                    await sub.deliver_wait(record_frame(self.feed, row.data))
                    since, last_hash = row.seq, row.hash
            if self.subs.get(sub) is st:
                self._go_live(sub, st, since, last_hash)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catch-up of a subscriber to %s failed", self.feed)
            self.unsubscribe(sub)
            sub.deliver(frames.encode({"t": "unsubbed", "feed": self.feed, "reason": "internal"}))

    def unsubscribe(self, sub: Subscriber) -> bool:
        st = self.subs.pop(sub, None)
        if st is None:
            return False
        if st.task is not None and not st.task.done():
            st.task.cancel()
        if st.key is not None:  # not sub.key: a hello after sub must not make a key leave it never joined
            self.people.remove(st.key)
        self.last_active = time.monotonic()
        return True

    def on_notice(self, payload: str) -> None:
        self.people.on_notice(payload)

    @property
    def present(self) -> list[str]:
        return self.people.keys()

    def _drop_unreadable(self) -> None:
        for sub in [s for s in self.subs if not self.access.can_read(s.key) and not getattr(s, "reads_any", False)]:
            self.unsubscribe(sub)
            sub.deliver(frames.encode({"t": "unsubbed", "feed": self.feed, "reason": "unauthorized"}))

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self) -> None:
        data = self.ns.dump(self.state)
        if data is None or self.seq == 0 or self.seq == self.snapshot_seq:
            return
        meta = json.dumps({"access": self.access.to_json()})
        seq = self.seq
        await self.hub.storage.save_snapshot(StoredSnapshot(self.feed, seq, self.head, data, meta))
        self.snapshot_seq = seq

    @property
    def idle(self) -> bool:
        return not self.subs and not self._jobs and (self._task is None or self._task.done())


class Hub:
    """All loaded feeds of this relay process."""

    def __init__(self, storage: Storage, registry: Registry, relay_key: Keypair, config: Config,
                 bus: Bus | None = None, presence: PresenceStore | None = None) -> None:
        self.storage, self.registry, self.relay_key, self.config = storage, registry, relay_key, config
        self.bus: Bus = bus or LocalBus()
        self.presence: PresenceStore = presence or PresenceStore()
        self.feeds: dict[str, FeedRuntime] = {}
        self.metrics = Metrics()  # relay.ops.metrics: bumped by the feed workers and sessions
        self._loading: dict[str, asyncio.Future[FeedRuntime]] = {}
        self.listeners: list[RecordListener] = []
        # publishes of these kinds go through ``gate`` (the coordinator: a ledger lock first)
        self.gated_kinds: frozenset[str] = frozenset()
        self.draining = False  # the relay is stopping: new publishes are refused (Relay.drain)
        self.gate: Callable[[Event, str | None], Awaitable[tuple[int, bool]]] | None = None
        # federation (relay.federation): who homes each feed, and how to reach a peer home
        self.routing: Routing = Routing(Member(relay_key.public_hex, ""))
        self.forward: Callable[[Event, str | None], Awaitable[tuple[int, bool]]] | None = None

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
            rt = FeedRuntime(self, feed, self.registry.for_feed(feed))
            await self.bus.watch(feed)  # before loading: nothing appended meanwhile can slip by
            await rt.load()
            if self.presence.shared:  # participants on other processes: in the first list already
                try:
                    await rt.people.reconcile()
                except Exception as exc:  # best effort: the presence sweep reconciles again
                    log.debug("presence of %s not loaded: %r", feed, exc, exc_info=True)
            self.feeds[feed] = rt
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
        rt = self.feeds.get(feed)
        if rt is None:
            return
        if payload.startswith("{"):
            rt.ingest(payload)
        else:
            rt.on_notice(payload)

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

    def remote(self, feed: str) -> bool:
        """Whether another member of the federation homes ``feed`` (publishes are forwarded)."""
        return self.forward is not None and not self.routing.is_home(feed)

    async def publish(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        if self.forward is not None and not self.routing.is_home(event.feed):
            return await self.forward(event, session_key)
        if self.gate is not None and event.kind in self.gated_kinds:
            return await self.gate(event, session_key)
        return await self.runtime_publish(event, session_key)

    async def runtime_publish(self, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Sequence ``event`` in its feed, bypassing the gate (the gate itself calls this)."""
        rt = await self.runtime(event.feed)
        return await rt.publish(event, session_key)

    async def subscribe(self, sub: Subscriber, feed: str, since: int) -> None:
        rt = await self.runtime(feed)
        if self.forward is not None and not self.routing.is_home(feed):
            await self.federation.ensure_mirror(feed)  # type: ignore[attr-defined]  # records come from its home
        await rt.subscribe(sub, since)

    def unsubscribe(self, sub: Subscriber, feed: str) -> bool:
        rt = self.feeds.get(feed)
        return rt.unsubscribe(sub) if rt is not None else False

    async def unload_idle(self) -> int:
        """Snapshot and drop feeds nobody used for a while; returns how many were dropped."""
        cutoff = time.monotonic() - self.config.idle_feed_seconds
        dropped = 0
        for feed, rt in list(self.feeds.items()):
            if rt.idle and rt.last_active < cutoff:
                await rt.save_snapshot()
                if rt.idle:
                    self.feeds.pop(feed, None)
                    await self.bus.unwatch(feed)
                    dropped += 1
        return dropped

    async def close(self) -> None:
        for rt in list(self.feeds.values()):
            if rt._task is not None and not rt._task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(rt._task), 5)
                except Exception:
                    log.warning("feed %s did not drain before shutdown", rt.feed, exc_info=True)
            try:
                await rt.save_snapshot()
            except Exception:
                log.exception("snapshot of %s at shutdown failed", rt.feed)


def _wire_seq(line: str) -> int:
    """The seq of a stored record line (``{"seq":N,...}``, as this relay writes them) without
    parsing the rest; -1 if it does not look like one (the caller then parses it in full)."""
    if not line.startswith('{"seq":'):
        return -1
    end = line.find(",", 7)
    digits = line[7:end]
    return int(digits) if end > 7 and digits.isascii() and digits.isdigit() else -1


def _ok(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
