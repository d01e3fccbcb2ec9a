"""relay/storage/sqlite.py beyond the contract: one process per data directory, group commit,
settings, and how it reports a refused write."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from collab.errors import Unavailable
from relay.storage.sqlite import SqliteStorage
from tests.relay.storage.chain import Chain, event, seal, verify_log

pytestmark = pytest.mark.timeout(60)


async def test_a_data_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path) as first:
        with pytest.raises(RuntimeError, match="in use by another relay process"):
            await SqliteStorage(tmp_path).open()
        with pytest.raises(RuntimeError, match="already open"):
            await first.open()
    async with SqliteStorage(tmp_path) as second:  # released on close
        assert (await second.health())["ok"]


async def test_appends_from_many_feeds_share_commits(tmp_path: Path) -> None:
    s = SqliteStorage(tmp_path)
    async with s:
        chains = [Chain(f"misc/g{i}") for i in range(50)]
        batches = [c.next(2) for c in chains]
        await asyncio.gather(*(s.append(c.feed, 0, b) for c, b in zip(chains, batches, strict=True)))
        assert 1 <= s.commits < 50  # group commit: one transaction (one fsync) for many appends
        for c, b in zip(chains, batches, strict=True):
            verify_log(await s.read(c.feed, 0, 10))
            head = await s.head(c.feed)
            assert head is not None and head.hash == b[-1][0].hash
        health = await s.health()
        assert health["path"] == str(tmp_path / "colony.db") and health["commits"] == s.commits


async def test_one_refused_append_does_not_fail_the_others_in_its_commit(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path) as s:
        dup = Chain("misc/dup")
        first = dup.next(1)
        await s.append("misc/dup", 0, first)
        dup.took(first)
        again = seal([first[0][0].event], 1, dup.head)
        ok = Chain("misc/ok")
        results = await asyncio.gather(s.append("misc/dup", 1, again), s.append("misc/ok", 0, ok.next(3)),
                                       return_exceptions=True)
        assert isinstance(results[0], Unavailable) and "refused by storage" in str(results[0])
        assert results[1] is None
        assert len(await s.read("misc/ok", 0, 10)) == 3
        assert [r.data for r in await s.read("misc/dup", 0, 10)] == dup.lines


def test_synchronous_must_be_a_durable_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be FULL, NORMAL or EXTRA"):
        SqliteStorage(tmp_path, synchronous="OFF")
    assert SqliteStorage(tmp_path, synchronous="normal").synchronous == "NORMAL"


async def test_records_survive_a_reopen_byte_for_byte(tmp_path: Path) -> None:
    chain = Chain("misc/keep")
    async with SqliteStorage(tmp_path) as s:
        batch = chain.next(4)
        await s.append(chain.feed, 0, batch)
        chain.took(batch)
    async with SqliteStorage(tmp_path) as s:
        assert [r.data for r in await s.read(chain.feed, 0, 10)] == chain.lines
        assert json.loads(chain.lines[0])["event"]["id"] == (await s.read(chain.feed, 0, 1))[0].id
        assert await s.lookup_ids(chain.feed, [event(chain.feed).id]) == {}
