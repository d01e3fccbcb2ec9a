"""Helpers for storage tests: seal records into a feed's chain, open a backend, check a stored log.

Shared by the contract suite (test_contract.py), the crash appender (appender.py) and the
backend-specific tests. Everything here is real: real signatures, real backends.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab import frames
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from relay.storage.base import Storage, StoredRecord
from relay.storage.redis import RedisStorage
from relay.storage.sqlite import SqliteStorage

RELAY = Keypair.from_seed(b"r" * 32)
AUTHOR = Keypair.from_seed(b"a" * 32)


def event(feed: str, **body: Any) -> Event:
    return Event.create(AUTHOR, feed, "note", {"n": uuid.uuid4().hex, **body})


def seal(events: list[Event], seq: int, prev: str) -> list[tuple[Record, str]]:
    """Seal ``events`` as the records after (``seq``, ``prev``): what a relay hands to ``append``."""
    out = []
    for ev in events:
        seq += 1
        rec = Record.seal(RELAY, ev, seq, prev)
        prev = rec.hash
        out.append((rec, frames.encode(rec.to_wire())))
    return out


def sealed(feed: str, seq: int, prev: str) -> tuple[Record, str]:
    """One record of a fresh event at ``seq`` after ``prev`` (no chain kept)."""
    return seal([event(feed)], seq - 1, prev)[0]


@asynccontextmanager
async def two_processes(url: str, tag: str, **options: Any) -> AsyncIterator[tuple[RedisStorage, RedisStorage]]:
    """Two open :class:`RedisStorage` instances with one fresh key prefix: two processes of a site."""
    prefix = f"{tag}-{uuid.uuid4().hex[:8]}"
    async with RedisStorage(url, prefix=prefix, **options) as a, RedisStorage(url, prefix=prefix, **options) as b:
        yield a, b  # type: ignore[misc]  # __aenter__ is typed as the base Storage


@dataclass
class Chain:
    """The appender's view of one feed: the head it seals against."""

    feed: str
    seq: int = 0
    head: str = GENESIS
    lines: list[str] = field(default_factory=list)

    def next(self, n: int = 1, **body: Any) -> list[tuple[Record, str]]:
        return seal([event(self.feed, **body) for _ in range(n)], self.seq, self.head)

    def took(self, batch: list[tuple[Record, str]]) -> None:
        self.seq, self.head = batch[-1][0].seq, batch[-1][0].hash
        self.lines += [line for _, line in batch]


def verify_log(rows: list[StoredRecord], start: int = 0, prev: str | None = GENESIS) -> list[Record]:
    """Check a stored log: dense seqs from ``start + 1``, an unbroken chain, signatures, unique ids."""
    out: list[Record] = []
    for i, row in enumerate(rows, start=start + 1):
        rec = Record.from_wire(json.loads(row.data))  # verifies the author's and the relay's signatures
        assert rec.seq == row.seq == i, f"seq is not dense at {i}: {row.seq}"
        assert row.id == rec.event.id and row.hash == rec.hash
        if prev is not None:
            assert rec.prev == prev, f"chain broken at {i}"
        prev = rec.hash
        out.append(rec)
    ids = [r.event.id for r in out]
    assert len(set(ids)) == len(ids), "an event is stored twice"
    return out


async def read_all(store: Storage, feed: str, since: int = 0, page: int = 100) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    while True:
        rows = await store.read(feed, since, page)
        out += rows
        if len(rows) < page:
            return out
        since = rows[-1].seq


def make_storage(kind: str, where: str, prefix: str = "colony") -> Storage:
    """A new (unopened) storage instance: ``sqlite <directory>`` or ``redis <url> <prefix>``."""
    if kind == "sqlite":
        return SqliteStorage(Path(where))
    if kind == "redis":
        return RedisStorage(where, prefix=prefix)
    raise ValueError(kind)
