"""The storage contract (relay/storage/base.py): one suite every backend runs unchanged.

The ``store`` fixture is parametrized over the backends (SQLite in a temporary directory, Redis
on the session's real redis-server under a fresh key prefix); every test below only speaks the
:class:`relay.storage.base.Storage` interface. Covered: append compare-and-set (a stale head is
refused with what the appender needs to catch up), idempotency by event id, snapshots, bases
(compaction), listing, concurrent appenders on one feed, crash consistency (a storage client
killed with SIGKILL mid-append), and random batches against a model (hypothesis).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab.errors import Unavailable
from collab.events import GENESIS, Event, Record, Snapshot
from relay.storage.base import HeadMoved, Storage, StoredBase, StoredSnapshot
from tests.redis_server import RedisServer
from tests.relay.storage.chain import (
    RELAY,
    Chain,
    event,
    make_storage,
    read_all,
    seal,
    verify_log,
)

pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True)
class Backing:
    """Where a backend keeps its data; ``make()`` gives another instance over the same data."""

    kind: str
    where: str
    prefix: str = "colony"

    def make(self) -> Storage:
        return make_storage(self.kind, self.where, self.prefix)

    def argv(self) -> list[str]:
        return [self.kind, self.where] + ([self.prefix] if self.kind == "redis" else [])


@pytest.fixture(params=["sqlite", "redis"])
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> Backing:
    if request.param == "redis":
        srv: RedisServer = request.getfixturevalue("redis_server")
        return Backing("redis", srv.url, f"contract-{uuid.uuid4().hex[:10]}")
    return Backing("sqlite", str(tmp_path / "store"))


@pytest.fixture
async def store(backing: Backing) -> AsyncIterator[Storage]:
    async with backing.make() as s:
        yield s


@pytest.fixture
async def peers(backing: Backing, store: Storage) -> AsyncIterator[list[Storage]]:
    """Two handles on one store, as two relay processes of a site see it. SQLite allows one
    process per data directory (its lock; tests/relay/storage/test_sqlite.py), so there both
    handles are the one instance; on Redis they are two connections with their own state."""
    if backing.kind == "sqlite":
        yield [store, store]
        return
    async with backing.make() as other:
        yield [store, other]


async def put(store: Storage, chain: Chain, n: int = 1) -> list[str]:
    batch = chain.next(n)
    await store.append(chain.feed, chain.seq, batch)
    chain.took(batch)
    return [line for _, line in batch]


# -- append: compare-and-set -------------------------------------------------------------------
async def test_a_new_feed_has_no_head_and_no_records(store: Storage) -> None:
    assert await store.head("misc/none") is None
    assert await store.read("misc/none", 0, 10) == []
    assert await store.lookup_ids("misc/none", [event("misc/none").id]) == {}
    assert await store.load_snapshot("misc/none") is None
    assert await store.load_base("misc/none") is None


async def test_appended_records_read_back_in_order_with_their_head(store: Storage) -> None:
    chain = Chain("misc/a")
    await put(store, chain, 3)
    await put(store, chain, 1)
    await put(store, chain, 5)
    head = await store.head("misc/a")
    assert head is not None and (head.feed, head.seq, head.hash) == ("misc/a", 9, chain.head)
    rows = await store.read("misc/a", 0, 100)
    assert [r.data for r in rows] == chain.lines  # the wire JSON, byte for byte
    verify_log(rows)
    assert [r.seq for r in await store.read("misc/a", 4, 3)] == [5, 6, 7]  # since is exclusive, limit holds
    assert await store.read("misc/a", 9, 10) == []
    recs = [json.loads(line) for line in chain.lines]
    assert head.rtime == recs[-1]["rtime"]
    ids = [r["event"]["id"] for r in recs]
    assert await store.lookup_ids("misc/a", ids) == {i: n for n, i in enumerate(ids, start=1)}


async def test_a_stale_head_is_refused_with_what_the_appender_needs_to_catch_up(store: Storage) -> None:
    chain = Chain("misc/cas")
    lines = await put(store, chain, 4)
    stale = seal([event("misc/cas")], 1, chain_hash(lines[0]))
    with pytest.raises(HeadMoved) as info:
        await store.append("misc/cas", 1, stale)
    moved = info.value
    assert (moved.feed, moved.expected, moved.actual) == ("misc/cas", 1, 4)
    assert moved.records == lines[1:1 + len(moved.records)]  # possibly fewer, never other ones
    # a head ahead of the store is refused too, and a fresh feed's seal (expected 0) as well
    with pytest.raises(HeadMoved) as ahead:
        await store.append("misc/cas", 7, seal([event("misc/cas")], 7, chain.head))
    assert ahead.value.actual == 4 and ahead.value.records == []
    with pytest.raises(HeadMoved) as fresh:
        await store.append("misc/cas", 0, seal([event("misc/cas")], 0, GENESIS))
    assert fresh.value.actual == 4
    # nothing of the refused batches was stored
    assert [r.data for r in await store.read("misc/cas", 0, 100)] == lines
    head = await store.head("misc/cas")
    assert head is not None and (head.seq, head.hash) == (4, chain.head)


def chain_hash(line: str) -> str:
    return Record.from_wire(json.loads(line), verify_sigs=False).hash


async def test_the_loser_catches_up_from_the_refusal_and_appends(peers: list[Storage]) -> None:
    a, b = peers
    mine, theirs = Chain("misc/race"), Chain("misc/race")
    await put(a, mine, 2)
    with pytest.raises(HeadMoved) as info:
        await put(b, theirs, 1)
    moved = info.value
    caught = moved.records + [r.data for r in await b.read("misc/race", moved.expected + len(moved.records), 100)]
    assert caught == mine.lines
    theirs.seq, theirs.head = moved.actual, chain_hash(caught[-1])
    await put(b, theirs, 3)
    verify_log(await read_all(a, "misc/race"))
    head = await a.head("misc/race")
    assert head is not None and head.seq == 5


# -- idempotency ---------------------------------------------------------------------------------
async def test_an_already_stored_event_is_refused_and_nothing_of_its_batch_is_stored(store: Storage) -> None:
    chain = Chain("misc/dup")
    lines = await put(store, chain, 2)
    again = Event.from_wire(json.loads(lines[0])["event"])
    batch = seal([event("misc/dup"), again], chain.seq, chain.head)
    # the interface names no exception for this: SQLite says Unavailable ("refused by storage"),
    # Redis says HeadMoved with actual == expected; the contract is that nothing is stored
    with pytest.raises((HeadMoved, Unavailable)):
        await store.append("misc/dup", chain.seq, batch)
    assert [r.data for r in await store.read("misc/dup", 0, 10)] == lines
    head = await store.head("misc/dup")
    assert head is not None and head.seq == 2
    assert await store.lookup_ids("misc/dup", [again.id, batch[0][0].event.id]) == {again.id: 1}
    await put(store, chain, 1)  # the feed goes on at the head it had
    verify_log(await store.read("misc/dup", 0, 10))


async def test_lookup_ids_names_only_ids_stored_in_that_feed(store: Storage) -> None:
    a, b = Chain("misc/ids-a"), Chain("misc/ids-b")
    la = await put(store, a, 3)
    await put(store, b, 1)
    ids = [json.loads(line)["event"]["id"] for line in la]
    unknown = event("misc/ids-a").id
    assert await store.lookup_ids("misc/ids-a", []) == {}
    assert await store.lookup_ids("misc/ids-a", [unknown, ids[2]]) == {ids[2]: 3}
    assert await store.lookup_ids("misc/ids-b", ids) == {}


# -- snapshots -------------------------------------------------------------------------------------
async def test_the_latest_snapshot_is_kept(store: Storage) -> None:
    s5 = StoredSnapshot("doc/s", 5, "5" * 64, b"\x00state-5\xff", json.dumps({"access": {"n": 5}}))
    await store.save_snapshot(s5)
    assert await store.load_snapshot("doc/s") == s5
    await store.save_snapshot(StoredSnapshot("doc/s", 3, "3" * 64, b"old", "{}"))  # older: ignored
    await store.save_snapshot(StoredSnapshot("doc/s", 5, "x" * 64, b"same seq", "{}"))  # not newer: ignored
    assert await store.load_snapshot("doc/s") == s5
    s9 = StoredSnapshot("doc/s", 9, "9" * 64, b"", "{}")
    await store.save_snapshot(s9)
    assert await store.load_snapshot("doc/s") == s9
    assert await store.load_snapshot("doc/other") is None


# -- bases (compaction) ------------------------------------------------------------------------------
def base_at(chain_lines: list[str], feed: str, seq: int, state: bytes = b"folded") -> StoredBase:
    snap = Snapshot.seal(RELAY, feed, seq, chain_hash(chain_lines[seq - 1]), state)
    return StoredBase(snap, json.dumps({"access": {"policy": "open"}}))


async def test_delete_through_with_a_base_is_one_step_and_the_chain_goes_on_from_it(store: Storage) -> None:
    chain = Chain("doc/c")
    lines = await put(store, chain, 6)
    ids = [json.loads(line)["event"]["id"] for line in lines]
    base = base_at(lines, "doc/c", 4)
    assert await store.delete_through("doc/c", 4, base) == 4
    loaded = await store.load_base("doc/c")
    assert loaded == base and loaded is not None and loaded.snap.verify() and loaded.seq == 4
    rows = await store.read("doc/c", 0, 100)
    assert [r.data for r in rows] == lines[4:]
    verify_log(rows, start=4, prev=base.snap.head)  # record 5's prev is the base's head
    assert await store.lookup_ids("doc/c", ids) == {ids[4]: 5, ids[5]: 6}
    head = await store.head("doc/c")
    assert head is not None and (head.seq, head.hash) == (6, chain.head)
    await put(store, chain, 2)
    verify_log(await store.read("doc/c", 0, 100), start=4, prev=base.snap.head)


async def test_the_head_record_is_never_deleted_and_a_base_must_match(store: Storage) -> None:
    chain = Chain("doc/h")
    lines = await put(store, chain, 3)
    for upto in (3, 5):
        with pytest.raises(ValueError, match=rf"^doc/h: cannot delete through {upto}: "):
            await store.delete_through("doc/h", upto)
    with pytest.raises(ValueError, match=r"^the base must summarise exactly the records deleted$"):
        await store.delete_through("doc/h", 2, base_at(lines, "doc/h", 1))
    with pytest.raises(ValueError, match=r"^doc/nothing: cannot delete through 1: "):
        await store.delete_through("doc/nothing", 1)
    assert [r.data for r in await store.read("doc/h", 0, 10)] == lines
    assert await store.load_base("doc/h") is None
    assert await store.delete_through("doc/h", 1) == 1  # without a base: records only
    assert await store.load_base("doc/h") is None
    assert [r.seq for r in await store.read("doc/h", 0, 10)] == [2, 3]


async def test_an_older_base_never_replaces_a_newer_one(store: Storage) -> None:
    chain = Chain("doc/b")
    lines = await put(store, chain, 5)
    newer, older = base_at(lines, "doc/b", 3, b"three"), base_at(lines, "doc/b", 2, b"two")
    await store.delete_through("doc/b", 3, newer)
    await store.save_base(older)
    assert await store.load_base("doc/b") == newer
    again = base_at(lines, "doc/b", 3, b"three again")
    await store.save_base(again)  # the same seq replaces (a re-sealed base)
    assert await store.load_base("doc/b") == again


async def test_a_base_without_records_starts_the_feed_at_its_seq(store: Storage) -> None:
    donor = Chain("doc/r")
    lines = seal([event("doc/r") for _ in range(3)], 0, GENESIS)
    donor.took(lines)
    base = base_at([line for _, line in lines], "doc/r", 3)
    await store.save_base(base)  # a restore (relay/ops/backup.py)
    head = await store.head("doc/r")
    assert head is not None and (head.seq, head.hash) == (3, base.snap.head)
    assert [h.feed for h in await store.feeds("doc/r")] == ["doc/r"]
    assert await store.read("doc/r", 0, 10) == []
    await put(store, donor, 2)
    verify_log(await store.read("doc/r", 0, 10), start=3, prev=base.snap.head)


# -- listing ---------------------------------------------------------------------------------------------
async def test_feeds_lists_heads_by_name_under_a_prefix(store: Storage) -> None:
    chains = {name: Chain(name) for name in ("doc/b", "doc/a", "misc/z", "doc/a-2", "dock/x")}
    for n, chain in enumerate(chains.values(), start=1):
        await put(store, chain, n)
    every = await store.feeds()
    assert [h.feed for h in every] == sorted(chains)
    assert all((h.seq, h.hash) == (chains[h.feed].seq, chains[h.feed].head) for h in every)
    assert [h.feed for h in await store.feeds("doc/")] == ["doc/a", "doc/a-2", "doc/b"]
    assert [h.feed for h in await store.feeds("doc/a")] == ["doc/a", "doc/a-2"]
    assert [h.feed for h in await store.feeds("doc/", limit=2)] == ["doc/a", "doc/a-2"]
    assert [h.feed for h in await store.feeds(limit=1)] == ["doc/a"]
    assert await store.feeds("nothing/") == []


# -- lifecycle -----------------------------------------------------------------------------------------------
async def test_a_closed_store_is_unavailable_and_health_names_the_backend(backing: Backing) -> None:
    s = backing.make()
    async with s:
        health = await s.health()
        assert health["backend"] == backing.kind and health["ok"] is True
    chain = Chain("misc/closed")
    with pytest.raises(Unavailable):
        await s.append("misc/closed", 0, chain.next())
    with pytest.raises(Unavailable):
        await s.read("misc/closed", 0, 1)
    async with backing.make() as again:  # and it reopens over the same data
        assert await again.head("misc/closed") is None


# -- concurrency ---------------------------------------------------------------------------------------------
async def test_concurrent_appenders_make_one_dense_order_losing_and_doubling_nothing(peers: list[Storage]) -> None:
    feed, writers, batches = "misc/busy", 8, 12
    acked: dict[str, int] = {}

    async def writer(w: int) -> None:
        s = peers[w % len(peers)]
        rng = random.Random(w)
        for b in range(batches):
            events = [event(feed, w=w, b=b) for _ in range(rng.randint(1, 4))]
            for _ in range(500):
                head = await s.head(feed)
                seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
                batch = seal(events, seq, prev)
                try:
                    await s.append(feed, seq, batch)
                except HeadMoved:
                    continue
                acked.update({r.event.id: r.seq for r, _ in batch})
                break
            else:
                raise AssertionError(f"writer {w} never got batch {b} in")

    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(writers))), 60)
    recs = verify_log(await read_all(peers[0], feed))
    assert {r.event.id: r.seq for r in recs} == acked  # every acked record, where it was acked, nothing else
    # each batch landed whole and contiguous
    by_batch: dict[tuple[int, int], list[int]] = {}
    for r in recs:
        by_batch.setdefault((r.event.body["w"], r.event.body["b"]), []).append(r.seq)
    assert len(by_batch) == writers * batches
    assert all(seqs == list(range(seqs[0], seqs[0] + len(seqs))) for seqs in by_batch.values())
    for s in peers:
        head = await s.head(feed)
        assert head is not None and head.seq == len(recs)


# -- crash consistency -----------------------------------------------------------------------------------------
async def test_a_client_killed_mid_append_leaves_a_verifying_chain_with_every_acked_batch_whole(
        backing: Backing) -> None:
    """SQLite: the process (its writer thread mid group-commit) dies; Redis: a client dies with an
    append in flight, which the Lua script makes all-or-nothing. Either way: every acknowledged
    batch is there, no batch is half there, and the chain verifies."""
    feed = "misc/crash"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.relay.storage.appender", feed, *backing.argv(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=Path(__file__).parents[3])
    assert proc.stdout is not None and proc.stderr is not None
    acked: dict[int, tuple[int, int]] = {}  # batch -> (size, last seq)
    try:
        while len(acked) < 300:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                err = await proc.stderr.read()
                raise AssertionError(f"the appender died: {err.decode()[-2000:]}")
            word, *nums = line.decode().split()
            assert word == "acked", line
            acked[int(nums[0])] = (int(nums[1]), int(nums[2]))
    finally:
        proc.send_signal(signal.SIGKILL)  # while it appends the next batch
        await proc.wait()

    async with backing.make() as s:
        recs = verify_log(await read_all(s, feed, page=500))
        head = await s.head(feed)
    assert head is not None and head.seq == len(recs) and head.hash == recs[-1].hash
    got: dict[int, list[int]] = {}
    for r in recs:
        got.setdefault(r.event.body["batch"], []).append(r.seq)
    for batch_no, (size, last) in acked.items():
        assert got.get(batch_no) == list(range(last - size + 1, last + 1)), f"acked batch {batch_no} is not all there"
    for batch_no, seqs in got.items():
        size = recs[seqs[0] - 1].event.body["size"]
        assert len(seqs) == size, f"batch {batch_no} is half stored: {len(seqs)} of {size}"
    assert sorted(got) == list(range(1, len(got) + 1))  # batches in the order they were sent


# -- random batches against a model ------------------------------------------------------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["ok", "ok", "stale", "ahead", "dup"]), st.integers(1, 5)),
               min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_random_batches_follow_the_model(store: Storage, ops: list[tuple[str, int]]) -> None:
    """Any sequence of appends, right or wrong, leaves exactly the accepted batches, in order."""
    chain = Chain(f"misc/h-{uuid.uuid4().hex[:12]}")  # a fresh feed per example
    for drawn, n in ops:
        if drawn == "ok":
            await put(store, chain, n)
            continue
        if drawn == "dup" and not chain.lines:
            continue
        op = "ahead" if drawn == "stale" and chain.seq == 0 else drawn
        expected = {"stale": chain.seq - 1, "ahead": chain.seq + n, "dup": chain.seq}[op]
        if op == "dup":
            old = Event.from_wire(json.loads(chain.lines[n % len(chain.lines)])["event"])
            batch = seal([event(chain.feed), old], chain.seq, chain.head)
        else:
            batch = seal([event(chain.feed) for _ in range(n)], max(expected, 0), chain.head)
        with pytest.raises((HeadMoved, Unavailable)) as info:
            await store.append(chain.feed, expected, batch)
        if op != "dup":
            assert isinstance(info.value, HeadMoved) and info.value.actual == chain.seq
            missed = chain.lines[expected:expected + len(info.value.records)] if op == "stale" else []
            assert info.value.records == missed
    rows = await read_all(store, chain.feed)
    assert [r.data for r in rows] == chain.lines
    verify_log(rows)
    head = await store.head(chain.feed)
    assert ((head.seq, head.hash) if head else (0, GENESIS)) == (chain.seq, chain.head)


async def test_an_event_twice_in_one_batch_is_refused_whole(backing: Backing,
                                                            store: Storage) -> None:
    chain = Chain("misc/twice")
    await put(store, chain, 1)
    ev = event("misc/twice")
    with pytest.raises((HeadMoved, Unavailable)):
        await store.append("misc/twice", 1, seal([ev, ev], 1, chain.head))
    assert [r.data for r in await store.read("misc/twice", 0, 10)] == chain.lines
    assert await store.lookup_ids("misc/twice", [ev.id]) == {}
