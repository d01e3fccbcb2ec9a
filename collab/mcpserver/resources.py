"""The ``colony://feed/{feed}`` resources and their subscriptions.

Reading one answers the feed's head and derived state (the JSON of ``GET /feeds/{feed}``, read as
this server's key so private feeds it may read are shown). Subscribing to one makes the server
follow the feed on the agent's connection and notify every MCP subscriber after each new record;
a feed is followed once however many MCP sessions subscribe to it, and no longer once the last
one unsubscribes or goes away.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ColonyError
from ..events import check_feed

log = logging.getLogger(__name__)

SCHEME = "colony://feed/"
TEMPLATE = "colony://feed/{feed}"
FOLLOW_WAIT_S = 300.0   # one wait on the relay; the follower then waits again
RETRY_S = 2.0           # after a failed wait (the relay away): wait again this much later


def feed_of(uri: str) -> str:
    """The feed id of a ``colony://feed/<feed>`` URI; raises ValueError for anything else."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"not a Colony feed resource: {uri!r} (expected {TEMPLATE}, e.g. colony://feed/doc/notes)")
    feed = uri[len(SCHEME):]
    try:
        return check_feed(feed)
    except ColonyError as exc:
        raise ValueError(f"bad feed id in {uri!r}: {exc}") from None


def uri_of(feed: str) -> str:
    return SCHEME + feed


async def head_seq(agent: Any, feed: str) -> int:
    """The feed's current head seq (0 without records)."""
    page = await agent.read_feed(feed, since=2**53 - 1, limit=1)
    return int(page.get("seq", 0)) if isinstance(page, dict) else 0


class FeedFollower:
    """Follows feeds on the agent and calls ``on_record(feed)`` after each batch of new records.

    ``acquire(feed)`` / ``release(feed)`` count interest; the first acquire starts a task that waits
    for records past the head (``Agent.wait_feed``) and the last release stops it.
    """

    def __init__(self, agent: Any, on_record: Callable[[str], Awaitable[None]]) -> None:
        self.agent, self.on_record = agent, on_record
        self._count: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started: dict[str, asyncio.Event] = {}

    @property
    def feeds(self) -> list[str]:
        return sorted(self._count)

    async def acquire(self, feed: str) -> None:
        """Follow ``feed`` (once per feed); returns once records after the current head will notify."""
        self._count[feed] = self._count.get(feed, 0) + 1
        if feed not in self._tasks:
            started = self._started[feed] = asyncio.Event()
            self._tasks[feed] = asyncio.get_running_loop().create_task(self._follow(feed, started),
                                                                         name=f"mcp-follow {feed}")
        await self._started[feed].wait()

    def release(self, feed: str) -> None:
        n = self._count.get(feed, 0) - 1
        if n > 0:
            self._count[feed] = n
            return
        self._count.pop(feed, None)
        self._started.pop(feed, None)
        task = self._tasks.pop(feed, None)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._count.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, feed: str, started: asyncio.Event) -> None:
        since: int | None = None
        while True:
            try:
                if since is None:
                    since = await head_seq(self.agent, feed)
                    started.set()
                got = await self.agent.wait_feed(feed, since=since, timeout=FOLLOW_WAIT_S)
            except asyncio.CancelledError:
                raise
            except (ColonyError, OSError, TimeoutError) as exc:
                started.set()  # a subscriber is not held up by an unreachable relay; it is told on reads
                log.warning("following %s for MCP subscribers: %s; retrying in %.0f s", feed, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            records = got.get("records") if isinstance(got, dict) else None
            if records:
                since = max(int(r.get("seq", since)) for r in records)
                try:
                    await self.on_record(feed)
                except Exception:  # a subscriber's failure must not stop the others' notifications
                    log.exception("notifying MCP subscribers of %s failed", feed)
