"""The per-feed worker (a pump around collab.feedcore) through the real Hub on SQLite: batches,
snapshots, and two processes' hubs sharing one store (head moved, catch-up)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collab.events import Event, b64
from collab.keys import Keypair
from collab.namespaces.doc import EnginePanic

from tests.collab.yjs_inputs import crashers, edits
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


def doc_update(update: bytes, feed: str = "doc/p") -> Event:
    return Event.create(ALICE, feed, "doc.update", {"update": b64(update)})


async def test_a_document_that_panics_in_process_is_reloaded_and_keeps_taking_edits(tmp_path: Path) -> None:
    """An update that got past the sandbox's per-request check (an encode of what it changed) but
    poisons the encode of the whole document: this process's copy panics on the next full encode
    (a /yjs sync, the snapshot). The worker reloads the feed from storage (vetting the stored
    updates in full: the culprit, if stored, is quarantined) instead of failing, and goes on."""
    poison = next(c for c in crashers() if "docget" in c.name and not c.prefix)
    one, two, three, four = edits("one ", "two ", "three ", "four ")
    async with hub_on_sqlite(tmp_path, snapshot_every=3) as hub:
        assert await hub.publish(doc_update(one), ALICE.public_hex) == (1, False)
        rt = await hub.runtime("doc/p")
        rt.state.doc.apply_update(poison.update)  # only this process's copy: storage never had it
        with pytest.raises(EnginePanic):
            rt.state.state_update()
        rt.poisoned()  # what a /yjs sync that panicked does: the worker reloads before its next job
        assert await hub.publish(doc_update(two), ALICE.public_hex) == (2, False)
        assert rt.state.text() == "one two " and rt.state.state_update()

        rt.state.doc.apply_update(poison.update)  # again; this time the snapshot (seq 3) finds it
        assert await hub.publish(doc_update(three), ALICE.public_hex) == (3, False)  # acked, then the snapshot
        assert await hub.publish(doc_update(four), ALICE.public_hex) == (4, False)  # after the reload
        assert rt.state.text() == "one two three four " and rt.state.state_update()
        assert hub.metrics.yjs_refused.get("engine_panic") == 2
