"""The per-feed worker (a pump around collab.feedcore) through the real Hub on SQLite: batches,
snapshots, and two processes' hubs sharing one store (head moved, catch-up)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from collab.events import Event
from collab.keys import Keypair

from tests.relay.core.hubkit import Sink, hub_on_sqlite, hubs_on_sqlite

ALICE = Keypair.from_seed(b"A" * 32)


def msg(n: int, feed: str = "chat/w") -> Event:
    return Event.create(ALICE, feed, "msg", {"n": n}, ts=1000 + n)


async def test_concurrent_publishes_are_batched_into_one_dense_order(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        answers = await asyncio.gather(*(hub.publish(msg(i), ALICE.public_hex) for i in range(50)))
        assert sorted(seq for seq, _ in answers) == list(range(1, 51)) and not any(dup for _, dup in answers)
        rows = await hub.storage.read("chat/w", 0, 100)
        assert [r.seq for r in rows] == list(range(1, 51))
        rt = await hub.runtime("chat/w")
        assert rt.queued == 0 and rt.task is not None


async def test_a_snapshot_is_stored_every_n_records(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path, snapshot_every=3) as hub:
        for i in range(4):
            await hub.publish(msg(i), ALICE.public_hex)
        snap = await hub.storage.load_snapshot("chat/w")
        assert snap is not None and snap.seq == 3
    async with hub_on_sqlite(tmp_path) as hub:  # loads from the snapshot, then the tail
        rt = await hub.runtime("chat/w")
        assert rt.seq == 4 and rt.state == 4 and not rt.core.ids_complete
        assert await hub.publish(msg(1), ALICE.public_hex) == (2, True)  # found by a storage lookup


async def test_two_hubs_on_one_store_take_each_others_records(tmp_path: Path) -> None:
    async with hubs_on_sqlite(tmp_path, 2) as (one, two):
        sink = Sink()
        await one.subscribe(sink, "chat/w", 0)
        await two.runtime("chat/w")
        assert await one.publish(msg(1), ALICE.public_hex) == (1, False)
        assert await two.publish(msg(2), ALICE.public_hex) == (2, False)  # head moved: takes 1, seals 2
        rt_two = await two.runtime("chat/w")
        assert rt_two.seq == 2
        assert await one.sweep_heads() == 1  # one is behind: it catches up from storage
        await sink.until(lambda s: s.seqs() == [1, 2])
        assert await one.publish(msg(3), ALICE.public_hex) == (3, False)
        assert await one.publish(msg(2), ALICE.public_hex) == (2, True)
