"""A live, locally folded view of one feed: the SDK side of a namespace's state machine.

The relay folds every feed with its namespace; an agent that follows a feed folds the same
verified records with the same pure functions, so it holds the same state without trusting
the relay's word for it (``docs/coordination.md``). ``FeedView`` is that fold plus "wait
until the state says so", which the coordination helpers (auctions, task trees) build on.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .access import CONTROL_KINDS
from .events import Record
from .namespaces import Namespace, default_registry
from .subscription import Signal, Subscription, until

if TYPE_CHECKING:
    from .client import Client

S = TypeVar("S")


class FeedView(Generic[S]):
    """Subscribe to ``feed`` and keep ``state`` = the namespace's fold of every record so far."""

    def __init__(self, client: Client, feed: str, ns: Namespace[S] | None = None) -> None:
        self.client, self.feed = client, feed
        self.ns: Namespace[S] = ns or default_registry().for_feed(feed)
        self.state: S = self.ns.initial(feed)
        self.seq = 0
        self.records: list[Record] = []
        self.listeners: list[Callable[[Record, S, S], Any]] = []  # (record, before, after)
        self._sub: Subscription | None = None
        self._signal = Signal()

    async def start(self) -> FeedView[S]:
        if self._sub is not None:
            raise RuntimeError(f"this view of {self.feed} is already started")
        self._sub = await self.client.subscribe(self.feed, on_record=self._on_record)
        return self

    async def __aenter__(self) -> FeedView[S]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
            self._sub = None

    @property
    def participants(self) -> set[str]:
        return set(self._sub.participants) if self._sub is not None else set()

    def _on_record(self, rec: Record) -> None:
        if rec.seq <= self.seq:
            return  # a resend after a reconnect
        before = self.state
        if rec.event.kind not in CONTROL_KINDS:
            self.state = self.ns.apply(self.state, rec)
        self.seq = rec.seq
        self.records.append(rec)
        for listener in list(self.listeners):
            listener(rec, before, self.state)
        self._signal.notify()

    async def wait_for(self, pred: Callable[[S], Any], timeout: float | None = None) -> S:
        """Wait until ``pred(state)`` is truthy; return the state. Raises TimeoutError."""
        await until(self._signal, lambda: bool(pred(self.state)), self._check, timeout)
        return self.state

    async def wait_synced(self, timeout: float | None = None) -> None:
        if self._sub is None:
            raise RuntimeError("start the view first")
        await self._sub.wait_synced(timeout)

    def _check(self) -> None:
        if self._sub is not None and self._sub.error is not None:
            raise self._sub.error
