"""Who is in a feed: participants per feed, local or shared between relay processes.

A participant is a key with at least one authenticated subscription to the feed. Each feed
runtime keeps a :class:`Participants`; with a shared backend the :class:`PresenceStore` also
records this process's participants in Redis, each entry with an expiry that the process
keeps refreshing, so the clients of a crashed process leave the list once it lapses.
Changes travel as notices on the feed's bus channel (``P+<key>`` / ``P-<key>``); a periodic
reconciliation repairs anything a lost notice or a crash left behind.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from collab import frames

log = logging.getLogger(__name__)


class PresenceStore:
    """Local only: the participants of this process are all there is."""

    shared = False

    async def joined(self, feed: str, key: str) -> None:
        return None

    async def left(self, feed: str, key: str) -> None:
        return None

    async def members(self, feed: str) -> set[str] | None:
        return None

    async def refresh(self, entries: Iterable[tuple[str, str]]) -> None:
        return None

    async def present_in(self, feeds: list[str]) -> set[str]:
        """Keys present in any of ``feeds`` on other processes (none without a shared backend)."""
        return set()


class RedisPresence(PresenceStore):
    shared = True

    def __init__(self, storage: Any, bus: Any, ttl: float) -> None:
        self.storage, self.bus, self.ttl = storage, bus, ttl
        self.pid = os.urandom(6).hex()

    def _key(self, feed: str) -> str:
        return self.storage.key(feed, "presence")

    def _expiry(self) -> int:
        return int((time.time() + self.ttl) * 1000)

    async def joined(self, feed: str, key: str) -> None:
        await self.storage.r.hset(self._key(feed), f"{key}|{self.pid}", self._expiry())
        await self.bus.publish(feed, "P+" + key)

    async def left(self, feed: str, key: str) -> None:
        await self.storage.r.hdel(self._key(feed), f"{key}|{self.pid}")
        await self.bus.publish(feed, "P-" + key)

    async def members(self, feed: str) -> set[str] | None:
        entries = await self.storage.r.hgetall(self._key(feed))
        now = time.time() * 1000
        alive, expired = set(), []
        for field, until in entries.items():
            if int(until) > now:
                alive.add(field.decode().split("|", 1)[0])
            else:
                expired.append(field)
        if expired:
            await self.storage.r.hdel(self._key(feed), *expired)
        return alive

    async def present_in(self, feeds: list[str]) -> set[str]:
        """Keys with a live entry (any process) in any of ``feeds``, in pipelined batches."""
        now = time.time() * 1000
        out: set[str] = set()
        for i in range(0, len(feeds), 1000):
            pipe = self.storage.r.pipeline(transaction=False)
            for feed in feeds[i:i + 1000]:
                pipe.hgetall(self._key(feed))
            for entries in await pipe.execute():
                for name, until in entries.items():
                    if int(until) > now:
                        out.add((name.decode() if isinstance(name, bytes) else str(name)).split("|", 1)[0])
        return out

    async def refresh(self, entries: Iterable[tuple[str, str]]) -> None:
        r = self.storage.r
        until = self._expiry()
        by_feed: dict[str, dict[str, int]] = {}
        for feed, key in entries:
            by_feed.setdefault(self._key(feed), {})[f"{key}|{self.pid}"] = until
        if not by_feed:
            return
        pipe = r.pipeline(transaction=False)
        for hkey, mapping in by_feed.items():
            pipe.hset(hkey, mapping=mapping)
        await pipe.execute()


class Participants:
    """The participant list of one feed, as this process shows it to its subscribers."""

    def __init__(self, feed: str, store: PresenceStore, broadcast: Callable[[str], None],
                 interval: float = 0.0, window_closed: Callable[[], None] | None = None) -> None:
        self.feed, self.store, self._broadcast = feed, store, broadcast
        self._window_closed = window_closed  # called after each window's frames went out
        self.interval = interval  # changes within a window of this many seconds go out as one frame pair
        self.local: dict[str, int] = {}
        self.present: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, bool] = {}  # key -> was it present when the current window opened
        self._window: asyncio.TimerHandle | None = None
        self._reconciling: asyncio.Task[None] | None = None
        self._again = False

    def keys(self) -> list[str]:
        return sorted(self.present)

    @property
    def window_open(self) -> bool:
        """Changes are being coalesced now: the window's frames go out when it closes."""
        return self._window is not None

    def list_frame(self) -> str:
        return frames.encode({"t": "presence", "feed": self.feed, "op": "list", "keys": self.keys()})

    def _mark(self, key: str, here: bool) -> None:
        """Coalesced: the first change is sent at once and opens a window of ``interval``
        seconds; changes within it are sent when it ends, as at most one ``join`` and one
        ``leave`` frame with the keys whose state differs from when the window opened (the last
        state wins: a key that joined and left within it is not mentioned), and a window that
        sent something opens the next one. So one feed sends at most 1 + 2 per interval
        presence frames to each subscriber, however fast keys come and go."""
        if here == (key in self.present):
            return
        if here:
            self.present.add(key)
        else:
            self.present.discard(key)
        if self.interval <= 0 or self._window is None:
            self._send([key] if here else [], [] if here else [key])
            if self.interval > 0:
                self._window = asyncio.get_running_loop().call_later(self.interval, self._close_window)
        else:
            self._pending.setdefault(key, not here)

    def _close_window(self) -> None:
        pending, self._pending = self._pending, {}
        joined = sorted(k for k, was in pending.items() if not was and k in self.present)
        left = sorted(k for k, was in pending.items() if was and k not in self.present)
        if joined or left:
            self._send(joined, left)
            self._window = asyncio.get_running_loop().call_later(self.interval, self._close_window)
        else:
            self._window = None
        if self._window_closed is not None:
            self._window_closed()

    def _send(self, joined: list[str], left: list[str]) -> None:
        if joined:
            self._broadcast(frames.encode({"t": "presence", "feed": self.feed, "op": "join", "keys": joined}))
        if left:
            self._broadcast(frames.encode({"t": "presence", "feed": self.feed, "op": "leave", "keys": left}))

    def close(self) -> None:
        """The feed is unloaded: send nothing more."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self._pending.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("presence update for %s failed: %r", self.feed, task.exception())

    def add(self, key: str) -> None:
        n = self.local.get(key, 0)
        self.local[key] = n + 1
        if n == 0:
            self._mark(key, True)
            if self.store.shared:
                self._spawn(self.store.joined(self.feed, key))

    def remove(self, key: str) -> None:
        n = self.local.get(key, 0) - 1
        if n > 0:
            self.local[key] = n
            return
        self.local.pop(key, None)
        if self.store.shared:
            self._spawn(self.store.left(self.feed, key))  # others decide by reconciling
        else:
            self._mark(key, False)

    def on_notice(self, payload: str) -> None:
        if payload.startswith("P+"):
            self._mark(payload[2:], True)
        elif payload.startswith("P-"):
            key = payload[2:]
            if key not in self.local:
                self._reconcile_soon()

    def _reconcile_soon(self) -> None:
        """One reconciliation at a time, and at most one more after it however many leave
        notices arrive meanwhile (churn on another process must not cost a read per notice)."""
        if self._reconciling is not None and not self._reconciling.done():
            self._again = True
            return
        self._reconciling = self._spawn(self._reconcile_while_asked())

    async def _reconcile_while_asked(self) -> None:
        while True:
            self._again = False
            await self.reconcile()
            if not self._again:
                return

    async def reconcile(self) -> None:
        members = await self.store.members(self.feed)
        if members is None:
            return
        members |= set(self.local)
        for key in members - self.present:
            self._mark(key, True)
        for key in self.present - members:
            self._mark(key, False)
