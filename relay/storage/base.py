"""The storage interface every backend implements (SQLite embedded, Redis scale-out).

Records are stored as their wire JSON text (what subscribers get), plus the columns the
relay queries by. ``append`` is a compare-and-set on the feed head: it succeeds only if the
stored head is still ``expected_seq``, so several relay processes sharing a backend can never
fork a feed. It returns only once the records are durable.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

from collab.errors import ColonyError, Unavailable
from collab.events import Record, Snapshot


@dataclass(frozen=True, slots=True)
class FeedHead:
    feed: str
    seq: int
    hash: str
    rtime: int = 0


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    feed: str
    seq: int
    head: str
    state: bytes
    meta: str  # JSON: access state and anything else the relay needs to resume the feed


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    id: str
    hash: str
    data: str  # the record's wire JSON


@dataclass(frozen=True, slots=True)
class StoredBase:
    """A compacted feed's base: the relay-signed snapshot of records 1..seq (which are deleted),
    plus the relay's own resume data (``meta``: JSON, the access state at that seq)."""

    snap: Snapshot
    meta: str

    @property
    def seq(self) -> int:
        return self.snap.seq


class HeadMoved(ColonyError):
    """The feed's head is not where the appender expected (another writer got there first)."""

    def __init__(self, feed: str, expected: int, actual: int, records: list[str] | None = None) -> None:
        super().__init__(f"{feed}: expected head {expected}, found {actual}")
        self.feed, self.expected, self.actual = feed, expected, actual
        # wire JSON of the first records after ``expected``, when the store hands them over with
        # the refusal (saves the appender a read); possibly fewer than ``actual - expected``
        self.records = records or []


class Deposed(Unavailable):
    """The append names a sequencing lease the store no longer holds, or none while another
    process holds one (relay.storage.redis_lease): this process does not sequence ``feed``; the
    publishes are answered ``unavailable`` and their authors retry."""

    def __init__(self, feed: str) -> None:
        super().__init__(f"{feed} is sequenced by another process of this site right now; retry")
        self.feed = feed


class Storage(ABC):
    """Durable log of records per feed, with snapshots. Use as an async context manager."""

    name = "abstract"
    #: (feed, last seq) of this process's last successful :meth:`append` on a shared backend
    #: (set by it; read by relay.core.watch: only the appending process announces a record)
    last_append: tuple[str, int] | None = None

    async def __aenter__(self) -> Storage:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def append(self, feed: str, expected_seq: int, records: list[tuple[Record, str]]) -> None:
        """Durably append ``(record, wire_json)`` pairs after head ``expected_seq``.

        Raise :class:`HeadMoved` if the head moved, :class:`collab.errors.Unavailable` if the
        backend cannot store now. Never partially append.
        """

    @abstractmethod
    async def head(self, feed: str) -> FeedHead | None: ...

    @abstractmethod
    async def read(self, feed: str, since: int, limit: int) -> list[StoredRecord]:
        """Records with ``seq > since`` in order, at most ``limit``."""

    @abstractmethod
    async def lookup_ids(self, feed: str, ids: list[str]) -> dict[str, int]:
        """Map the given event ids that are already stored in ``feed`` to their seq."""

    @abstractmethod
    async def feeds(self, prefix: str = "", limit: int = 1000) -> list[FeedHead]: ...

    @abstractmethod
    async def save_snapshot(self, snap: StoredSnapshot) -> None: ...

    @abstractmethod
    async def load_snapshot(self, feed: str) -> StoredSnapshot | None: ...

    # -- retention (relay/ops/compact.py, docs/operations.md "Retention and compaction") -------
    async def save_base(self, base: StoredBase) -> None:
        """Store ``base`` as the feed's base (replacing an older one) without deleting records."""
        raise NotImplementedError(f"{self.name} storage does not support compaction")

    async def load_base(self, feed: str) -> StoredBase | None:
        """The feed's base snapshot, if it was compacted (records 1..base.seq are gone)."""
        return None

    async def delete_through(self, feed: str, seq: int, base: StoredBase | None = None) -> int:
        """Delete records 1..``seq`` of ``feed``, atomically with saving ``base`` (whose seq must be
        ``seq``) when given; return how many records were deleted. The head is never deleted."""
        raise NotImplementedError(f"{self.name} storage does not support compaction")

    async def health(self) -> dict[str, object]:
        return {"backend": self.name, "ok": True}
