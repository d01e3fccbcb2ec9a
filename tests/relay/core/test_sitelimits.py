"""relay/core/sitelimits.py: per-name budgets that hold across the processes of a Redis site
(issue 13, item 4): real Redis buckets, and two real relay processes of one site."""
from __future__ import annotations

import asyncio
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


async def test_two_processes_share_one_bucket(redis_server: RedisServer) -> None:
    store = RedisStorage(redis_server.url, prefix=f"t{uuid.uuid4().hex[:10]}")
    await store.open()
    try:
        one, two = SiteLimiter(5, 10, "key"), SiteLimiter(5, 10, "key")  # the site: one bucket of 10, 5/s
        assert sum(one.allow("k") for _ in range(6)) == 6
        assert sum(two.allow("k") for _ in range(6)) == 6  # each process: its own bucket (burst 10)
        await one.share(store)  # the site's bucket: 4 left
        await two.share(store)  # -2: refused everywhere until it has refilled (0.4 s)
        assert not two.allow("k") and two.refused_site == 1
        assert one.allow("k")  # one has not heard yet (what a process may admit in one interval) ...
        await one.share(store)  # ... -3: now it has
        assert not one.allow("k") and one.refused_site == 1
        assert one.allow("other") and two.allow("other")  # per name
        loop = asyncio.get_running_loop()
        started = loop.time()
        await one.acquire("k")  # sleeps until the site's bucket has refilled (no spinning), then goes on
        assert loop.time() - started >= 0.3 and one.refused_site == 2
    finally:
        await store.close()


async def test_one_key_gets_one_budget_on_a_two_process_site(redis_server: RedisServer, tmp_path: Path) -> None:
    """An author publishing 20 events through both processes of a site in about a second: each
    process's own bucket (burst 10, 5/s) admits all 10 it gets; the site admits one bucket's worth
    (10 + 5 a second) plus what a process admits in one share interval before it hears."""
    limits = Limits(events_per_sec_key=5, burst_key=10)
    async with in_process_site(tmp_path, redis_server.url, 2, limits=limits) as (near, far):
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{near.url}/limits")).json()["rate_scope"] == "site"
        key = Keypair.generate()
        conns = [await Raw.connect(p.ws_url, key) for p in (near, far)]
        try:
            answers: list[str] = []
            for i in range(20):  # interleaved over both processes, paced so they hear each other
                ev = Event.create(key, f"misc/site{i % 3}", "note", {"i": i})
                reply = await conns[i % 2].request({"t": "pub", "event": ev.to_wire()}, ev.id, timeout=10)
                answers.append(reply.get("code", reply["t"]))
                await asyncio.sleep(0.05)  # pacing (a rate), not a wait for an event
            accepted = answers.count("ok")
            assert answers.count("rate_limited") == len(answers) - accepted, answers
            assert 12 <= accepted <= 18, answers  # per-process buckets alone: 20
            assert near.relay.key_limiter.refused_site + far.relay.key_limiter.refused_site == 20 - accepted
        finally:
            for raw in conns:
                await raw.close()
