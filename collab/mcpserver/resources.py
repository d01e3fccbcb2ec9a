"""Feed resources (``colony://feed/{feed}``), their subscriptions, and waits for new feeds.

Reading a resource answers the feed's head and derived state (the JSON of ``GET /feeds/{feed}``,
read as this server's key, so private feeds it may read are shown). Subscribing to one, and
waiting for new feeds under a prefix, both run on the relay's watches (docs/protocol.md 9.6) over
the agent's one connection: the relay announces each new record of a watched prefix, and
:class:`Announcements` fans those out to everyone in this process who listens, with one relay
watch per prefix however many listen. Watches are not subscriptions, so following a feed for
MCP subscribers never competes with the agent's own reads and edits of it.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..agent import Agent
from ..client import Client
from ..errors import ColonyError
from ..events import GENESIS, check_feed
from ..protocol import Announce

log = logging.getLogger(__name__)

SCHEME = "colony://feed/"
TEMPLATE = "colony://feed/{feed}"

Listener = Callable[[Announce], None]


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


async def feed_info(agent: Agent, feed: str) -> dict[str, Any]:
    """``GET /feeds/{feed}`` as the agent (a feed without records: seq 0 at the genesis head)."""
    check_feed(feed)
    empty = {"feed": feed, "seq": 0, "head": GENESIS, "rtime": None, "state": None}
    info = await agent.get_json(f"/feeds/{feed}", missing=empty)
    return dict(info) if isinstance(info, dict) else empty


class Announcements:
    """The relay's announcements of new records, fanned out to listeners per prefix.

    The first listener of a prefix makes the client watch it; when the last one leaves, the
    watch is dropped. A per-prefix lock orders watch and unwatch, so a listener that arrives
    while the previous last one is leaving still finds the prefix watched."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._listeners: dict[str, dict[int, Listener]] = {}
        self._watched: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._leaving: set[asyncio.Task[None]] = set()

    async def listen(self, prefix: str, listener: Listener) -> int:
        """Call ``listener`` with each announcement under ``prefix`` from now on; returns a token
        for :meth:`unlisten`. Raises the relay's refusal of the watch (e.g. ``limit_exceeded``)."""
        token = next(self._ids)
        lock = self._locks.setdefault(prefix, asyncio.Lock())
        async with lock:
            if prefix not in self._watched:
                await self.client.watch(prefix, functools.partial(self._dispatch, prefix))
                self._watched.add(prefix)
            self._listeners.setdefault(prefix, {})[token] = listener
        return token

    def unlisten(self, prefix: str, token: int) -> None:
        """Stop calling the listener now; the relay's watch is dropped in the background once
        nobody in this process listens under ``prefix``."""
        listeners = self._listeners.get(prefix)
        if listeners is None or listeners.pop(token, None) is None:
            return
        if not listeners:
            del self._listeners[prefix]
            task = asyncio.get_running_loop().create_task(self._unwatch(prefix), name=f"mcp-unwatch {prefix}")
            self._leaving.add(task)
            task.add_done_callback(self._leaving.discard)

    async def _unwatch(self, prefix: str) -> None:
        async with self._locks.setdefault(prefix, asyncio.Lock()):
            if prefix in self._listeners or prefix not in self._watched:
                return  # someone listens again, or it was never watched
            self._watched.discard(prefix)
            try:
                await self.client.unwatch(prefix)
            except (ColonyError, OSError) as exc:  # a closed client forgot its watches anyway
                log.info("unwatching %r: %s", prefix, exc)

    def _dispatch(self, prefix: str, ev: Announce) -> None:
        for listener in list(self._listeners.get(prefix, {}).values()):
            try:
                listener(ev)
            except Exception:  # one listener's bug must not starve the others
                log.exception("an announcement listener of %r failed", prefix)

    async def aclose(self) -> None:
        self._listeners.clear()
        for task in list(self._leaving):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_new_feeds(self, prefix: str, timeout: float,
                             watching: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
        """Block until a feed whose id starts with ``prefix`` gets its first record, or ``timeout``
        seconds pass: ``{"prefix", "feeds": [{feed, kind, rtime}], "timed_out"}``. ``watching`` is
        awaited once the relay watches the prefix (from then on no new feed is missed)."""
        new: list[dict[str, Any]] = []
        arrived = asyncio.Event()

        def on_announce(ev: Announce) -> None:
            if ev.seq == 1:
                new.append({"feed": ev.feed, "kind": ev.kind, "rtime": ev.rtime})
                arrived.set()

        token = await self.listen(prefix, on_announce)
        try:
            if watching is not None:
                await watching()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await arrived.wait()
        finally:
            self.unlisten(prefix, token)
        return {"prefix": prefix, "feeds": new, "timed_out": not new}


class FeedFollower:
    """Follows feeds for resource subscribers: ``acquire(feed)`` / ``release(feed)`` count
    interest, and ``on_record(feed)`` runs after each announced record of a followed feed."""

    def __init__(self, announcements: Announcements, on_record: Callable[[str], Awaitable[None]]) -> None:
        self.announcements, self.on_record = announcements, on_record
        self._count: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._notifying: set[asyncio.Task[None]] = set()

    @property
    def feeds(self) -> list[str]:
        return sorted(self._tokens)

    async def acquire(self, feed: str) -> None:
        """Follow ``feed``; returns once every later record will notify (raises a refused watch)."""
        async with self._lock:
            if feed not in self._tokens:
                self._tokens[feed] = await self.announcements.listen(feed, functools.partial(self._announced, feed))
            self._count[feed] = self._count.get(feed, 0) + 1

    def release(self, feed: str) -> None:
        n = self._count.get(feed, 0) - 1
        if n > 0:
            self._count[feed] = n
            return
        self._count.pop(feed, None)
        token = self._tokens.pop(feed, None)
        if token is not None:
            self.announcements.unlisten(feed, token)

    def _announced(self, feed: str, ev: Announce) -> None:
        if ev.feed != feed:  # the prefix `doc/a` also hears `doc/ab`
            return
        task = asyncio.get_running_loop().create_task(self._notify(feed), name=f"mcp-updated {feed}")
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self, feed: str) -> None:
        try:
            await self.on_record(feed)
        except Exception:  # a subscriber's failure must not stop the others' notifications
            log.exception("notifying MCP subscribers of %s failed", feed)

    async def aclose(self) -> None:
        for feed in list(self._tokens):
            self._count[feed] = 1
            self.release(feed)
        for task in list(self._notifying):
            task.cancel()
