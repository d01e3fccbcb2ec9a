"""Embedded storage: SQLite in WAL mode, one writer thread doing group commit.

Appends from every feed queue up for the writer thread, which commits everything queued in
one transaction (one fsync for many events) and then resolves each caller's future. Reads
use their own connections on a small thread pool (WAL lets readers run beside the writer).
A lock file keeps two relays from sharing one data directory.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from collab.errors import Unavailable
from collab.events import Record, Snapshot

from relay.storage.base import FeedHead, HeadMoved, Storage, StoredBase, StoredRecord, StoredSnapshot

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  feed TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL,
  author TEXT NOT NULL, rtime INTEGER NOT NULL, hash TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (feed, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS records_by_id ON records (feed, id);
CREATE TABLE IF NOT EXISTS feeds (
  feed TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL, rtime INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
  feed TEXT PRIMARY KEY, seq INTEGER NOT NULL, head TEXT NOT NULL, state BLOB NOT NULL,
  meta TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bases (
  feed TEXT PRIMARY KEY, seq INTEGER NOT NULL, head TEXT NOT NULL, state BLOB NOT NULL,
  relay TEXT NOT NULL, rsig TEXT NOT NULL, meta TEXT NOT NULL) WITHOUT ROWID;
"""

_STOP = object()


class SqliteStorage(Storage):
    name = "sqlite"

    def __init__(self, directory: str | os.PathLike[str], synchronous: str = "FULL", max_batch: int = 2048) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "colony.db"
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.synchronous = synchronous.upper()
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []  # closed with the store (threads may outlive them)
        self._lock_fd: int | None = None
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError("SqliteStorage is already open; use one instance per relay")
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "relay.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"{self.dir} is in use by another relay process; give each relay its own --data "
                "directory, or share one Redis (--redis) to run several processes"
            ) from None
        try:
            conn = self._connect()
        except BaseException:
            os.close(fd)  # releases the lock: nothing of this attempt stays behind
            raise
        try:
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            os.close(fd)
            raise
        self._lock_fd = fd
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="colony-sqlite-read")
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="colony-sqlite-write", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is None:
            return
        self._q.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        self._writer = None
        if self._readers is not None:  # started together with the writer
            self._readers.shutdown(wait=True)
            self._readers = None
        self._local = threading.local()
        conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing ---------------------------------------------------------------------------
    async def append(self, feed: str, expected_seq: int, records: list[tuple[Record, str]]) -> None:
        if self._writer is None:
            raise Unavailable("storage is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._q.put((feed, expected_seq, records, fut, loop))
        await fut

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        heads: dict[str, int] = {}
        stop = False
        while not stop:
            item = self._q.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            results: list[tuple[asyncio.Future[None], asyncio.AbstractEventLoop, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for feed, expected, recs, fut, loop in batch:
                    err = self._append_one(conn, heads, feed, expected, recs)
                    results.append((fut, loop, err))
                conn.execute("COMMIT")
                self.commits += 1
            except Exception as exc:  # disk full, I/O error: nothing in this batch is stored
                log.exception("sqlite commit failed")
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                heads.clear()
                results = [(b[3], b[4], Unavailable(f"storage write failed: {exc}")) for b in batch]
            for fut, loop, err in results:
                loop.call_soon_threadsafe(_resolve, fut, err)
        conn.close()

    def _append_one(
        self, conn: sqlite3.Connection, heads: dict[str, int], feed: str, expected: int,
        recs: list[tuple[Record, str]],
    ) -> BaseException | None:
        cur = heads.get(feed)
        if cur is None:
            row = conn.execute("SELECT seq FROM feeds WHERE feed=?", (feed,)).fetchone()
            cur = row[0] if row else 0
        if cur != expected:
            heads[feed] = cur
            return HeadMoved(feed, expected, cur)
        conn.execute("SAVEPOINT a")
        try:
            conn.executemany(
                "INSERT INTO records (feed, seq, id, kind, author, rtime, hash, data) VALUES (?,?,?,?,?,?,?,?)",
                [(feed, r.seq, r.event.id, r.event.kind, r.event.author, r.rtime, r.hash, data) for r, data in recs],
            )
            last = recs[-1][0]
            conn.execute(
                "INSERT INTO feeds (feed, seq, hash, rtime) VALUES (?,?,?,?) "
                "ON CONFLICT(feed) DO UPDATE SET seq=excluded.seq, hash=excluded.hash, rtime=excluded.rtime",
                (feed, last.seq, last.hash, last.rtime),
            )
            conn.execute("RELEASE a")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO a")
            conn.execute("RELEASE a")
            return Unavailable(f"refused by storage: {exc}")
        heads[feed] = last.seq
        return None

    # -- reading ---------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._readers is None:
            raise Unavailable("storage is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._conn()))

    async def head(self, feed: str) -> FeedHead | None:
        row = await self._run(
            lambda c: c.execute("SELECT seq, hash, rtime FROM feeds WHERE feed=?", (feed,)).fetchone())
        return FeedHead(feed, row[0], row[1], row[2]) if row else None

    async def read(self, feed: str, since: int, limit: int) -> list[StoredRecord]:
        rows = await self._run(lambda c: c.execute(
            "SELECT seq, id, hash, data FROM records WHERE feed=? AND seq>? ORDER BY seq LIMIT ?",
            (feed, since, limit)).fetchall())
        return [StoredRecord(*r) for r in rows]

    async def lookup_ids(self, feed: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}

        def q(c: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(ids))  # placeholders only: every value is bound, none is spliced in
            rows = c.execute(f"SELECT id, seq FROM records WHERE feed=? AND id IN ({marks})", (feed, *ids))  # noqa: S608
            return dict(rows.fetchall())

        return await self._run(q)

    async def feeds(self, prefix: str = "", limit: int = 1000) -> list[FeedHead]:
        rows = await self._run(lambda c: c.execute(
            "SELECT feed, seq, hash, rtime FROM feeds WHERE feed >= ? AND feed < ? ORDER BY feed LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit)).fetchall())
        return [FeedHead(*r) for r in rows]

    async def save_snapshot(self, snap: StoredSnapshot) -> None:
        def w(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO snapshots (feed, seq, head, state, meta) VALUES (?,?,?,?,?) "
                "ON CONFLICT(feed) DO UPDATE SET seq=excluded.seq, head=excluded.head, state=excluded.state, "
                "meta=excluded.meta WHERE excluded.seq > snapshots.seq",
                (snap.feed, snap.seq, snap.head, snap.state, snap.meta))

        await self._run(w)

    async def load_snapshot(self, feed: str) -> StoredSnapshot | None:
        row = await self._run(lambda c: c.execute(
            "SELECT feed, seq, head, state, meta FROM snapshots WHERE feed=?", (feed,)).fetchone())
        return StoredSnapshot(*row) if row else None

    # -- retention -----------------------------------------------------------------------------
    @staticmethod
    def _put_base(c: sqlite3.Connection, base: StoredBase) -> None:
        b = base.snap
        c.execute(
            "INSERT INTO bases (feed, seq, head, state, relay, rsig, meta) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(feed) DO UPDATE SET seq=excluded.seq, head=excluded.head, state=excluded.state, "
            "relay=excluded.relay, rsig=excluded.rsig, meta=excluded.meta WHERE excluded.seq >= bases.seq",
            (b.feed, b.seq, b.head, b.state, b.relay, b.rsig, base.meta))
        # a base for a feed without records (a restore: relay/ops/backup.py) starts the feed at its seq
        c.execute("INSERT INTO feeds (feed, seq, hash, rtime) VALUES (?,?,?,0) ON CONFLICT(feed) DO NOTHING",
                  (b.feed, b.seq, b.head))

    async def save_base(self, base: StoredBase) -> None:
        await self._run(lambda c: self._put_base(c, base))

    async def load_base(self, feed: str) -> StoredBase | None:
        row = await self._run(lambda c: c.execute(
            "SELECT feed, seq, head, state, relay, rsig, meta FROM bases WHERE feed=?", (feed,)).fetchone())
        if row is None:
            return None
        return StoredBase(Snapshot(row[0], row[1], row[2], bytes(row[3]), row[4], row[5]), row[6])

    async def delete_through(self, feed: str, seq: int, base: StoredBase | None = None) -> int:
        if base is not None and (base.snap.feed != feed or base.seq != seq):
            raise ValueError("the base must summarise exactly the records deleted")

        def w(c: sqlite3.Connection) -> int:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT seq FROM feeds WHERE feed=?", (feed,)).fetchone()
                if row is None or row[0] <= seq:
                    raise ValueError(f"{feed}: cannot delete through {seq}: the head is {row[0] if row else 0}")
                if base is not None:
                    self._put_base(c, base)
                n = c.execute("DELETE FROM records WHERE feed=? AND seq<=?", (feed, seq)).rowcount
                c.execute("COMMIT")
                return n
            except BaseException:
                c.execute("ROLLBACK")
                raise

        return await self._run(w)

    async def health(self) -> dict[str, object]:
        return {"backend": self.name, "ok": self._writer is not None, "path": str(self.path), "commits": self.commits}


def _resolve(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
