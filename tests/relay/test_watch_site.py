"""Watching a namespace across the processes of one Redis site (issue 14 item 3): auctions
opened by several agents on two relay processes are each announced once to a watcher on a
third process that never loaded them; a ``members`` feed the watcher may not read is not."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from pathlib import Path

from collab.client import Client
from collab.events import now_ms
from collab.keys import Keypair
from collab.protocol import Announce
from tests.conftest import Backend
from tests.redis_server import RedisServer
from tests.relay.test_scaleout import Site

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
AUCTIONS = 50


async def test_fifty_auctions_on_two_processes_are_each_announced_once_on_a_third(
        redis_server: RedisServer, tmp_path: Path) -> None:
    key = Keypair.generate()
    site = Site(tmp_path / "site", Backend("redis", redis_server.url, f"w{uuid.uuid4().hex[:10]}"), key,
                key.save(tmp_path / "relay.key"))
    try:
        a, b, c = await site.start(3)
        heard: list[Announce] = []
        opened: set[str] = set()
        marker, all_opened = asyncio.Event(), asyncio.Event()

        def on_announce(ev: Announce) -> None:
            heard.append(ev)
            if ev.feed == "club/open":
                marker.set()
            if ev.kind == "auction.open":
                opened.add(ev.feed)
                if len(opened) == AUCTIONS:
                    all_opened.set()

        async with contextlib.AsyncExitStack() as stack:
            watcher = await stack.enter_async_context(Client(c.url, Keypair.generate(), **FAST))
            await watcher.watch("auction/", on_announce)
            await watcher.watch("club/", on_announce)
            agents = [await stack.enter_async_context(Client((a, b)[i % 2].url, Keypair.generate(), **FAST))
                      for i in range(6)]
            body = {"task": "t", "bid_deadline": now_ms() + 120_000, "result_window": 1000, "min_stake": 0,
                    "reward": 0, "standby": 1, "scoring": "stake_trust", "ledger": "ledger/credits",
                    "trust": "vouch/global"}

            async def open_some(i: int) -> None:
                for n in range(i, AUCTIONS, len(agents)):
                    await agents[i].publish(f"auction/w-{n}", "auction.open", body)
                    if n < 2 * len(agents):  # and a feed both processes hold, written from each
                        await agents[i].publish("club/shared", "club.say", {"n": n})

            await asyncio.gather(*(open_some(i) for i in range(len(agents))))
            owner = agents[0]  # on process a: a members feed, then a public marker after it
            await owner.publish("club/secret", "feed.policy", {"policy": "members"})
            await owner.publish("club/secret", "club.say", {"n": 1})
            await owner.publish("club/open", "club.say", {"n": 1})

            await asyncio.wait_for(asyncio.gather(marker.wait(), all_opened.wait()), 15)
            assert opened == {f"auction/w-{n}" for n in range(AUCTIONS)}
            per_record = Counter((ev.feed, ev.seq) for ev in heard)
            assert max(per_record.values()) == 1, [k for k, v in per_record.items() if v > 1]
            assert Counter(ev.feed for ev in heard if ev.kind == "auction.open") == Counter(
                {f"auction/w-{n}": 1 for n in range(AUCTIONS)})
            assert not [ev for ev in heard if ev.feed == "club/secret"]
            # club/shared: sequenced on one process, folded by both, announced once per record
            shared = sorted(ev.seq for ev in heard if ev.feed == "club/shared")
            assert shared == list(range(1, 2 * len(agents) + 1))  # heard before the last auction of each agent
    finally:
        await site.stop_all()
