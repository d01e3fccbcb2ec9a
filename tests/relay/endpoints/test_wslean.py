"""relay.endpoints.wslean: the lean receive queue and flag of the relay's WebSocket protocol
behave as asyncio's Queue and Event do where uvicorn uses them, and hold nothing when idle."""
from __future__ import annotations

import asyncio

import pytest

from relay.endpoints.wslean import Flag, ReceiveQueue


async def test_queue_is_fifo_and_holds_no_deque_when_empty() -> None:
    q = ReceiveQueue()
    assert q.empty() and q.qsize() == 0 and q._items is None
    for i in range(3):
        q.put_nowait(i)
    assert q.qsize() == 3 and not q.empty()
    assert [await q.get() for _ in range(3)] == [0, 1, 2]
    assert q.empty() and q._items is None and q._getters is None


async def test_get_waits_for_a_put() -> None:
    q = ReceiveQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)  # the getter is waiting now (one loop turn, not a wait for time)
    assert not getter.done()
    q.put_nowait("m")
    assert await asyncio.wait_for(getter, 5) == "m"
    assert q._getters is None


async def test_a_cancelled_getter_passes_its_wake_up_on() -> None:
    q = ReceiveQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("only")   # wakes the first getter ...
    first.cancel()         # ... which is cancelled before it runs: the second must get the item
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "only"


async def test_flag_waits_until_set_and_keeps_no_waiters() -> None:
    f = Flag()
    assert not f.is_set()
    waiter = asyncio.ensure_future(f.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    f.set()
    assert await asyncio.wait_for(waiter, 5) is True
    assert f.is_set() and f._waiters is None
    assert await f.wait() is True  # set: returns at once
    f.clear()
    assert not f.is_set()
    cancelled = asyncio.ensure_future(f.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert f._waiters is None
