"""A live, locally folded view of one feed: the SDK side of a namespace's state machine.

The relay folds every feed with its namespace; an agent that follows a feed folds the same
verified records with the same pure functions, so it holds the same state without trusting
the relay's word for it (``docs/coordination.md``). ``FeedView`` is that fold plus "wait
until the state says so", which the coordination helpers (auctions, task trees) build on.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .events import Record
from .feedcore import FeedCore
from .namespaces import Namespace, default_registry
from .subscription import Signal, Subscription, until

if TYPE_CHECKING:
    from .client import Client

S = TypeVar("S")


class _Fold:
    """One subscription's fold, shared by every FeedView of that feed on one client (a client
    has one subscription per feed; an agent may hold, say, two subtasks of one task)."""

    def __init__(self, ns: Namespace[Any], feed: str) -> None:
        self.ns, self.feed = ns, feed
        self.core = FeedCore(feed, ns, id_cache=0)  # the client's protocol has checked the chain
        self.records: list[Record] = []
        self.views: list[FeedView[Any]] = []
        self.sub: Subscription | None = None
        self.signal = Signal()

    @property
    def state(self) -> Any:
        return self.core.state

    @property
    def seq(self) -> int:
        return self.core.seq

    def on_record(self, rec: Record) -> None:
        core = self.core
        if rec.seq <= core.seq:
            return  # a resend after a reconnect
        before = core.state
        core.fold(rec)
        self.records.append(rec)
        for view in list(self.views):
            for listener in list(view.listeners):
                listener(rec, before, core.state)
        self.signal.notify()


class FeedView(Generic[S]):
    """Subscribe to ``feed`` and keep ``state`` = the namespace's fold of every record so far.

    Several views of one feed on one client share one subscription and one fold."""

    def __init__(self, client: Client, feed: str, ns: Namespace[S] | None = None) -> None:
        self.client, self.feed = client, feed
        self.ns: Namespace[S] = ns or default_registry().for_feed(feed)
        self.listeners: list[Callable[[Record, S, S], Any]] = []  # (record, before, after)
        self._fold: _Fold | None = None

    @property
    def state(self) -> S:
        return self._fold.state if self._fold is not None else self.ns.initial(self.feed)

    @property
    def seq(self) -> int:
        return self._fold.seq if self._fold is not None else 0

    @property
    def records(self) -> list[Record]:
        return self._fold.records if self._fold is not None else []

    @property
    def _sub(self) -> Subscription | None:
        return self._fold.sub if self._fold is not None else None

    async def start(self) -> FeedView[S]:
        if self._fold is not None:
            raise RuntimeError(f"this view of {self.feed} is already started")
        folds: dict[str, _Fold] = self.client.__dict__.setdefault("_feed_folds", {})
        fold = folds.get(self.feed)
        if fold is None:
            fold = folds[self.feed] = _Fold(self.ns, self.feed)
            try:
                fold.sub = await self.client.subscribe(self.feed, on_record=fold.on_record)
            except BaseException:
                del folds[self.feed]
                raise
        fold.views.append(self)
        self._fold = fold
        return self

    async def __aenter__(self) -> FeedView[S]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        fold, self._fold = self._fold, None
        if fold is None:
            return
        fold.views.remove(self)
        if not fold.views:
            self.client.__dict__.get("_feed_folds", {}).pop(self.feed, None)
            if fold.sub is not None:
                await fold.sub.close()

    @property
    def participants(self) -> set[str]:
        sub = self._sub
        return set(sub.participants) if sub is not None else set()

    async def wait_for(self, pred: Callable[[S], Any], timeout: float | None = None) -> S:
        """Wait until ``pred(state)`` is truthy; return the state. Raises TimeoutError."""
        if self._fold is None:
            raise RuntimeError("start the view first")
        fold = self._fold
        await until(fold.signal, lambda: bool(pred(fold.state)), self._check, timeout)
        state: S = fold.state  # the fold of this view's namespace
        return state

    async def wait_synced(self, timeout: float | None = None) -> None:
        if self._sub is None:
            raise RuntimeError("start the view first")
        await self._sub.wait_synced(timeout)

    def _check(self) -> None:
        sub = self._sub
        if sub is not None and sub.error is not None:
            raise sub.error
