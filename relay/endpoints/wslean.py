"""Lean per-connection primitives for the WebSocket protocol the relay runs (thousands of idle
connections per process: docs/benchmarks.md, "Many agents per process").

uvicorn's websockets-sansio protocol gives every connection an ``asyncio.Queue`` (three deques
and an ``asyncio.Event`` with a deque of its own) for received messages and an
``asyncio.Event`` for writability: about 3 KiB per connection that holds nothing. The relay's
protocol (:class:`relay.endpoints.wsdirect.GuardedProtocol`) uses these two instead, which
allocate only while something is queued or waited for:

* :class:`ReceiveQueue`: ``put_nowait``, ``get``, ``empty``, ``qsize`` (what uvicorn uses);
* :class:`Flag`: ``set``, ``clear``, ``is_set``, ``wait`` (``asyncio.Event``'s interface).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Flag:
    """An ``asyncio.Event`` whose waiters list exists only while someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
            return True
        finally:
            waiters = self._waiters
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    self._waiters = None


class ReceiveQueue:
    """An unbounded FIFO with ``asyncio.Queue``'s ``put_nowait`` / ``get`` / ``empty`` /
    ``qsize``; its deque exists only while it holds something."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wake_next()

    def _wake_next(self, skip: asyncio.Future[None] | None = None) -> None:
        for fut in self._getters or ():
            if fut is not skip and not fut.done():
                fut.set_result(None)
                return

    async def get(self) -> Any:
        while not self._items:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if self._items and fut.done():  # the wake-up was ours: pass it on
                    self._wake_next(fut)
                raise
            finally:
                getters = self._getters
                if getters is not None and fut in getters:
                    getters.remove(fut)
                    if not getters:
                        self._getters = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item


__all__ = ["Flag", "ReceiveQueue"]
