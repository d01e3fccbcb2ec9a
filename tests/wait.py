"""Waiting on state that announces no event: another process's (a relay over HTTP, a redis
counter) or an in-process counter with nothing to await. Where an event, a future or a task
exists, tests await it instead; this is the one polling helper they share.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str = "the condition",
                     interval: float = 0.05) -> float:
    """Check ``predicate`` (sync or async) every ``interval`` seconds until it holds; returns how
    long that took. Fails the test, naming ``what``, once ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for: {what}")
        await asyncio.sleep(interval)
