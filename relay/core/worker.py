"""The per-feed worker: a thin asyncio pump around :class:`collab.feedcore.FeedCore`.

Each loaded feed has one worker task that owns its core. It takes queued publishes in batches
(the core validates, authorizes and seals them; one durable append; then the core folds them
and says what to fan out), and serves new subscriptions *between* batches, so a subscriber
always starts from a committed head and never misses or duplicates a record. Records other
processes of the site appended arrive from the bus (``ingest``) or from storage (``sync``);
records of a feed another relay homes arrive from its mirror (``relay.core.mirrorstore``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from collab import frames
from collab.access import Access
from collab.errors import ColonyError, Unavailable
from collab.events import Event, Record, now_ms
from collab.feedcore import ID_CACHE, FeedCore, RecordListener, record_frame
from collab.feedcore_chain import link
from collab.keys import Keypair
from collab.namespaces import DocNamespace, Namespace
from collab.namespaces.doc import EnginePanic, quarantined_seqs
from collab.sandbox_supervisor import Sandbox, Verdict

from relay.core.config import Config
from relay.core.fanout import Fanout, Subscriber
from relay.core.limits import FeedQuota, TokenBucket
from relay.core.jobs import (Answer, Check, Ingest, Job, Publish, Recover, Subscribe, Sync, checked_then, fail,
                             joined_ingests, ok, signature_checked, within_rate, wire_seq)
from relay.core.mirrorstore import MirrorJob, store_mirrored
from relay.core.presence import Participants, PresenceStore
from relay.core.metrics import Metrics
from relay.core.sequencer import Sequencer
from relay.core.verifier import Verifier
from relay.core.vetting import Vetting
from relay.storage.base import HeadMoved, Storage, StoredSnapshot

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_BATCH_BYTES = 512 << 10  # a batch's events in signed bytes: validating, sealing and folding one
#                            stays a few ms on the event loop however large the events are
MAX_APPEND_ATTEMPTS = 16


class FeedRuntime:
    """One loaded feed: its core (head, namespace state, access, dedup), its subscribers, its jobs."""

    def __init__(self, feed: str, ns: Namespace[Any], storage: Storage, config: Config, metrics: Metrics,
                 relay_key: Keypair, presence: PresenceStore, listeners: Sequence[RecordListener] = (),
                 quota: FeedQuota | None = None, sandbox: Sandbox | None = None,
                 alarm: Callable[[dict[str, Any]], None] | None = None,
                 opener: Callable[[str], Event | None] | None = None, handoff: Sequencer | None = None,
                 signer: Verifier | None = None) -> None:
        self.feed, self.ns = feed, ns
        self.handoff = handoff  # a Redis site: publishes go to the process sequencing the feed
        self.signer = signer  # signs receipts off the event loop (relay.core.verifier; else the seal does)
        self._opener = opener  # a relay-owned feed's opening event (the namespace's plug-in), or None
        self.quota = quota  # feeds created per key (the hub's, shared by every feed); None: no quota
        lim = config.limits
        self.rate = TokenBucket(lim.events_per_sec_feed, lim.burst_feed)  # publishes to this feed
        self.max_bytes = lim.max_doc_bytes if ns.name == "doc" else None
        # Yjs updates are checked in the sandbox before anything folds them here (docs/design.md)
        self.sandbox = sandbox if isinstance(ns, DocNamespace) else None
        self._alarm = alarm
        self.vetting = None if self.sandbox is None else Vetting(feed, self.sandbox, metrics, alarm)
        self.storage, self.config, self.metrics, self.relay_key = storage, config, metrics, relay_key
        self._presence = presence
        self.listeners = listeners  # the hub's list: called with every committed record
        self.core = FeedCore(feed, ns, id_cache=ID_CACHE)
        self.fanout = Fanout(self.core, storage, config, metrics, relay_key, presence)
        self.snapshot_seq = 0
        self.last_active = time.monotonic()
        self._jobs: deque[Job] = deque()
        self._task: asyncio.Task[None] | None = None

    # -- the core's state, read by endpoints and the coordinator ---------------------------
    @property
    def seq(self) -> int:
        return self.core.seq

    @property
    def head(self) -> str:
        return self.core.head

    @property
    def state(self) -> Any:
        return self.core.state

    @property
    def access(self) -> Access:
        return self.core.access

    @property
    def ids(self) -> dict[str, int]:
        return self.core.ids

    @property
    def ids_complete(self) -> bool:
        return self.core.ids_complete

    @property
    def subs(self) -> dict[Subscriber, Any]:
        return self.fanout.subs

    @property
    def people(self) -> Participants:
        return self.fanout.people

    @property
    def base_seq(self) -> int:
        return self.fanout.base_seq

    @property
    def present(self) -> list[str]:
        return self.fanout.people.keys()

    @property
    def queued(self) -> int:
        """Jobs waiting for the worker (the ``feed_queue`` gauge)."""
        return len(self._jobs)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The worker task while it runs (the relay's drain waits for it)."""
        return self._task

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        storage, core = self.storage, self.core
        snap = await storage.load_snapshot(self.feed)
        base = await storage.load_base(self.feed)  # a compacted feed: records 1..base.seq are gone
        if base is not None:
            self.fanout.set_base(base.seq, frames.encode(
                {"t": "snapshot", "feed": self.feed, "snap": base.snap.to_wire()}))
            if snap is None or snap.seq < base.seq:
                core.restore(base.seq, base.snap.head, base.snap.state, base.meta)
                self.snapshot_seq = base.seq
                snap = None
        if snap is not None:
            core.restore(snap.seq, snap.head, snap.state, snap.meta)
            self.snapshot_seq = snap.seq
        if snap is not None and self.sandbox is not None:
            self.core.state.quarantined = quarantined_seqs(snap.meta)
        since = core.seq
        page = self.config.limits.max_backlog_page
        quarantined = False
        while True:
            rows = await storage.read(self.feed, since, page)
            recs = [Record.from_wire(json.loads(row.data), verify_sigs=False) for row in rows]
            bad = await self.vet_stored(recs) if self.sandbox is not None else {}
            for rec in recs:
                if rec.seq in bad:
                    self.skip(rec, bad[rec.seq])  # quarantined: in the chain, out of the fold
                    quarantined = True
                else:
                    core.fold(rec)
            if rows:
                since = rows[-1].seq
            if len(rows) < page:
                break
        core.trim_ids()
        if quarantined:  # the next load starts past the poison, with the same state
            await self.save_snapshot()

    # -- the Yjs sandbox (relay.core.vetting) ----------------------------------------------
    async def _vet(self, recs: Sequence[Record], full: bool = True) -> dict[int, Verdict]:
        return {} if self.vetting is None else await self.vetting.check(self.core.state, recs, full)

    async def vet_stored(self, recs: list[Record]) -> dict[int, Verdict]:
        """Stored records (from before the sandbox, or written around it): seq -> verdict of
        the doc updates to quarantine. Deterministic: each is checked on the state folded from
        the records before it that pass."""
        bad = await self._vet(recs)
        return {recs[i].seq: v for i, v in bad.items()}

    def skip(self, rec: Record, verdict: Verdict, line: str | None = None) -> None:
        """Quarantine a stored record: it stays in the chain (and goes to subscribers when
        ``line`` is given: they verify the chain; the Yjs room leaves it out), out of the fold;
        logged, counted, and a relay-signed alarm (``Hub.quarantine_alarm``)."""
        self.core.skip(rec)
        if line is not None:
            self.fanout.send_batch([record_frame(self.feed, line)])
        self.core.state.quarantined.append(rec.seq)
        if self.vetting is not None:
            self.vetting.quarantined(rec, verdict)

    # -- jobs ------------------------------------------------------------------------------
    def _kick(self) -> None:
        self.last_active = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._work(), name=f"feed:{self.feed}")

    def publish(self, event: Event, session_key: str | None, check: Check | None = None) -> Answer:
        """Sequence ``event`` here or where the feed is sequenced (relay.core.sequencer) once ``check`` passed."""
        if self.handoff is not None and not self.handoff.sequencing(self.feed):
            if check is not None:
                return asyncio.ensure_future(checked_then(check, self.handoff.hand_off, self, event, session_key))
            return self.handoff.hand_off(self, event, session_key)
        return self.enqueue(event, session_key, check)

    def enqueue(self, event: Event, session_key: str | None, check: Check | None = None) -> Answer:
        """Queue ``event`` for this worker to sequence (``check``: as :meth:`publish`)."""
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._jobs.append(Publish(event, session_key, fut, time.perf_counter(), check))
        self._kick()
        return fut

    def subscribe(self, sub: Subscriber, since: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append(Subscribe(sub, since, fut))
        self._kick()
        return fut

    def ingest(self, payload: str) -> None:
        """Records another process appended (from the bus); applied in order by the worker."""
        self._jobs.append(Ingest(payload))
        self._kick()

    def mirror(self, rec: Record, line: str) -> asyncio.Future[None]:
        """Store a record of a feed another relay homes, as received (docs/federation.md, Mirrors).
        Fails with :class:`relay.core.mirrorstore.MirrorConflict` unless it extends our head
        (or is stored already)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append(MirrorJob(rec, line, fut))
        self._kick()
        return fut

    def request_sync(self) -> None:
        """Catch up from storage (after a bus reconnect, or when a sweep saw a newer head)."""
        if not any(isinstance(j, Sync) for j in self._jobs):
            self._jobs.append(Sync())
            self._kick()

    def poisoned(self) -> None:
        """An encode of this feed's document panicked outside the worker (a ``/yjs`` sync):
        the worker recovers (:meth:`recover`) before its next job."""
        if not any(isinstance(j, Recover) for j in self._jobs):
            self._jobs.appendleft(Recover())
            self._kick()

    async def _work(self) -> None:
        jobs = self._jobs
        while jobs:
            job = jobs[0]
            if isinstance(job, Subscribe):
                jobs.popleft()
                try:
                    self.fanout.start(job.sub, job.since)
                except ColonyError as exc:
                    fail(job.fut, exc)
                except Exception as exc:
                    log.exception("subscribe to %s failed", self.feed)
                    fail(job.fut, exc)
                else:
                    ok(job.fut, None)
                continue
            if isinstance(job, Recover):
                jobs.popleft()
                await self.recover()
                continue
            if isinstance(job, (Ingest, Sync)):
                jobs.popleft()
                try:
                    if isinstance(job, Ingest):  # with the ones queued behind it: one batch to send
                        await self._ingest(joined_ingests(job, jobs))
                    else:
                        await self._sync()
                except Exception:
                    log.exception("catching %s up failed; the next record or sweep retries", self.feed)
                continue
            if isinstance(job, MirrorJob):
                mirrored: list[MirrorJob] = []
                while jobs and isinstance(jobs[0], MirrorJob) and len(mirrored) < MAX_BATCH:
                    mirrored.append(jobs.popleft())  # type: ignore[arg-type]  # jobs[0] was checked: a MirrorJob
                try:
                    await store_mirrored(self, mirrored)
                except Exception as exc:
                    log.warning("storing mirrored records of %s failed: %r", self.feed, exc, exc_info=True)
                    for m in mirrored:
                        fail(m.fut, exc)
                    if isinstance(exc, Unavailable):
                        await self._catch_up_quietly("a failed mirror store")
                continue
            batch: list[Publish] = []
            size = 0
            while jobs and isinstance(jobs[0], Publish) and len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
                p: Publish = jobs.popleft()  # type: ignore[assignment]  # jobs[0] was checked: a Publish
                batch.append(p)
                size += p.event.size
            try:
                batch = await signature_checked(batch)  # each publish's signature check, if under way
                await self._sequence(batch)
            except Exception as exc:
                if not isinstance(exc, ColonyError):
                    log.exception("sequencing %s failed", self.feed)
                    exc = Unavailable("could not store the event; retry")
                for p in batch:
                    fail(p.fut, exc)

    async def _ingest(self, payload: str) -> None:
        last = payload[payload.rfind("\n") + 1:]
        if 0 < wire_seq(last) <= self.core.seq:
            return  # our own batch coming back, or one we caught up with already: skip the parsing
        run: list[tuple[Record, str]] = []  # records extending the head: committed (and sent) as one batch
        seq, head = self.core.seq, self.core.head
        for line in payload.split("\n"):
            rec = Record.from_stored(json.loads(line))  # our own storage wrote it (a gap still syncs)
            how = link(seq, head, rec)
            if how == "old":
                continue  # ours, or already caught up
            if how != "next":  # a gap: pub/sub lost something; the log has it
                if run:
                    self.commit(run)
                await self._sync()
                return
            run.append((rec, line))
            seq, head = rec.seq, rec.hash
        if run:
            self.commit(run)

    async def _sync(self) -> None:
        page = self.config.limits.max_backlog_page
        core = self.core
        while True:
            rows = await self.storage.read(self.feed, core.seq, page)
            recs = [(Record.from_stored(json.loads(r.data)), r.data) for r in rows]
            if recs and core.link(recs[0][0]) != "next":
                raise RuntimeError(f"{self.feed}: stored record {recs[0][0].seq} does not link to our head")
            self.commit(recs)
            if len(rows) < page:
                return

    def commit(self, recs: list[tuple[Record, str]]) -> None:
        """Fold durable records into the core and send them to local subscribers."""
        done = self.core.commit(recs, self.listeners)
        self.fanout.send_committed(done.frames, done.cuts)

    async def take_moved(self, moved: HeadMoved) -> None:
        """Another process appended first: take its records (the refusal carries the first of
        them; read any others)."""
        if moved.records:
            await self._ingest("\n".join(moved.records))
        if self.core.seq < moved.actual:
            await self._sync()

    async def maybe_snapshot(self) -> None:
        if self.core.seq - self.snapshot_seq >= self.config.snapshot_every:
            await self.save_snapshot()

    def opening(self) -> Event:
        """The relay's event that opens this relay-owned feed: its plug-in's, else ``feed.policy``
        with the namespace's default policy; ``ts`` 0, so every process of a site makes the same."""
        ev = self._opener(self.feed) if self._opener is not None else None
        return ev or Event.create(self.relay_key, self.feed, "feed.policy", {"policy": self.ns.default_policy}, ts=0)

    async def _sequence(self, batch: list[Publish]) -> None:
        core = self.core
        batch = within_rate(batch, self.rate, self.relay_key.public_hex, self.feed)
        for _attempt in range(MAX_APPEND_ATTEMPTS):
            if not batch:
                return
            unknown = core.unknown_ids(p.event for p in batch)
            stored = await self.storage.lookup_ids(self.feed, unknown) if unknown else None
            # every record of the batch carries this rtime; deadlines are judged on it
            sealed = core.seal([(p.event, p.session_key) for p in batch], self.relay_key, now_ms(),
                               self.config.limits.max_event_bytes, stored, self.max_bytes,
                               self.opening() if core.seq == 0 and self.ns.relay_owned else None,
                               sign=self.signer is None)
            for i, answer in sealed.answers:
                if isinstance(answer, tuple):
                    ok(batch[i].fut, answer)
                else:
                    fail(batch[i].fut, answer)
            accepted = sealed.records
            if not accepted:
                return
            signing = self.signer.sign(sealed.receipts) if self.signer is not None else None
            # the whole document is encoded in the sandbox before the snapshot this batch brings
            full = core.seq + len(accepted) - self.snapshot_seq >= self.config.snapshot_every
            try:
                bad = await self._vet([r for _, r, _ in accepted], full)
            except EnginePanic:  # our own document is poisoned: find the stored culprit, then retry
                await self.recover()
                for i, _, _ in accepted:
                    fail(batch[i].fut, Unavailable("the document was checked again; retry"))
                return
            if bad and self.vetting is not None:  # refused by the engine: answer them, seal the rest again
                for j, verdict in bad.items():
                    i, rec, _ = accepted[j]
                    fail(batch[i].fut, self.vetting.refused(rec.event, verdict))
                batch = [batch[i] for j, (i, _, _) in enumerate(accepted) if j not in bad]
                continue
            if core.seq == 0 and self.quota is not None:  # the first record creates the feed
                refused = self.quota.refusal(accepted[0][1].event.author)
                if refused is not None:  # the rest of the batch needs the feed: refused with it
                    for i, _, _ in accepted:
                        fail(batch[i].fut, refused)
                    return
            if signing is not None:
                sealed.sign_with(await signing)
            lines = sealed.lines()  # with the relay's opening record first, if it opens the feed
            try:
                await self.storage.append(self.feed, core.seq, lines)
            except HeadMoved as moved:
                await self.take_moved(moved)  # then validate and seal again
                batch = [batch[i] for i, _, _ in accepted]
                continue  # no pause: the storage keeps it fair (Redis: a process that keeps losing gets a turn)
            except Unavailable as exc:
                log.warning("append to %s failed: %s", self.feed, exc)
                for i, _, _ in accepted:
                    fail(batch[i].fut, exc)
                await self._catch_up_quietly("a failed append")
                return
            self.commit(lines)
            metrics, t1 = self.metrics, time.perf_counter()
            metrics.events_in.inc(self.ns.name, n=len(accepted))
            for i, rec, _ in accepted:
                p = batch[i]
                metrics.publish_latency.observe(t1 - p.t0)
                ok(p.fut, (rec.seq, False))
            await self.maybe_snapshot()
            return
        for p in batch:
            fail(p.fut, Unavailable("the feed is too contended right now; retry"))

    async def recover(self) -> None:
        """The Yjs engine panicked encoding this feed's document in-process: an update that
        passed the sandbox's per-request check poisoned it. Reload the feed: loading vets every
        stored update since the snapshot in full, which quarantines the culprit."""
        log.error("the Yjs engine panicked encoding %s; reloading it (the culprit is quarantined)", self.feed)
        self.metrics.yjs_refused.inc("engine_panic")
        try:
            await self._reload()
        except Exception as exc:  # storage down: the next batch or snapshot finds out again
            log.warning("reloading %s failed: %r", self.feed, exc, exc_info=True)

    async def _catch_up_quietly(self, after: str) -> None:
        """After ``after`` (a failed append or mirror store): what storage holds past our head
        (an append that timed out may have been stored all the same) is folded and sent like any
        record from another process (``_sync``), so no subscriber skips a seq; with storage still
        down, the next batch finds out again."""
        try:
            await self._sync()
        except Exception as exc:
            log.warning("catching %s up after %s failed: %r", self.feed, after, exc, exc_info=True)

    async def _reload(self) -> None:
        """Rebuild the core from storage. Records the load folded past our old head (appended
        meanwhile) go to the listeners and subscribers as committed ones do: nobody skips a seq."""
        old = self.core.seq
        fresh = FeedRuntime(self.feed, self.ns, self.storage, self.config, self.metrics, self.relay_key,
                            self._presence, quota=self.quota, sandbox=self.sandbox, alarm=self._alarm,
                            opener=self._opener, handoff=self.handoff)
        await fresh.load()
        self.core.adopt(fresh.core)  # in place: the fanout holds this core
        self.fanout.set_base(fresh.fanout.base_seq, fresh.fanout.base_frame)
        while old < self.core.seq and (rows := await self.storage.read(self.feed, old, self.core.seq - old)):
            for row in rows:
                for listener in self.listeners:
                    listener(Record.from_wire(json.loads(row.data), verify_sigs=False), row.data)
            self.fanout.drop_unreadable()  # (the load folded any access change: privacy first)
            self.fanout.send_batch([record_frame(self.feed, row.data) for row in rows])
            old = rows[-1].seq

    # -- subscribers -----------------------------------------------------------------------
    def unsubscribe(self, sub: Subscriber) -> bool:
        gone = self.fanout.unsubscribe(sub)
        if gone:
            self.last_active = time.monotonic()
        return gone

    def on_notice(self, payload: str) -> None:
        self.fanout.people.on_notice(payload)

    # -- snapshots -------------------------------------------------------------------------
    async def save_snapshot(self) -> None:
        core = self.core
        try:
            data = self.ns.dump(core.state)
        except EnginePanic:
            await self.recover()
            return
        if data is None or core.seq == 0 or core.seq == self.snapshot_seq:
            return
        extra = {"quarantined": core.state.quarantined} if getattr(core.state, "quarantined", None) else {}
        meta = json.dumps({"access": core.access.to_json(), "bytes": core.bytes, **extra})
        seq = core.seq
        await self.storage.save_snapshot(StoredSnapshot(self.feed, seq, core.head, data, meta))
        self.snapshot_seq = seq

    @property
    def idle(self) -> bool:
        return not self.fanout.subs and not self._jobs and (self._task is None or self._task.done())
