"""A pycrdt document bound to a ``doc/`` feed: local edits out, remote records in.

Every local transaction on :attr:`Doc.ydoc` becomes one signed ``doc.update`` event (body
``{"update": b64(yjs v1 update)}``) submitted to the client's outbox, so edits made while
disconnected are kept and published after the reconnect. Remote records and snapshots are
applied inside a transaction whose origin is private to this Doc; the observer skips that
origin, which is what keeps remote updates (including the echo of our own) from being
published again.
"""
from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, TypeVar, cast

from pycrdt import Doc as YDoc
from pycrdt import Text, TransactionEvent

from .client import Client, Subscription
from .errors import AuthRequired, ColonyError, InvalidEvent
from .events import Record, Snapshot, b64, check_feed, namespace_of, unb64
from .namespaces.doc import TEXT_ROOT, is_empty_update, is_panic
from .protocol import Ack

log = logging.getLogger(__name__)

T = TypeVar("T")
EMPTY_UPDATE = b"\x00\x00"


class Doc:
    """``async with Doc(client, "doc/name") as doc:`` edit ``doc.text``; peers converge."""

    def __init__(self, client: Client, feed: str, *, flush_timeout: float | None = 10.0) -> None:
        check_feed(feed)
        if namespace_of(feed) != "doc":
            raise InvalidEvent(f"Doc needs a doc/ feed, not {feed!r}")
        if client.key is None:
            raise AuthRequired("a Doc publishes signed edits: give the Client a key")
        self.client, self.feed, self.flush_timeout = client, feed, flush_timeout
        self.ydoc: YDoc[Any] = YDoc()
        self.text: Text = self.ydoc.get(TEXT_ROOT, type=Text)
        self._remote = ("colony.remote", id(self))  # hashable origin unique to this Doc
        self._remote_hash = hash(self._remote)
        self._pending: set[asyncio.Future[Ack]] = set()
        self._failed: list[BaseException] = []
        self.quarantined: list[int] = []  # seqs of records the engine panicked on (left out, logged)
        self._acked_seq = 0
        self._sub: Subscription | None = None
        self._observer = self.ydoc.observe(self._on_local)

    def get(self, name: str, *, type: type[T]) -> T:
        """Another root type of the document (passthrough to pycrdt)."""
        return cast("T", self.ydoc.get(name, type=type))  # pycrdt types get() by the Doc's parameter (Any)

    @property
    def seq(self) -> int:
        """Highest seq of the feed applied to this document."""
        return self._sub.seq if self._sub is not None else 0

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Doc:
        self._sub = await self.client.subscribe(self.feed, on_record=self._on_record, on_snapshot=self._on_snapshot)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if et is None and self._pending and self.client.connected:
                try:
                    await self.flushed(self.flush_timeout)
                except (TimeoutError, ColonyError) as exc:
                    log.warning("leaving %s with unacknowledged edits: %r", self.feed, exc)
        finally:
            self.ydoc.unobserve(self._observer)
            if self._sub is not None:
                await self._sub.close()

    # -- waiting --------------------------------------------------------------------------
    async def synced(self, timeout: float | None = None) -> None:
        """Wait until the relay's backlog (or snapshot) has been applied on this connection."""
        if self._sub is None:
            raise ColonyError("enter the Doc (async with) before waiting for it")
        await self._sub.wait_synced(timeout)

    async def wait_seq(self, seq: int, timeout: float | None = None) -> None:
        """Wait until records up to ``seq`` are applied (e.g. another agent's ack seq)."""
        if self._sub is None:
            raise ColonyError("enter the Doc (async with) before waiting for it")
        await self._sub.wait_seq(seq, timeout)

    async def flushed(self, timeout: float | None = None) -> int:
        """Wait until every local edit so far is acknowledged; returns the highest ack seq.

        Raises the relay's error (RelayError) if an edit was refused.
        """
        async def drain() -> None:
            while self._pending:
                # shielded: a timeout here must not cancel the outbox's futures
                await asyncio.gather(*(asyncio.shield(f) for f in self._pending), return_exceptions=True)

        await asyncio.wait_for(drain(), timeout)
        if self._failed:
            failed, self._failed = self._failed, []
            raise failed[0]
        return self._acked_seq

    # -- local -> relay -------------------------------------------------------------------
    def _on_local(self, event: TransactionEvent) -> None:
        # pycrdt's stub omits TransactionEvent.transaction; the object has it (pycrdt 0.12 to 0.14)
        if event.transaction.origin() == self._remote_hash:  # type: ignore[attr-defined]
            return
        update = event.update
        if not update or is_empty_update(update):
            return
        ev = self.client.create_event(self.feed, "doc.update", {"update": b64(update)})
        fut = self.client.submit(ev)
        self._pending.add(fut)
        fut.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future[Ack]) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("an edit to %s was refused: %s", self.feed, exc)
            self._failed.append(exc)
        else:
            self._acked_seq = max(self._acked_seq, fut.result().seq)

    # -- relay -> local -------------------------------------------------------------------
    def _apply(self, update: bytes) -> None:
        with self.ydoc.transaction(origin=self._remote):
            self.ydoc.apply_update(update)

    def _on_record(self, rec: Record) -> None:
        if rec.event.kind != "doc.update":
            return  # control events (policy, acl) carry no document content
        try:
            self._apply(unb64(rec.event.body["update"]))
        except Exception:  # the relay validated it; mirror its tolerance and keep going
            log.warning("update at %s#%d did not apply", self.feed, rec.seq, exc_info=True)
        except BaseException as exc:  # a Rust panic (a record the relay quarantined): report, go on
            if not is_panic(exc):
                raise
            self.quarantined.append(rec.seq)
            log.exception("update at %s#%d panics the Yjs engine; left out", self.feed, rec.seq)

    def _on_snapshot(self, snap: Snapshot) -> None:
        if snap.state:
            self._apply(snap.state)

    def __str__(self) -> str:
        return str(self.text)


__all__ = ["Doc"]
