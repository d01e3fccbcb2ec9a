"""Storing a feed another relay homes: records appended verbatim, a conflict refused."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from collab import frames
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair

from relay.core.mirrorstore import MirrorConflict
from tests.relay.core.hubkit import Sink, hub_on_sqlite

ALICE = Keypair.from_seed(b"A" * 32)
HOME = Keypair.from_seed(b"H" * 32)


def home_chain(n: int, feed: str = "chat/m") -> list[Record]:
    out, prev = [], GENESIS
    for i in range(1, n + 1):
        rec = Record.seal(HOME, Event.create(ALICE, feed, "msg", {"n": i}, ts=i), i, prev, 5000 + i)
        out.append(rec)
        prev = rec.hash
    return out


async def test_mirrored_records_are_stored_as_sealed_by_the_home(tmp_path: Path) -> None:
    recs = home_chain(3)
    async with hub_on_sqlite(tmp_path) as hub:
        rt = await hub.runtime("chat/m")
        sink = Sink()
        await hub.subscribe(sink, "chat/m", 0)
        await asyncio.gather(*(rt.mirror(r, frames.encode(r.to_wire())) for r in recs))
        assert rt.seq == 3 and rt.head == recs[-1].hash and rt.state == 3
        rows = await hub.storage.read("chat/m", 0, 10)
        assert [r.hash for r in rows] == [r.hash for r in recs]
        await sink.until(lambda s: s.seqs() == [1, 2, 3])
        await rt.mirror(recs[1], frames.encode(recs[1].to_wire()))  # the same record again: fine


async def test_a_record_that_does_not_extend_the_head_is_a_conflict(tmp_path: Path) -> None:
    recs = home_chain(2)
    forged = Record.seal(HOME, Event.create(ALICE, "chat/m", "msg", {"n": 99}, ts=99), 2, recs[0].hash, 1)
    async with hub_on_sqlite(tmp_path) as hub:
        rt = await hub.runtime("chat/m")
        for r in recs:
            await rt.mirror(r, frames.encode(r.to_wire()))
        with pytest.raises(MirrorConflict) as err:
            await rt.mirror(forged, frames.encode(forged.to_wire()))
        assert err.value.stored is not None and Record.from_wire(json.loads(err.value.stored)).hash == recs[1].hash
        gap = Record.seal(HOME, Event.create(ALICE, "chat/m", "msg", {"n": 4}, ts=4), 4, recs[1].hash, 1)
        with pytest.raises(MirrorConflict):  # a gap
            await rt.mirror(gap, frames.encode(gap.to_wire()))
        assert rt.seq == 2
