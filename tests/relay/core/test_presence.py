"""relay/core/presence.py: participants per feed; the Redis store shares them between processes
(a real redis-server, two stores standing for two relay processes)."""
from __future__ import annotations

import asyncio
import json

import pytest

from relay.core.presence import Participants, PresenceStore, RedisPresence
from tests.redis_server import RedisServer
from tests.relay.core.buses import site

pytestmark = pytest.mark.timeout(30)


def frames_of(out: list[str]) -> list[tuple[str, list[str]]]:
    return [(f["op"], f["keys"]) for f in map(json.loads, out)]


async def test_local_participants_join_once_and_leave_with_their_last_subscription() -> None:
    out: list[str] = []
    p = Participants("doc/p", PresenceStore(), out.append)
    p.add("k1")
    p.add("k1")
    p.add("k2")
    assert p.keys() == ["k1", "k2"]
    p.remove("k1")
    assert p.keys() == ["k1", "k2"]  # k1 still has a subscription
    p.remove("k1")
    assert frames_of(out) == [("join", ["k1"]), ("join", ["k2"]), ("leave", ["k1"])]
    assert json.loads(p.list_frame()) == {"t": "presence", "feed": "doc/p", "op": "list", "keys": ["k2"]}
    await p.reconcile()  # a local store has no members to compare with: nothing changes
    assert p.keys() == ["k2"]


async def test_notices_mark_joins_and_a_leave_notice_reconciles() -> None:
    out: list[str] = []
    p = Participants("doc/p", PresenceStore(), out.append)
    p.on_notice("P+remote")
    p.on_notice("P+remote")
    assert p.keys() == ["remote"] and frames_of(out) == [("join", ["remote"])]
    p.on_notice("X-unrelated")
    assert p.keys() == ["remote"]


async def test_redis_presence_is_shared_between_processes(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        await a.bus.watch("doc/p")
        pa, pb = RedisPresence(a.storage, a.bus, ttl=30), RedisPresence(b.storage, b.bus, ttl=30)
        await pa.joined("doc/p", "ka")
        await pb.joined("doc/p", "kb")
        await pb.joined("doc/q", "kc")
        assert await a.next() == ("doc/p", "P+ka")  # a process hears its own notices too
        assert await a.next() == ("doc/p", "P+kb")
        assert await pa.members("doc/p") == {"ka", "kb"}
        assert await pa.present_in(["doc/p", "doc/q", "doc/none"]) == {"ka", "kb", "kc"}
        await pb.left("doc/p", "kb")
        assert await a.next() == ("doc/p", "P-kb")
        assert await pa.members("doc/p") == {"ka"}


async def test_a_crashed_processes_entries_lapse_and_refresh_keeps_them(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        gone = RedisPresence(b.storage, b.bus, ttl=-1)  # entries already expired: a process that stopped refreshing
        await gone.joined("doc/p", "dead")
        alive = RedisPresence(a.storage, a.bus, ttl=30)
        assert await alive.members("doc/p") == set()
        assert await alive.present_in(["doc/p"]) == set()
        left = redis_server.cli("HLEN", a.storage.key("doc/p", "presence")).strip()
        assert left == "0"  # expired entries are removed
        await alive.refresh([("doc/p", "k1"), ("doc/q", "k2")])
        assert await alive.members("doc/p") == {"k1"} and await alive.members("doc/q") == {"k2"}
        await alive.refresh([])


async def test_participants_over_redis_follow_the_other_process(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        await a.bus.watch("doc/p")
        out: list[str] = []
        here = Participants("doc/p", RedisPresence(a.storage, a.bus, ttl=30), out.append)
        there = RedisPresence(b.storage, b.bus, ttl=30)

        async def pump() -> None:  # what the hub does with the bus's notices for this feed
            feed, payload = await a.next()
            assert feed == "doc/p"
            here.on_notice(payload)
            await asyncio.gather(*here._tasks)

        here.add("mine")
        await asyncio.gather(*here._tasks)
        await pump()  # our own P+mine
        await there.joined("doc/p", "theirs")
        await pump()
        assert here.keys() == ["mine", "theirs"]
        await there.left("doc/p", "theirs")
        await pump()  # the leave notice makes it ask Redis, which no longer lists theirs
        assert here.keys() == ["mine"]
        here.remove("mine")  # shared: the leave is decided by reconciling, once Redis dropped it
        await pump()
        assert here.keys() == []
        assert frames_of(out) == [("join", ["mine"]), ("join", ["theirs"]), ("leave", ["theirs"]),
                                  ("leave", ["mine"])]
