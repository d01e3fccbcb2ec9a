"""relay/storage/redis.py beyond the contract (test_contract.py).

Appends of several processes to one feed on Redis: the loser gets what it missed with the
refusal, and a process that keeps losing gets the next turn (no starvation). Then the key
layout (hash tags), the script cache, health, and a Redis that goes away.

Storage level, against the real session ``redis-server``: two :class:`RedisStorage` instances
stand for two relay processes of one site (same key prefix).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.errors import Unavailable
from collab.events import GENESIS, Record
from relay.storage.base import HeadMoved
from relay.storage.redis import TURN_AFTER_LOSSES, RedisStorage, _redact, feed_key
from tests.redis_server import RedisServer
from tests.relay.storage import chain
from tests.relay.storage.chain import Chain
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)

FEED = "doc/fair"


def sealed(seq: int, prev: str) -> tuple[Record, str]:
    return chain.sealed(FEED, seq, prev)


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStorage, RedisStorage]]:
    async with chain.two_processes(redis_server.url, "fair") as pair:
        yield pair


async def test_the_loser_gets_the_records_it_missed_with_the_refusal(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    r1 = sealed(1, GENESIS)
    r2 = sealed(2, r1[0].hash)
    await a.append(FEED, 0, [r1, r2])
    trips = b.round_trips
    with pytest.raises(HeadMoved) as info:
        await b.append(FEED, 0, [sealed(1, GENESIS)])
    assert b.round_trips == trips + 1  # the refusal and the missed records in one round trip
    assert info.value.actual == 2 and info.value.expected == 0
    assert info.value.records == [r1[1], r2[1]]
    assert b.head_moved == 1


async def test_a_process_that_keeps_losing_gets_the_next_turn(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    head = sealed(1, GENESIS)
    await a.append(FEED, 0, [head])
    for _ in range(TURN_AFTER_LOSSES + 1):  # b keeps sealing against a stale head; the last loss claims the turn
        with pytest.raises(HeadMoved):
            await b.append(FEED, 0, [sealed(1, GENESIS)])

    # a is current, but it is b's turn: a waits instead of appending ...
    a_next = sealed(2, head[0].hash)
    a_task = asyncio.ensure_future(a.append(FEED, 1, [a_next]))
    await eventually(lambda: a.turn_waits > 0, 5, "a to be told to wait its turn", interval=0.001)
    assert a.turn_waits > 0 and not a_task.done()

    # ... b goes next, then a learns it lost, with b's record in hand
    b_next = sealed(2, head[0].hash)
    await b.append(FEED, 1, [b_next])
    with pytest.raises(HeadMoved) as info:
        await a_task
    assert info.value.actual == 2 and info.value.records == [b_next[1]]
    stored = await a.read(FEED, 0, 10)
    assert [r.data for r in stored] == [head[1], b_next[1]]

    # the turn is cleared once taken: a appends at once
    waits = a.turn_waits
    await a.append(FEED, 2, [sealed(3, b_next[0].hash)])
    assert a.turn_waits == waits


async def test_a_crashed_claimant_holds_the_others_up_only_until_the_turn_expires(
        two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    head = sealed(1, GENESIS)
    await a.append(FEED, 0, [head])
    for _ in range(TURN_AFTER_LOSSES + 1):
        with pytest.raises(HeadMoved):
            await b.append(FEED, 0, [sealed(1, GENESIS)])
    await b.close()  # b claimed the turn and is gone
    started = time.monotonic()
    await a.append(FEED, 1, [sealed(2, head[0].hash)])
    assert a.turn_waits > 0
    assert time.monotonic() - started < 2.0  # the turn expires after 100 ms


# -- beyond the contract and the fairness rules ----------------------------------------------------
async def test_a_refusal_carries_at_most_64_missed_records(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    chain = Chain(FEED)
    for _ in range(10):
        batch = chain.next(10)
        await a.append(FEED, chain.seq, batch)
        chain.took(batch)
    with pytest.raises(HeadMoved) as info:
        await b.append(FEED, 0, [sealed(1, GENESIS)])
    assert info.value.actual == 100 and info.value.records == chain.lines[:64]


async def test_every_key_of_a_feed_is_hash_tagged_by_the_feed(redis_server: RedisServer) -> None:
    prefix = f"tags-{uuid.uuid4().hex[:8]}"
    async with RedisStorage(redis_server.url, prefix=prefix) as s:
        chain = Chain("doc/tagged")
        await s.append(chain.feed, 0, chain.next(2))
        keys = sorted(redis_server.cli("--scan", "--pattern", f"{prefix}:*").split())
    assert keys == [f"{prefix}:feeds", f"{prefix}:{{doc/tagged}}:head", f"{prefix}:{{doc/tagged}}:ids",
                    f"{prefix}:{{doc/tagged}}:log"]
    assert feed_key(prefix, "doc/tagged", "ch") == f"{prefix}:{{doc/tagged}}:ch"


async def test_appends_go_on_after_the_script_cache_is_flushed(two: tuple[RedisStorage, RedisStorage],
                                                                redis_server: RedisServer) -> None:
    a, _ = two
    chain = Chain(FEED)
    batch = chain.next(1)
    await a.append(FEED, 0, batch)
    chain.took(batch)
    redis_server.cli("SCRIPT", "FLUSH")  # what a Redis restart does to it
    batch = chain.next(2)
    await a.append(FEED, 1, batch)
    chain.took(batch)
    assert [r.data for r in await a.read(FEED, 0, 10)] == chain.lines


async def test_health_counts_round_trips_and_hides_credentials(redis_server: RedisServer) -> None:
    async with RedisStorage(redis_server.url, prefix=f"h-{uuid.uuid4().hex[:8]}") as s:
        with pytest.raises(RuntimeError, match="already open"):
            await s.open()
        await s.append(FEED, 0, [sealed(1, GENESIS)])
        h = await s.health()
        assert h["ok"] is True and h["appends"] == 1 and h["cluster"] is False and h["error"] is None
        assert int(str(h["round_trips"])) >= 2
    assert _redact("redis://user:secret@host:1/0") == "redis://***@host:1/0"
    assert _redact("redis://host:1/0") == "redis://host:1/0"


async def test_a_redis_that_goes_away_makes_the_store_unavailable_not_broken(tmp_path: Path) -> None:
    srv = RedisServer.start(tmp_path / "redis")
    try:
        async with RedisStorage(srv.url, prefix="gone") as s:
            await s.append(FEED, 0, [sealed(1, GENESIS)])
            srv.stop(graceful=False)
            with pytest.raises(Unavailable):
                await s.append(FEED, 1, [sealed(2, GENESIS)])
            with pytest.raises(Unavailable):
                await s.head(FEED)
            h = await s.health()
            assert h["ok"] is False and h["error"]
    finally:
        srv.stop(graceful=False)
    with pytest.raises(RuntimeError, match="cannot reach Redis"):
        await RedisStorage(srv.url, open_timeout=0.2).open()
