"""relay/storage/base.py: the interface's own pieces (the behaviour every backend must have is
the contract suite, test_contract.py): HeadMoved, StoredBase, and the defaults a backend
inherits when it does not support compaction."""
from __future__ import annotations

import pytest

from collab.events import Record, Snapshot
from relay.storage.base import (
    FeedHead,
    HeadMoved,
    Storage,
    StoredBase,
    StoredRecord,
    StoredSnapshot,
)
from tests.relay.storage.chain import RELAY


def test_head_moved_says_where_the_head_is_and_carries_what_was_missed() -> None:
    moved = HeadMoved("doc/a", 3, 5, ["r4", "r5"])
    assert (moved.feed, moved.expected, moved.actual, moved.records) == ("doc/a", 3, 5, ["r4", "r5"])
    assert str(moved) == "doc/a: expected head 3, found 5"
    assert HeadMoved("doc/a", 3, 5).records == []


def test_a_base_is_its_snapshots_seq() -> None:
    snap = Snapshot.seal(RELAY, "doc/a", 9, "ab" * 32, b"state")
    assert StoredBase(snap, "{}").seq == 9
    assert FeedHead("doc/a", 1, "h").rtime == 0  # a restored feed's head has no receipt time


class AppendOnly(Storage):
    """A backend without compaction: it implements only the abstract methods (each refuses),
    so what is tested is exactly what :class:`Storage` itself provides."""

    name = "append-only"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def open(self) -> None:
        self.calls.append("open")

    async def close(self) -> None:
        self.calls.append("close")

    async def append(self, feed: str, expected_seq: int, records: list[tuple[Record, str]]) -> None:
        raise NotImplementedError

    async def head(self, feed: str) -> FeedHead | None:
        raise NotImplementedError

    async def read(self, feed: str, since: int, limit: int) -> list[StoredRecord]:
        raise NotImplementedError

    async def lookup_ids(self, feed: str, ids: list[str]) -> dict[str, int]:
        raise NotImplementedError

    async def feeds(self, prefix: str = "", limit: int = 1000) -> list[FeedHead]:
        raise NotImplementedError

    async def save_snapshot(self, snap: StoredSnapshot) -> None:
        raise NotImplementedError

    async def load_snapshot(self, feed: str) -> StoredSnapshot | None:
        raise NotImplementedError


async def test_the_defaults_a_backend_without_compaction_inherits() -> None:
    store = AppendOnly()
    async with store as s:
        assert s is store and store.calls == ["open"]
        assert await s.load_base("doc/a") is None
        with pytest.raises(NotImplementedError, match="append-only storage does not support compaction"):
            await s.save_base(StoredBase(Snapshot.seal(RELAY, "doc/a", 1, "ab" * 32, b""), "{}"))
        with pytest.raises(NotImplementedError, match="does not support compaction"):
            await s.delete_through("doc/a", 1)
        assert await s.health() == {"backend": "append-only", "ok": True}
    assert store.calls == ["open", "close"]
