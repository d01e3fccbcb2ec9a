"""Scale-out on Redis with real processes: several relay processes of one site share one
redis-server (a key prefix and a relay key), and clients talk to any of them.

Every test starts real ``redis-server`` processes on free ports (the session server of
``tests.conftest`` where nothing destructive happens to it, a private one otherwise) and real
relay processes (``colony serve --redis``) or, where a subprocess adds nothing, in-process
relays of the same site. Waiting is always on real state with a deadline, never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc as YDoc
from pycrdt import Text

from collab.client import Client
from collab.doc import Doc
from collab.events import Event, Record, Snapshot, b64
from collab.keys import Keypair
from collab.protocol import Ack
from collab.replay import fetch_records, replay
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.procs import RelayProc, start_relay_proc
from tests.rawclient import Raw
from tests.redis_server import RedisServer
from tests.wait import eventually

pytestmark = pytest.mark.timeout(90)


# -- helpers -------------------------------------------------------------------------------

async def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=timeout) as http:
        r = await http.get(url)
        return r.status_code, r.json()


async def feed_info(url: str, feed: str) -> dict[str, Any]:
    status, body = await get_json(f"{url}/feeds/{feed}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


class RecordingClient(Client):
    """A Client that remembers every acknowledgement it got: event id -> seq."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.acks: dict[str, int] = {}
        self.submitted: dict[str, Event] = {}

    def submit(self, event: Event) -> asyncio.Future[Ack]:
        fut = super().submit(event)
        self.submitted[event.id] = event
        fut.add_done_callback(self._record)
        return fut

    def _record(self, fut: asyncio.Future[Ack]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            ack = fut.result()
            self.acks[ack.id] = ack.seq


@dataclass
class Tape:
    """One subscriber's view of a feed: every record and snapshot in arrival order."""

    records: list[Record] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def on_record(self, rec: Record) -> None:
        self.records.append(rec)

    def on_snapshot(self, snap: Snapshot) -> None:
        self.snapshots.append(snap)

    def order(self) -> list[tuple[int, str, str]]:
        return [(r.seq, r.event.id, r.hash) for r in self.records]


class TapedDoc(Doc):
    """A Doc that also keeps a Tape of what its subscription delivered."""

    def __init__(self, client: Client, feed: str) -> None:
        super().__init__(client, feed, flush_timeout=30)
        self.tape = Tape()

    def _on_record(self, rec: Record) -> None:
        self.tape.on_record(rec)
        super()._on_record(rec)

    def _on_snapshot(self, snap: Snapshot) -> None:
        self.tape.on_snapshot(snap)
        super()._on_snapshot(snap)


def rotated(urls: Sequence[str], i: int) -> list[str]:
    """The site's URLs starting at process ``i`` (an agent's home process, then the others)."""
    i %= len(urls)
    return [*urls[i:], *urls[:i]]


def check_dense(records: Sequence[Record], n: int, who: str) -> None:
    seqs = [r.seq for r in records]
    assert seqs == list(range(1, n + 1)), f"{who}: not the dense order 1..{n} (gaps, duplicates or reordering)"
    assert len({r.event.id for r in records}) == n, f"{who}: an event was sequenced twice"
    for prev, rec in itertools.pairwise(records):
        assert rec.prev == prev.hash, f"{who}: chain broken at {rec.seq}"


async def verified_log(url: str, feed: str, n: int | None = None) -> tuple[list[Record], Any]:
    """The whole log of ``feed`` over HTTP, replayed and verified independently of the relay."""
    raw = await fetch_records(url, feed)
    result = replay(raw, feed=feed)
    assert result.verified, f"{feed} at {url}: {result.anomalies[:5]}"
    recs = [Record.from_wire(r) for r in raw]
    check_dense(recs, len(recs) if n is None else n, f"log of {feed} at {url}")
    return recs, result


async def raw_publish(raw: Raw, ev: Event, timeout: float = 10.0) -> dict[str, Any]:
    return await raw.request({"t": "pub", "event": ev.to_wire()}, ev.id[:24], timeout=timeout)


async def pipelined_flow(writer: Raw, key: Keypair, feed: str, stop: asyncio.Event, acked: dict[int, str],
                         refused: list[dict[str, Any]] | None = None, timeout: float = 10.0,
                         pause: float = 0.0) -> None:
    """Publish batches of five notes, pipelined, until ``stop`` (``pause`` s between batches: a
    pace, far from the per-key rate): each ``ok`` lands in ``acked`` (seq -> event id); a refusal
    is appended to ``refused`` (None: a refusal fails the test)."""
    n = 0
    while not stop.is_set():
        batch = [Event.create(key, feed, "note", {"n": n + k}) for k in range(5)]
        n += len(batch)
        for ev in batch:
            await writer.send({"t": "pub", "event": ev.to_wire(), "rid": ev.id})
        for ev in batch:
            reply = await writer.wait(lambda f, i=ev.id: f.get("rid") == i, timeout=timeout)
            if reply["t"] == "ok":
                acked[reply["seq"]] = ev.id
            else:
                assert refused is not None, reply
                refused.append(reply)
        if pause:
            await asyncio.sleep(pause)


@dataclass
class Site:
    """The relay processes of one site: one Redis key prefix and one shared relay key."""

    tmp: Path
    backend: Backend
    key: Keypair
    key_file: Path
    procs: list[RelayProc] = field(default_factory=list)

    async def start(self, n: int, *args: str) -> list[RelayProc]:
        base = len(self.procs)
        results = await asyncio.gather(
            *(start_relay_proc(self.tmp / f"proc{base + i}", "--relay-key", str(self.key_file), *args,
                               backend=self.backend, site="s") for i in range(n)),
            return_exceptions=True)
        started = [r for r in results if isinstance(r, RelayProc)]
        self.procs.extend(started)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return started

    async def stop_all(self) -> None:
        async def stop(p: RelayProc) -> None:
            with contextlib.suppress(ProcessLookupError):
                await p.stop()

        await asyncio.gather(*(stop(p) for p in self.procs), return_exceptions=True)


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[Callable[[str], Site]]:
    """Factory: ``make_site(redis_url)`` -> a Site (its processes are stopped at teardown)."""
    sites: list[Site] = []

    def make(redis_url: str) -> Site:
        key = Keypair.generate()
        n = len(sites)
        key_file = key.save(tmp_path / f"site{n}-relay.key")
        site = Site(tmp_path / f"site{n}", Backend("redis", redis_url, f"so{uuid.uuid4().hex[:10]}"), key, key_file)
        sites.append(site)
        return site

    yield make
    await asyncio.gather(*(s.stop_all() for s in sites))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it gets killed, restarted or has clients killed)."""
    srv = RedisServer.start(tmp_path / "redis", appendonly=True)
    yield srv
    srv.stop(graceful=False)


@contextlib.asynccontextmanager
async def in_process_site(tmp: Path, redis_url: str, n: int, **kw: Any) -> AsyncIterator[list[Running]]:
    """``n`` in-process relays of one site (same prefix, same relay key file)."""
    backend = Backend("redis", redis_url, f"so{uuid.uuid4().hex[:10]}")
    key_file = tmp / "site-relay.key"
    Keypair.generate().save(key_file)
    async with contextlib.AsyncExitStack() as stack:
        running = [await stack.enter_async_context(
            serving(make_config(tmp / f"relay{i}", backend, "s", relay_key_file=key_file, **kw))) for i in range(n)]
        yield running


# -- 1. many processes, one order ------------------------------------------------------------

async def test_three_processes_one_dense_order_and_converged_doc(redis_server: RedisServer,
                                                                 make_site: Callable[[str], Site]) -> None:
    site = make_site(redis_server.url)
    procs = await site.start(3, "--sync-interval", "0.5")
    urls = [p.url for p in procs]
    relay_hex = site.key.public_hex
    doc_feed, misc_feed = "doc/co", "misc/order"

    async with contextlib.AsyncExitStack() as stack:
        # a watcher on every process, subscribed before anything is written
        tapes: list[dict[str, Tape]] = []
        for url in urls:
            watcher = await stack.enter_async_context(Client(url, Keypair.generate(), relay_key=relay_hex))
            tape = {doc_feed: Tape(), misc_feed: Tape()}
            for feed, t in tape.items():
                sub = await watcher.subscribe(feed, on_record=t.on_record, on_snapshot=t.on_snapshot)
                await sub.wait_synced(10)
            tapes.append(tape)

        # nine agents, three per process, co-editing one doc
        clients = [await stack.enter_async_context(
            RecordingClient(rotated(urls, i), Keypair.generate(), relay_key=relay_hex)) for i in range(9)]
        assert [c.url for c in clients] == [urls[i % 3] for i in range(9)]
        docs = [await stack.enter_async_context(TapedDoc(c, doc_feed)) for c in clients]
        await asyncio.gather(*(d.synced(10) for d in docs))

        rng = random.Random(1)
        edits_per_agent = 25
        tokens: list[str] = []

        async def edit(i: int, doc: Doc) -> None:
            for j in range(edits_per_agent):
                token = f"<a{i}.{j}>"
                tokens.append(token)
                doc.text.insert(0 if rng.random() < 0.5 else len(doc.text), token)  # at a token boundary
                await asyncio.sleep(rng.uniform(0, 0.01))

        # and three writers hammering a generic feed through the three processes at once
        async def notes(client: RecordingClient, i: int) -> None:
            futs = [client.submit(client.create_event(misc_feed, "note", {"w": i, "n": n})) for n in range(100)]
            await asyncio.gather(*futs)

        await asyncio.gather(*(edit(i, d) for i, d in enumerate(docs)), *(notes(clients[i], i) for i in range(3)))
        await asyncio.gather(*(d.flushed(30) for d in docs))

        doc_acks = {i: s for c in clients for i, s in c.acks.items() if c.submitted[i].feed == doc_feed}
        misc_acks = {i: s for c in clients for i, s in c.acks.items() if c.submitted[i].feed == misc_feed}
        assert len(doc_acks) == 9 * edits_per_agent and len(misc_acks) == 300
        for acks in (doc_acks, misc_acks):
            assert sorted(acks.values()) == list(range(1, len(acks) + 1)), "acked seqs are not one dense order"
        n_doc, n_misc = len(doc_acks), len(misc_acks)

        # every subscriber on every process sees the same order: seq -> same event id, same record hash
        await eventually(lambda: all(len(t[doc_feed].records) >= n_doc and len(t[misc_feed].records) >= n_misc
                                     for t in tapes), 20, "every watcher to receive every record")
        await asyncio.gather(*(d.wait_seq(n_doc, 20) for d in docs))
        for feed, n, acks in ((doc_feed, n_doc, doc_acks), (misc_feed, n_misc, misc_acks)):
            reference = tapes[0][feed].order()
            for k, t in enumerate(tapes):
                assert not t[feed].snapshots
                check_dense(t[feed].records, n, f"watcher on process {k}, {feed}")
                assert t[feed].order() == reference, f"watcher on process {k} saw another order of {feed}"
                assert {r.relay for r in t[feed].records} == {relay_hex}
            assert {i: s for s, i, _ in reference} == acks, f"{feed}: acks disagree with the delivered order"
        for k, d in enumerate(docs):  # the agents' own subscriptions (live from seq 0) agree too
            assert d.tape.order() == tapes[0][doc_feed].order(), f"agent {k} saw another order"

        # the docs converged to one text holding every edit, as does every process's state
        texts = {str(d.text) for d in docs}
        assert len(texts) == 1, texts
        text = texts.pop()
        missing = [t for t in tokens if t not in text]
        assert not missing, f"{len(missing)} edits missing from the merged text, e.g. {missing[:3]}"
        assert len(text) == sum(map(len, tokens)), "an edit appears twice"
        for url in urls:
            info = await feed_info(url, doc_feed)
            assert info["seq"] == n_doc and info["state"]["text"] == text

        # the stored chain verifies independently, and every process serves the same log
        logs = []
        for url in urls:
            recs, result = await verified_log(url, doc_feed, n_doc)
            assert result.view()["text"] == text
            misc_recs, _ = await verified_log(url, misc_feed, n_misc)
            logs.append(([(r.seq, r.event.id, r.hash) for r in recs], [(r.seq, r.event.id, r.hash) for r in misc_recs]))
        assert all(log == (tapes[0][doc_feed].order(), tapes[0][misc_feed].order()) for log in logs)


# -- 2. lost pub/sub messages --------------------------------------------------------------

async def test_pubsub_connection_killed_during_flow_subscribers_miss_nothing(
        private_redis: RedisServer, make_site: Callable[[str], Site]) -> None:
    site = make_site(private_redis.url)
    # anti-entropy effectively off (the sweep runs every min(sync interval, presence TTL / 3)):
    # the repair must come from gap detection and the resync after a bus reconnect
    writer_proc, reader_proc = await site.start(2, "--sync-interval", "600", "--presence-ttl", "1800")
    feed = "misc/flow"
    keys = [Keypair.generate() for _ in range(4)]  # authors take turns: far from the per-key rate limit

    readers = [await Raw.connect(reader_proc.ws_url, Keypair.generate()) for _ in range(2)]
    writers = [await Raw.connect(writer_proc.ws_url, k) for k in keys]
    tape = Tape()
    watcher: Client | None = None
    try:
        for r in readers:
            await r.send({"t": "sub", "feed": feed, "since": 0})
            await r.wait(lambda f: f["t"] == "synced")
        watcher = Client(reader_proc.url, Keypair.generate(), relay_key=site.key.public_hex, reconnect=False)
        await watcher.__aenter__()
        await (await watcher.subscribe(feed, on_record=tape.on_record)).wait_synced(10)

        acked: dict[int, str] = {}
        stop = asyncio.Event()

        async def delivered_to_all(seq: int) -> bool:
            return all(any(f["t"] == "rec" and f["rec"]["seq"] >= seq for f in r.frames) for r in readers) \
                and bool(tape.records) and tape.records[-1].seq >= seq

        async def bus_connections() -> int:  # relays' pub/sub connections subscribed to a channel
            out = await asyncio.to_thread(private_redis.cli, "CLIENT", "LIST", "TYPE", "pubsub")
            # the feed's channel and the relay's hand-off channel (relay.core.sequencer)
            return sum(1 for line in out.splitlines() if " sub=2 " in line)

        flowing = asyncio.gather(*(pipelined_flow(w, k, feed, stop, acked, pause=0.01)
                                   for w, k in zip(writers, keys, strict=True)))
        kills = 8
        try:
            await eventually(lambda: len(acked) >= 30, 20, "the flow to start")
            for _ in range(kills):
                # both relays are subscribed again (so this kill really cuts them), records flowing
                await eventually(lambda: _eq(bus_connections(), 2), 10, "both relays to resubscribe")
                out = await asyncio.to_thread(private_redis.cli, "CLIENT", "KILL", "TYPE", "pubsub")
                assert out.strip() == "2", f"CLIENT KILL TYPE pubsub killed {out.strip()!r} connections, not 2"
                mark = max(acked)
                # records keep being appended while the reader's relay is cut off: their messages are lost
                await eventually(lambda m=mark: max(acked) >= m + 15, 20, "more records acked after a kill")
            # the flow continues; a record acked after the last kill reaches every subscriber
            mark = max(acked) + 10
            await eventually(lambda: delivered_to_all(mark), 20, "the flow to reach the subscribers again")
        finally:
            stop.set()
            await flowing
        # the flow has stopped: a record appended while the reader's relay is cut off has no
        # successor to reveal the gap, so only the resync after the bus reconnects can deliver it
        await eventually(lambda: _eq(bus_connections(), 2), 10, "both relays to resubscribe")
        assert (await asyncio.to_thread(private_redis.cli, "CLIENT", "KILL", "TYPE", "pubsub")).strip() == "2"
        kills += 1
        last = Event.create(keys[0], feed, "note", {"last": True})
        reply = await raw_publish(writers[0], last)
        assert reply["t"] == "ok", reply
        acked[reply["seq"]] = last.id
        n = max(acked)
        assert sorted(acked) == list(range(1, n + 1))
        await eventually(lambda: delivered_to_all(n), 10, "every acked record at every subscriber")

        for k, r in enumerate(readers):
            recs = [f["rec"] for f in r.frames if f["t"] == "rec"]
            assert [x["seq"] for x in recs] == list(range(1, n + 1)), f"reader {k}: gaps, duplicates or reordering"
            assert [x["event"]["id"] for x in recs] == [acked[s] for s in range(1, n + 1)]
            assert not [f for f in r.frames if f["t"] in ("error", "unsubbed")]
            check_dense([Record.from_wire(x) for x in recs], n, f"reader {k}")
        check_dense(tape.records, n, "client subscription")
        assert watcher.connected and watcher.reconnects == 0, "the subscriber's own connection was never cut"
        await verified_log(writer_proc.url, feed, n)
        # the reader's relay noticed every cut itself (reconnected, then resynced): see /health
        status, health = await get_json(f"{reader_proc.url}/health")
        assert status == 200 and health["bus"]["connected"] and health["bus"]["reconnects"] == kills, health
    finally:
        if watcher is not None:
            await watcher.aclose()
        for r in (*readers, *writers):
            await r.close()


async def test_a_redis_stall_never_leaves_a_gap_for_a_live_subscriber(
        private_redis: RedisServer, make_site: Callable[[str], Site]) -> None:
    """Redis paused (SIGSTOP) under load from writers on both processes until appends in flight
    fail with ``unavailable`` (the storage's 5 s socket timeout). An append that
    timed out may be stored all the same; the process that saw it fail used to reload the feed
    from storage, which moved its head past those records without sending them: its live
    subscribers skipped seqs (issue 13, item 8; 5 runs of 5 before the fix). Now it catches up
    like any process does, and every subscriber on either process gets every seq once, in order."""
    site = make_site(private_redis.url)
    one, two = await site.start(2)
    feed = "misc/stall"
    keys = [Keypair.generate() for _ in range(8)]
    readers = [await Raw.connect(p.ws_url, Keypair.generate()) for p in (one, two, one)]
    writers = [await Raw.connect((one if i % 2 else two).ws_url, k) for i, k in enumerate(keys)]
    acked: dict[int, str] = {}
    refused: list[dict[str, Any]] = []
    stop = asyncio.Event()

    try:
        for r in readers:
            await r.send({"t": "sub", "feed": feed, "since": 0})
            await r.wait(lambda f: f["t"] == "synced")
        flowing = asyncio.gather(*(pipelined_flow(w, k, feed, stop, acked, refused, timeout=30)
                                   for w, k in zip(writers, keys, strict=True)))
        try:
            await eventually(lambda: len(acked) >= 100, 20, "the flow to start")
            assert private_redis.proc is not None
            os.kill(private_redis.proc.pid, signal.SIGSTOP)
            try:
                mark = len(acked)
                # paused until appends in flight time out (the storage's 5 s socket timeout)
                await eventually(lambda: bool(refused), 20, "a publish to be refused while Redis is paused")
            finally:
                os.kill(private_redis.proc.pid, signal.SIGCONT)
            assert len(acked) - mark < 40, "publishes went on being acked while Redis was paused"
            top = max(acked) + 100
            await eventually(lambda: max(acked) >= top, 60, "the flow to go on after the stall")
        finally:
            stop.set()
            await flowing
        assert refused and {f["code"] for f in refused} == {"unavailable"}, refused[:3]
        n = max(acked)
        await eventually(lambda: all(any(f["t"] == "rec" and f["rec"]["seq"] >= n for f in r.frames)
                                     for r in readers), 20, "the last record at every subscriber")
        for k, r in enumerate(readers):
            seqs = [f["rec"]["seq"] for f in r.frames if f["t"] == "rec"]
            assert seqs == list(range(1, n + 1)), (k, "missing", sorted(set(range(1, n + 1)) - set(seqs))[:10])
            assert all(f["rec"]["event"]["id"] == acked[f["rec"]["seq"]] for f in r.frames
                       if f["t"] == "rec" and f["rec"]["seq"] in acked)
        await verified_log(one.url, feed, n)
    finally:
        for r in (*readers, *writers):
            await r.close()


async def test_during_a_redis_stall_publishes_fail_fast_and_health_answers(
        private_redis: RedisServer, make_site: Callable[[str], Site]) -> None:
    """Redis paused: a publish is answered ``unavailable`` after ``storage_timeout`` (1 s here, 5 s
    by default, advertised at /limits), not after the stall; ``/health`` answers within a second
    and says storage is down; once Redis resumes both recover (issue 13, item 8)."""
    site = make_site(private_redis.url)
    [proc] = await site.start(1, "--storage-timeout", "1")
    key = Keypair.generate()
    raw = await Raw.connect(proc.ws_url, key)
    try:
        assert (await raw_publish(raw, Event.create(key, "misc/fast", "note", {"n": 0})))["t"] == "ok"
        status, limits = await get_json(f"{proc.url}/limits")
        assert status == 200 and limits["storage_timeout"] == 1.0
        assert private_redis.proc is not None
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reply = await raw_publish(raw, Event.create(key, "misc/fast", "note", {"n": 1}), timeout=10)
            waited = loop.time() - t0
            assert reply["t"] == "error" and reply["code"] == "unavailable", reply
            assert waited < 3.0, f"a publish waited {waited:.1f} s for a paused Redis (storage_timeout 1 s)"
            t0 = loop.time()
            async with httpx.AsyncClient() as http:
                resp = await http.get(f"{proc.url}/health", timeout=5)
            assert loop.time() - t0 < 1.0, "/health took a second or more while Redis was paused"
            body = resp.json()
            assert resp.status_code == 503 and not body["ok"], body
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)

        async def healthy() -> bool:
            return (await get_json(f"{proc.url}/health"))[0] == 200

        await eventually(healthy, 20, "/health to report storage back")
        assert (await raw_publish(raw, Event.create(key, "misc/fast", "note", {"n": 2})))["t"] == "ok"
    finally:
        await raw.close()


# -- 3. a process dies, its agents move -----------------------------------------------------

async def test_sigkilled_process_agents_fail_over_and_nothing_acked_is_lost(
        redis_server: RedisServer, make_site: Callable[[str], Site]) -> None:
    site = make_site(redis_server.url)
    procs = await site.start(3, "--sync-interval", "0.5")
    urls = [p.url for p in procs]
    victim = procs[0]
    feed = "doc/failover"
    relay_hex = site.key.public_hex

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            RecordingClient(rotated(urls, i), Keypair.generate(), relay_key=relay_hex, backoff_max=1.0))
            for i in range(6)]
        on_victim = [c for c in clients if c.url == victim.url]
        assert len(on_victim) == 2
        docs = [await stack.enter_async_context(TapedDoc(c, feed)) for c in clients]
        await asyncio.gather(*(d.synced(10) for d in docs))

        tokens: list[str] = []
        stop = asyncio.Event()
        rng = random.Random(3)

        async def edit(i: int, doc: Doc) -> None:
            j = 0
            while not stop.is_set():
                token = f"<f{i}.{j}>"
                tokens.append(token)
                doc.text.insert(0 if rng.random() < 0.5 else len(doc.text), token)
                j += 1
                await asyncio.sleep(rng.uniform(0.002, 0.02))

        editing = [asyncio.create_task(edit(i, d)) for i, d in enumerate(docs)]
        try:
            await eventually(lambda: all(len(c.acks) >= 10 for c in clients), 20, "every agent to get acks")
            before = {id(c): len(c.acks) for c in on_victim}
            victim.kill9()  # under load: edits in flight on its connections
            await victim.proc.wait()
            # the victim's agents reconnect to another process of the site and their edits land there
            await eventually(lambda: all(c.connected and c.url != victim.url and len(c.acks) >= before[id(c)] + 10
                                         for c in on_victim), 20, "the victim's agents to fail over")
        finally:
            stop.set()
            await asyncio.gather(*editing)
        await asyncio.gather(*(d.flushed(30) for d in docs))  # every edit, also those in flight, acked

        acked = {i: s for c in clients for i, s in c.acks.items()}
        assert len(acked) == len(tokens), "every edit was acknowledged (the outbox resent what was in flight)"
        n = max(acked.values())
        alive = urls[1:]
        await asyncio.gather(*(d.wait_seq(n, 20) for d in docs))

        recs, result = await verified_log(alive[0], feed)
        assert len(recs) == n == len(acked), "the log holds exactly the acknowledged edits, once each"
        stored = {r.event.id: r.seq for r in recs}
        missing = [i for i in acked if i not in stored]
        assert not missing, f"{len(missing)} acknowledged edits are missing from the log"
        assert all(stored[i] == s for i, s in acked.items()), "an acked edit is stored at another seq"

        texts = {str(d.text) for d in docs}
        assert len(texts) == 1, "the docs did not converge"
        text = texts.pop()
        assert all(t in text for t in tokens) and len(text) == sum(map(len, tokens))
        assert result.view()["text"] == text
        for url in alive:
            info = await feed_info(url, feed)
            assert info["seq"] == n and info["state"]["text"] == text
            assert [(r.seq, r.hash) for r in (await verified_log(url, feed, n))[0]] == [(r.seq, r.hash) for r in recs]
        for k, d in enumerate(docs):  # every agent's subscription got the one order, across the failover
            assert not d.tape.snapshots
            check_dense(d.tape.records, n, f"agent {k}'s subscription")
            assert [r.hash for r in d.tape.records] == [r.hash for r in recs], f"agent {k} saw a different record"


# -- 4. Redis restarts under the relays -------------------------------------------------------

async def test_redis_restart_unavailable_fast_then_relays_recover(
        private_redis: RedisServer, make_site: Callable[[str], Site]) -> None:
    site = make_site(private_redis.url)
    a, b = await site.start(2, "--sync-interval", "0.5")
    feed = "misc/restart"
    key = Keypair.generate()

    writer = await Raw.connect(a.ws_url, key)
    reader = await Raw.connect(b.ws_url, Keypair.generate())  # subscribed before the restart
    writer_b = await Raw.connect(b.ws_url, key)  # connected before the restart, used after it
    try:
        await reader.send({"t": "sub", "feed": feed, "since": 0})
        await reader.wait(lambda f: f["t"] == "synced")

        acked: dict[str, int] = {}
        stop = asyncio.Event()
        errors: list[dict[str, Any]] = []

        async def load() -> None:  # a writer with events in flight when Redis dies
            n = 0
            while not stop.is_set():
                ev = Event.create(key, feed, "note", {"n": n})
                n += 1
                try:
                    reply = await raw_publish(writer, ev, timeout=10)
                except TimeoutError:
                    errors.append({"t": "timeout", "id": ev.id})
                    return
                if reply["t"] == "ok":
                    acked[ev.id] = reply["seq"]
                else:
                    errors.append(reply)
                    return

        writing = asyncio.create_task(load())
        await eventually(lambda: len(acked) >= 50, 20, "writes before the outage")
        private_redis.stop(graceful=False)  # SIGKILL: only what was fsynced (acked) survives
        await asyncio.wait_for(writing, 10)
        stop.set()
        assert errors and errors[0]["t"] == "error" and errors[0]["code"] == "unavailable", errors

        # during the outage: fast `unavailable`, never an ok, on both processes
        refused: list[str] = []
        for proc in (a, b):
            raw = await Raw.connect(proc.ws_url, key)
            for _ in range(3):
                ev = Event.create(key, feed, "note", {"outage": True})
                refused.append(ev.id)
                t0 = time.monotonic()
                reply = await raw_publish(raw, ev, timeout=5)
                elapsed = time.monotonic() - t0
                assert reply["t"] == "error" and reply["code"] == "unavailable", reply
                assert elapsed < 2.5, f"unavailable took {elapsed:.2f}s"
            await raw.close()
            status, health = await get_json(f"{proc.url}/health")
            assert status == 503 and health["ok"] is False and health["backend"] == "redis", health

        private_redis.launch()  # same port, same AOF
        for proc in (a, b):  # the relays reconnect by themselves
            await eventually(lambda p=proc: _healthy(p.url), 15, f"{proc.url} to report healthy again")

        # no acknowledged event was lost
        recs, _ = await verified_log(b.url, feed)
        stored = {r.event.id: r.seq for r in recs}
        assert all(stored.get(i) == s for i, s in acked.items()), "an acknowledged event was lost"
        assert not set(refused) & set(stored), "an event refused during the outage was stored"
        n = len(recs)
        assert n - len(acked) in (0, 1)  # the one in flight when Redis died may have landed unacked

        # publishing works again on both processes, and the old subscription is live again
        fresh = [Event.create(key, feed, "note", {"after": k}) for k in range(4)]
        seqs = []
        for k, ev in enumerate(fresh):
            reply = await raw_publish(writer if k % 2 == 0 else writer_b, ev, timeout=10)
            assert reply["t"] == "ok", reply
            seqs.append(reply["seq"])
        assert seqs == list(range(n + 1, n + 5))
        await reader.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == n + 4, timeout=10)
        got = [f["rec"] for f in reader.frames if f["t"] == "rec"]
        assert [r["seq"] for r in got] == list(range(1, n + 5)), "the pre-restart subscription has gaps or duplicates"
        assert [r["event"]["id"] for r in got[n:]] == [ev.id for ev in fresh]
        check_dense([Record.from_wire(r) for r in got], n + 4, "pre-restart subscription")
        await verified_log(a.url, feed, n + 4)
    finally:
        for raw in (writer, reader, writer_b):
            await raw.close()


async def _healthy(url: str) -> bool:
    try:
        status, body = await get_json(f"{url}/health", timeout=5)
    except httpx.HTTPError:
        return False
    return status == 200 and bool(body["ok"]) and bool(body["bus"]["connected"])


# -- 5. presence across processes -----------------------------------------------------------

async def test_presence_is_shared_and_a_crashed_process_s_clients_expire(
        redis_server: RedisServer, make_site: Callable[[str], Site]) -> None:
    ttl = 1.5
    site = make_site(redis_server.url)
    a, b = await site.start(2, "--presence-ttl", str(ttl), "--sync-interval", "0.5")
    feed = "doc/presence"
    relay_hex = site.key.public_hex
    kb, ka1, ka2, kc = (Keypair.generate() for _ in range(4))

    def first_lists(into: list[set[str]]) -> Callable[[Any], None]:
        return lambda p: into.append(set(p.keys)) if p.op == "list" else None

    async def http_participants(url: str) -> set[str]:
        return set((await feed_info(url, feed))["participants"])

    async with contextlib.AsyncExitStack() as stack:
        # agents on A only (no failover: when A dies, they are gone)
        agents = []
        for k in (ka1, ka2):
            c = await stack.enter_async_context(Client(a.url, k, relay_key=relay_hex, reconnect=False))
            if not agents:
                # the feed exists (GET /feeds/{feed}); a real edit: an empty update is invalid
                await c.publish(feed, "doc.update", {"update": "AQEBAAQBBHRleHQFaGVsbG8A"})
            await (await c.subscribe(feed, on_record=lambda r: None)).wait_synced(10)
            agents.append(c)
        await eventually(lambda: agents[0].subscription(feed).participants == {ka1.public_hex, ka2.public_hex},
                         10, "A's agents to see each other")

        # the first subscriber on B (B loads the feed now): its list already holds A's agents
        everyone = {kb.public_hex, ka1.public_hex, ka2.public_hex}
        cb = await stack.enter_async_context(Client(b.url, kb, relay_key=relay_hex))
        lists_b: list[set[str]] = []
        sub_b = await cb.subscribe(feed, on_record=lambda r: None, on_presence=first_lists(lists_b))
        await sub_b.wait_synced(10)
        await eventually(lambda: bool(lists_b), 10, "B's presence list")
        assert lists_b[0] == everyone, "B's first presence list lacks the participants on A"
        await eventually(lambda: all(c.subscription(feed).participants == everyone for c in agents), 10,
                         "A's agents to see B's subscriber join")
        for url in (a.url, b.url):
            await eventually(lambda u=url: _eq(http_participants(u), everyone), 10, f"participants at {url}")

        # a later subscriber on B is told about everyone too
        late = await stack.enter_async_context(Client(b.url, kc, relay_key=relay_hex))
        lists_c: list[set[str]] = []
        sub_c = await late.subscribe(feed, on_record=lambda r: None, on_presence=first_lists(lists_c))
        await sub_c.wait_synced(10)
        everyone.add(kc.public_hex)
        await eventually(lambda: bool(lists_c), 10, "the late subscriber's presence list")
        assert lists_c[0] == everyone, "the late subscriber's first presence list lacks keys"
        await eventually(lambda: sub_b.participants == everyone and sub_c.participants == everyone
                         and all(c.subscription(feed).participants == everyone for c in agents), 10,
                         "the late subscriber in every list")

        # a normal leave on A travels at once (no expiry involved)
        await agents[1].aclose()
        everyone.discard(ka2.public_hex)
        await eventually(lambda: sub_b.participants == everyone and sub_c.participants == everyone, ttl,
                         "ka2's leave to reach B")

        # while A lives, its agent stays listed on B well past the TTL (A keeps refreshing it)
        deadline = time.monotonic() + 2 * ttl
        while time.monotonic() < deadline:
            assert ka1.public_hex in sub_b.participants and ka1.public_hex in sub_c.participants
            await asyncio.sleep(0.1)

        a.kill9()
        await a.proc.wait()
        everyone.discard(ka1.public_hex)
        took = await eventually(lambda: sub_b.participants == everyone and sub_c.participants == everyone,
                                3 * ttl + 2, "A's agent to leave B's lists once its entry expired")
        assert took <= ttl + ttl / 3 + 1.5, f"leaving took {took:.1f}s"
        assert await http_participants(b.url) == everyone


async def _eq(coro: Awaitable[set[str]], want: set[str]) -> bool:
    return await coro == want


# -- 6. one document, any process ---------------------------------------------------------------

async def test_late_joiner_on_third_process_gets_snapshot_and_tail(redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    feed = "doc/shared"
    # an edit sequenced before the edit it builds on (a client retried the first one after the
    # second was stored): the merged doc holds it pending until its dependency arrives
    ghost = YDoc()
    ghost_text = ghost.get("text", type=Text)
    s0 = ghost.get_state()
    ghost_text.insert(0, "<g.0>")
    first = ghost.get_update(s0)
    s1 = ghost.get_state()
    ghost_text.insert(5, "<g.1>")
    second = ghost.get_update(s1)

    async with in_process_site(tmp_path, redis_server.url, 3, snapshot_every=40) as (a, b, c):
        relay_hex = a.relay.hub.relay_key.public_hex
        assert {r.relay.hub.relay_key.public_hex for r in (a, b, c)} == {relay_hex}
        async with contextlib.AsyncExitStack() as stack:
            ghost_client = await stack.enter_async_context(Client(b.url, Keypair.generate(), relay_key=relay_hex))
            assert (await ghost_client.publish(feed, "doc.update", {"update": b64(second)})).seq == 1
            writers = []
            for run in (a, a, b, b):
                client = await stack.enter_async_context(Client(run.url, Keypair.generate(), relay_key=relay_hex))
                writers.append(await stack.enter_async_context(TapedDoc(client, feed)))
            await asyncio.gather(*(d.synced(10) for d in writers))

            async def edit(i: int, doc: Doc, n: int, tag: str) -> None:
                for j in range(n):
                    doc.text.insert(len(doc.text) if j % 2 else 0, f"<{tag}{i}.{j}>")
                    await asyncio.sleep(0.002)

            # writes through A and B
            await asyncio.gather(*(edit(i, d, 30, "w") for i, d in enumerate(writers)))
            await asyncio.gather(*(d.flushed(30) for d in writers))
            head = 1 + 4 * 30
            snap = await a.relay.storage.load_snapshot(feed)
            assert snap is not None and snap.seq >= 80, "a process stored a snapshot in Redis"
            assert feed not in c.relay.hub.feeds

            # the late joiner on C: a snapshot of everything so far, then the live tail
            late_client = await stack.enter_async_context(Client(c.url, Keypair.generate(), relay_key=relay_hex))
            late = await stack.enter_async_context(TapedDoc(late_client, feed))
            await late.synced(10)
            rt_c = c.relay.hub.feeds[feed]
            assert rt_c.seq == head and not rt_c.ids_complete, "C loaded the feed from the stored snapshot + stream"
            assert len(late.tape.snapshots) == 1 and late.tape.snapshots[0].seq == head and not late.tape.records
            assert late.tape.snapshots[0].relay == relay_hex

            # the tail: the missing dependency, then more edits through A and B
            assert (await ghost_client.publish(feed, "doc.update", {"update": b64(first)})).seq == head + 1
            await asyncio.gather(*(edit(i, d, 10, "t") for i, d in enumerate(writers)))
            await asyncio.gather(*(d.flushed(30) for d in writers))
            final = head + 1 + 4 * 10
            await asyncio.gather(*(d.wait_seq(final, 10) for d in (*writers, late)))
            assert [r.seq for r in late.tape.records] == list(range(head + 1, final + 1))

            texts = {str(d.text) for d in (*writers, late)}
            assert len(texts) == 1, "the late joiner's snapshot + tail differs from the writers' doc"
            text = texts.pop()
            assert "<g.0><g.1>" in text and text.count("<") == 2 + 4 * 40
            for run in (a, b, c):
                info = await feed_info(run.url, feed)
                assert info["seq"] == final and info["state"]["text"] == text, run.url
            _, result = await verified_log(c.url, feed, final)
            assert result.view()["text"] == text


# -- 7. health ---------------------------------------------------------------------------------

async def test_health_reports_redis_and_follows_an_outage(private_redis: RedisServer, tmp_path: Path) -> None:
    async with in_process_site(tmp_path, private_redis.url, 1) as (run,):
        status, body = await get_json(f"{run.url}/health")
        assert status == 200 and body["ok"] is True, body
        assert body["backend"] == "redis" and body["storage"]["backend"] == "redis"
        assert body["bus"]["bus"] == "redis" and body["bus"]["connected"] is True

        private_redis.stop(graceful=False)
        await eventually(lambda: _status(run.url, 503), 10, "/health to answer 503 while Redis is down")
        status, body = await get_json(f"{run.url}/health")
        assert status == 503 and body["ok"] is False and body["storage"]["ok"] is False, body
        assert body["backend"] == "redis"

        private_redis.launch()
        await eventually(lambda: _healthy(run.url), 15, "/health to recover after Redis is back")
        status, body = await get_json(f"{run.url}/health")
        assert status == 200 and body["bus"]["connected"] and body["bus"]["reconnects"] >= 1, body


async def _status(url: str, want: int) -> bool:
    status, _ = await get_json(f"{url}/health", timeout=5)
    return status == want
