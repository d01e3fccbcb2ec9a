"""relay/core/bus.py: spreading appends and notices between processes over real Redis pub/sub."""
from __future__ import annotations

import asyncio

import pytest

from relay.core.bus import LocalBus
from tests.redis_server import RedisServer
from tests.relay.core.buses import site
from tests.relay.storage.chain import Chain

pytestmark = pytest.mark.timeout(30)


async def test_the_local_bus_has_nothing_to_receive() -> None:
    bus = LocalBus()
    got: list[tuple[str, str]] = []

    async def resync() -> None:
        return None

    await bus.start(lambda f, p: got.append((f, p)), resync)
    await bus.watch("doc/a")
    await bus.publish("doc/a", "P+k")
    await bus.unwatch("doc/a")
    await bus.close()
    assert got == [] and bus.health() == {"bus": "local", "connected": True}


async def test_an_append_on_one_process_reaches_the_others_watching_the_feed(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        await b.bus.watch("doc/x")
        chain = Chain("doc/x")
        batch = chain.next(3)
        await a.storage.append("doc/x", 0, batch)
        feed, payload = await b.next()
        assert feed == "doc/x" and payload.split("\n") == [line for _, line in batch]  # one message per batch
        assert b.bus.messages == 1 and a.inbox.empty()


async def test_notices_arrive_in_order_and_unwatched_feeds_stay_quiet(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        await b.bus.watch("doc/x")
        await b.bus.watch("doc/y")
        await b.bus.watch("doc/x")  # watching twice is one subscription
        await b.bus.unwatch("doc/y")
        await b.bus.unwatch("doc/never")
        for payload in ("P+k1", "P+k2"):
            await a.bus.publish("doc/y", payload)  # nobody listens: dropped
            await a.bus.publish("doc/x", payload)
        assert [await b.next(), await b.next()] == [("doc/x", "P+k1"), ("doc/x", "P+k2")]
        health = b.bus.health()
        assert health["connected"] and health["channels"] == 1 and health["sharded"] is False


async def test_a_lost_connection_reconnects_resubscribes_and_resyncs(redis_server: RedisServer) -> None:
    async with site(redis_server.url) as (a, b):
        await b.bus.watch("doc/x")
        redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")  # cut every subscriber connection
        await asyncio.wait_for(b.resyncs.get(), 10)  # the bus asks every feed to catch up ...
        assert b.bus.reconnects >= 1 and b.bus.connected
        await a.bus.publish("doc/x", "P+after")  # ... and listens again
        assert await b.next() == ("doc/x", "P+after")
