"""relay/core/sitelimits.py: per-name budgets that hold across the processes of a Redis site
(issue 13, item 4): real Redis counters, and two real relay processes of one site."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from collab.events import Event
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.core.sitelimits import SiteLimiter
from relay.storage.redis import RedisStorage
from tests.rawclient import Raw
from tests.redis_server import RedisServer
from tests.relay.test_scaleout import in_process_site


async def _early_in_a_second() -> None:
    """Start at the beginning of a wall-clock second (the counters' window): the steps below
    take a few milliseconds, so they all land in one window."""
    await asyncio.sleep(1.0 - time.time() % 1.0)  # a clock boundary, not an event


async def test_two_processes_share_one_budget_per_second(redis_server: RedisServer) -> None:
    store = RedisStorage(redis_server.url, prefix=f"t{uuid.uuid4().hex[:10]}")
    await store.open()
    try:
        one, two = SiteLimiter(5, 10, "key"), SiteLimiter(5, 10, "key")  # the site: 5 a second
        await _early_in_a_second()
        assert sum(one.allow("k") for _ in range(3)) == 3
        assert sum(two.allow("k") for _ in range(3)) == 3  # each process: its own bucket (burst 10)
        await one.share(store)  # the site: 3
        await two.share(store)  # 6 > 5: over for the rest of this second
        assert not two.allow("k") and two.refused_site == 1
        assert one.allow("k")  # one has not heard yet (what a process may admit in one interval) ...
        await one.share(store)  # ... 7: now it has
        assert not one.allow("k") and one.refused_site == 1
        assert one.allow("other") and two.allow("other")  # per name
        second = int(time.time())
        await one.acquire("k")  # sleeps until the next second (no spinning), then goes on
        assert int(time.time()) > second and one.refused_site == 2
    finally:
        await store.close()


async def test_one_key_gets_one_budget_on_a_two_process_site(redis_server: RedisServer, tmp_path: Path) -> None:
    """An author publishing through both processes of a site, 12 events in under a second: each
    process's own bucket (burst 10) admits all of them; the site admits its rate (5 a second)
    plus what a process admits in one share interval before it hears."""
    limits = Limits(events_per_sec_key=5, burst_key=10)
    async with in_process_site(tmp_path, redis_server.url, 2, limits=limits) as (near, far):
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{near.url}/limits")).json()["rate_scope"] == "site"
        key = Keypair.generate()
        conns = [await Raw.connect(p.ws_url, key) for p in (near, far)]
        try:
            await _early_in_a_second()
            answers: list[str] = []
            for i in range(12):  # interleaved over both processes, paced so they hear each other
                ev = Event.create(key, f"misc/site{i % 3}", "note", {"i": i})
                reply = await conns[i % 2].request({"t": "pub", "event": ev.to_wire()}, ev.id, timeout=10)
                answers.append(reply.get("code", reply["t"]))
                await asyncio.sleep(0.05)  # pacing (a rate), not a wait for an event
            assert time.time() % 1.0 < 0.98, "the run left its one-second window; the counts split"
            accepted = answers.count("ok")
            assert answers.count("rate_limited") == len(answers) - accepted, answers
            assert 5 <= accepted <= 8, answers  # per-process buckets alone: 12
            assert near.relay.key_limiter.refused_site + far.relay.key_limiter.refused_site == 12 - accepted
        finally:
            for raw in conns:
                await raw.close()
