"""The client's outbox of publishes until the relay acknowledges them, sans I/O.

Every event submitted waits here until its ``ok`` (or a final ``error``). At most
``max_inflight`` are on the wire unacknowledged; the rest wait their turn, so a reconnect never
makes the relay answer with a burst of acks that would get the client cut as a slow consumer.
After a reconnect every event still here is sent again (the relay deduplicates by id).
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .events import Event
from .protocol import Ack


@dataclass(slots=True)
class Pending:
    event: Event
    future: asyncio.Future[Ack]
    attempts: int = 0
    sent: bool = False  # on the wire on the current connection, reply not yet seen


class PublishQueue:
    """Events not acknowledged yet, in submission order, with at most ``max_inflight`` sent."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.pending: dict[str, Pending] = {}
        self._order: deque[str] = deque()
        self._inflight = 0

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, event: Event) -> asyncio.Future[Ack]:
        """The future of ``event``'s ack (the same one if it is queued already)."""
        p = self.pending.get(event.id)
        if p is not None:
            return p.future
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self.pending[event.id] = Pending(event, fut)
        self._order.append(event.id)
        return fut

    def to_send(self) -> Iterator[Event]:
        """The events to put on the wire now (marked sent as they are taken)."""
        while self._order and self._inflight < self.max_inflight:
            p = self.pending.get(self._order.popleft())
            if p is None or p.sent:
                continue
            p.sent = True
            self._inflight += 1
            yield p.event

    def settled(self, event_id: str) -> Pending | None:
        """A reply to ``event_id`` arrived: it is no longer on the wire (still pending)."""
        p = self.pending.get(event_id)
        if p is not None and p.sent:
            p.sent = False
            self._inflight -= 1
        return p

    def requeue(self, event_id: str) -> bool:
        """Send ``event_id`` again (after a retryable refusal); False if it is gone meanwhile."""
        if event_id not in self.pending:
            return False
        self._order.append(event_id)
        return True

    def remove(self, event_id: str) -> Pending | None:
        return self.pending.pop(event_id, None)

    def restart(self) -> None:
        """A new connection: nothing is on the wire; everything pending goes out again, in order."""
        self._inflight = 0
        for p in self.pending.values():
            p.sent = False
        self._order = deque(self.pending)

    def fail_all(self, exc: BaseException) -> None:
        for p in self.pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self.pending.clear()
        self._order.clear()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: publishers that fire and forget should not spam the log."""
    if not fut.cancelled():
        fut.exception()


__all__ = ["Pending", "PublishQueue"]
