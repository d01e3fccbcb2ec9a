"""Subscriptions: a verified, bounded stream of one feed, fed by :class:`collab.client.Client`.

Items (:class:`Record` / :class:`Snapshot`) arrive in feed order, already verified by the
protocol core. Callbacks run synchronously in the client's reader; an async iterator serves
consumers that pull. The queue is bounded by ``max_queue``: when it fills, the client pauses
the feed on the relay and resumes it by seq once half of the queue has been consumed, so
nothing is lost and memory does not grow (see :mod:`collab.client`).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import ColonyError
from .events import GENESIS, Record, Snapshot
from .protocol import Presence

log = logging.getLogger(__name__)

Item = Record | Snapshot


class Signal:
    """Wake every current waiter at once (a re-armed Event), for "wait until predicate" loops."""

    __slots__ = ("_ev",)

    def __init__(self) -> None:
        self._ev = asyncio.Event()

    def notify(self) -> None:
        self._ev.set()
        self._ev = asyncio.Event()

    async def wait(self) -> None:
        await self._ev.wait()


async def until(signal: Signal, pred: Callable[[], bool], check: Callable[[], None], timeout: float | None) -> None:
    async def loop() -> None:
        while True:
            check()
            if pred():
                return
            await signal.wait()

    await asyncio.wait_for(loop(), timeout)


class Subscription:
    """A verified stream of one feed: async-iterate it for :class:`Record` / :class:`Snapshot`.

    ``seq`` / ``head`` are the last record (or snapshot) delivered. Callbacks run
    synchronously in the client's reader, in feed order; exceptions they raise are logged.

    The client that owns it hands in what the flow control needs from the connection:
    ``unsubscribe(feed)`` sends an unsub and returns its rid (None when not connected),
    ``resubscribe(sub)`` sends a sub if connected and still registered (True if sent), and
    ``drop(sub, error)`` unregisters it (and ends it).
    """

    def __init__(self, feed: str, since: int, max_queue: int,
                 on_record: Callable[[Record], Any] | None, on_snapshot: Callable[[Snapshot], Any] | None,
                 on_presence: Callable[[Presence], Any] | None, *,
                 unsubscribe: Callable[[str], str | None], resubscribe: Callable[[Subscription], bool],
                 drop: Callable[[Subscription, BaseException | None], None]) -> None:
        self.feed, self.max_queue = feed, max_queue
        self._unsubscribe, self._resubscribe, self._drop = unsubscribe, resubscribe, drop
        self.seq = since
        self.head: str | None = GENESIS if since == 0 else None
        self.participants: set[str] = set()
        self.on_record, self.on_snapshot, self.on_presence = on_record, on_snapshot, on_presence
        self.closed = False
        self.synced = False
        self.error: BaseException | None = None
        self._items: deque[Item] = deque()
        self._signal = Signal()
        self._paused = False
        self._unsub_rid: str | None = None
        self.refusals = 0  # transient refusals of its sub in a row (the client retries them); 0 once synced

    @property
    def paused(self) -> bool:
        """True while the relay feed is unsubscribed because the queue is full (see module doc)."""
        return self._paused

    @property
    def queued(self) -> int:
        return len(self._items)

    @property
    def unsub_pending(self) -> bool:
        """Paused, and the unsub that paused it is not acknowledged yet (no second one is needed)."""
        return self._paused and self._unsub_rid is not None

    # -- consumer side --------------------------------------------------------------------
    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        if not self.max_queue:
            raise RuntimeError("this subscription delivers to callbacks only (max_queue=0)")
        while True:
            if self._items:
                item = self._items.popleft()
                if self._paused and len(self._items) <= self.max_queue // 2:
                    self._maybe_resume()
                return item
            if self.error is not None:
                raise self.error
            if self.closed:
                raise StopAsyncIteration
            await self._signal.wait()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the backlog is delivered on the current connection (live from then on)."""
        await until(self._signal, lambda: self.synced, self._check, timeout)

    async def wait_seq(self, seq: int, timeout: float | None = None) -> None:
        """Wait until records up to ``seq`` have been delivered."""
        await until(self._signal, lambda: self.seq >= seq, self._check, timeout)

    async def close(self) -> None:
        """Unsubscribe; iteration stops (queued items are discarded)."""
        if not self.closed:
            self._drop(self, None)
            self._items.clear()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ColonyError(f"subscription to {self.feed} is closed")

    # -- flow control (module doc) ---------------------------------------------------------
    def _pause(self) -> None:
        self._paused = True
        self.set_synced(False)
        self._unsub_rid = self._unsubscribe(self.feed)

    def _maybe_resume(self) -> None:
        if (self._paused and self._unsub_rid is None and not self.closed
                and len(self._items) <= self.max_queue // 2 and self._resubscribe(self)):
            self._paused = False

    # -- client side: called by the Client that owns it, in its reader ---------------------
    def reconnected(self) -> bool:
        """A new connection: True if the feed should be subscribed again (False: stays paused)."""
        self._unsub_rid = None
        if self._paused and len(self._items) > self.max_queue // 2:
            return False
        self._paused = False
        return True

    def unsubbed(self, rid: object) -> bool:
        """The relay acknowledged unsub ``rid``: True if it was this subscription's pause (resumes if drained)."""
        if self._unsub_rid is None or self._unsub_rid != rid:
            return False
        self._unsub_rid = None
        self._maybe_resume()
        return True

    def deliver(self, item: Item) -> None:
        cb: Callable[[Any], Any] | None
        if isinstance(item, Record):
            self.seq, self.head, cb = item.seq, item.hash, self.on_record
        else:
            self.seq, self.head, cb = item.seq, item.head, self.on_snapshot
        if cb is not None:
            _call(cb, item)
        if self.max_queue:
            self._items.append(item)
            if len(self._items) >= self.max_queue and not self._paused:
                self._pause()
        self._signal.notify()

    def deliver_presence(self, ev: Presence) -> None:
        if ev.op == "list":
            self.participants = set(ev.keys)
        elif ev.op == "join":
            self.participants.update(ev.keys)
        else:
            self.participants.difference_update(ev.keys)
        if self.on_presence is not None:
            _call(self.on_presence, ev)
        self._signal.notify()

    def set_synced(self, value: bool) -> None:
        self.synced = value
        if value:
            self.refusals = 0
        self._signal.notify()

    def end(self, error: BaseException | None) -> None:
        self.closed, self.synced = True, False
        if error is not None and self.error is None:
            self.error = error
        self._signal.notify()


def _call(cb: Callable[[Any], Any], arg: Any) -> None:
    try:
        cb(arg)
    except Exception:
        log.exception("subscription callback %r failed", cb)


__all__ = ["Item", "Signal", "Subscription", "until"]
