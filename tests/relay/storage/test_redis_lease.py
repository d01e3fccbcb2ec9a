"""relay/storage/redis_lease.py: sequencing leases with a fencing epoch, and the append's check.

Two :class:`RedisStorage` instances with one key prefix stand for two processes of a site,
against the real session ``redis-server``.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from collab.events import GENESIS, Record
from relay.storage.base import Deposed
from relay.storage.redis import RedisStorage
from tests.redis_server import RedisServer
from tests.relay.storage import chain
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)

FEED = "doc/leased"


def sealed(seq: int, prev: str) -> tuple[Record, str]:
    return chain.sealed(FEED, seq, prev)


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStorage, RedisStorage]]:
    async with chain.two_processes(redis_server.url, "lease", lease_ttl=0.3) as pair:
        yield pair


async def test_one_holder_at_a_time_and_renewing_keeps_the_epoch(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    g = await a.leases.acquire(FEED)
    assert g.mine and g.epoch == 1 and a.leases.holds(FEED)
    other = await b.leases.acquire(FEED)
    assert not other.mine and other.holder == a.token and 0 < other.ms_left <= 300
    again = await a.leases.acquire(FEED)  # ours already: renewed, same epoch
    assert again.mine and again.epoch == 1
    assert await a.leases.renew() == [] and FEED in a.leases.held
    assert a.leases.health()["leases_granted"] == 1


async def test_a_deposed_sequencer_can_never_append(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    r1 = sealed(1, GENESIS)
    assert (await a.leases.acquire(FEED)).mine
    with pytest.raises(Deposed):  # B holds no lease while A does: refused, atomically with the CAS
        await b.append(FEED, 0, [r1])
    assert b.fenced == 1
    await a.append(FEED, 0, [r1])

    # A stalls past its TTL without renewing; B is granted a newer epoch
    async def b_granted() -> bool:
        return (await b.leases.acquire(FEED)).mine

    await eventually(b_granted, 10, "A's lease to lapse and B to be granted the feed")
    assert b.leases.held[FEED].epoch == 2
    r2 = sealed(2, r1[0].hash)
    with pytest.raises(Deposed):  # A still names epoch 1: refused, and A forgets its lease
        await a.append(FEED, 1, [r2])
    assert FEED not in a.leases.held and a.leases.lost == 1
    await b.append(FEED, 1, [r2])
    assert (await b.head(FEED)).seq == 2  # type: ignore[union-attr]


async def test_idle_leases_are_released_and_then_anyone_appends(two: tuple[RedisStorage, RedisStorage]) -> None:
    a, b = two
    assert (await a.leases.acquire(FEED)).mine
    assert await a.leases.renew(idle=0.0) == []  # not used since the grant: released
    assert not a.leases.held and a.leases.released == 1
    assert (await b.leases.acquire(FEED)).mine  # at once, not after the TTL
    await b.leases.release_all()
    await a.append(FEED, 0, [sealed(1, GENESIS)])  # nobody holds one: a plain compare-and-set
