"""Spreading new records between relay processes that share one backend.

The storage append itself publishes each batch (see ``relay.storage.redis``); a bus is the
receiving side. Pub/sub is at-most-once, so the bus is only a fast path: every feed runtime
checks ``seq`` continuity and backfills from storage on a gap, the bus asks every loaded feed
to catch up after it reconnects, and an anti-entropy sweep compares heads periodically.
"""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Deliver = Callable[[str, str], None]          # (feed, payload)
Resync = Callable[[], Awaitable[None]]


class Bus(ABC):
    """Receives what other processes appended. ``watch`` returns once delivery is active."""

    name = "abstract"

    async def start(self, deliver: Deliver, resync: Resync) -> None:
        self._deliver, self._resync = deliver, resync

    @abstractmethod
    async def watch(self, feed: str) -> None: ...

    @abstractmethod
    async def unwatch(self, feed: str) -> None: ...

    async def publish(self, feed: str, payload: str) -> None:
        """Send an ephemeral notice (presence) to every process watching ``feed``."""

    async def close(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"bus": self.name, "connected": True}


class LocalBus(Bus):
    """One process: the hub fans out in memory; nothing to receive from elsewhere."""

    name = "local"

    async def watch(self, feed: str) -> None:
        return None

    async def unwatch(self, feed: str) -> None:
        return None


class RedisBus(Bus):
    """Redis pub/sub, one channel per feed (sharded pub/sub on a cluster)."""

    name = "redis"

    def __init__(self, storage: Any, confirm_timeout: float = 5.0) -> None:
        from .storage.redis import UNAVAILABLE

        self.storage = storage
        self._unavailable = UNAVAILABLE
        self.confirm_timeout = confirm_timeout
        self.channels: dict[str, str] = {}       # channel -> feed
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._ps: Any = None
        self._ps_client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = False
        self.reconnects = 0
        self.messages = 0

    @property
    def sharded(self) -> bool:
        return bool(self.storage.cluster)

    async def start(self, deliver: Deliver, resync: Resync) -> None:
        await super().start(deliver, resync)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-bus")

    def _new_pubsub(self) -> Any:
        if self.sharded:
            return self.storage.r.pubsub()
        import redis.asyncio as aioredis

        self._ps_client = aioredis.Redis.from_url(self.storage.url, socket_connect_timeout=2.0, socket_keepalive=True)
        return self._ps_client.pubsub()

    async def _subscribe(self, channels: list[str]) -> None:
        if self.sharded:
            for ch in channels:  # each shard channel goes to the node that owns its slot
                await self._ps.ssubscribe(ch)
        else:
            await self._ps.subscribe(*channels)

    async def watch(self, feed: str) -> None:
        ch = self.storage.channel(feed)
        if ch in self.channels:
            return
        self.channels[ch] = feed
        if not self.connected or self._ps is None:
            return  # the reader subscribes everything when it (re)connects, then resyncs
        fut = self._confirm.setdefault(ch, asyncio.get_running_loop().create_future())
        try:
            await self._subscribe([ch])
            await asyncio.wait_for(asyncio.shield(fut), self.confirm_timeout)
        except (asyncio.TimeoutError, *self._unavailable) as exc:
            log.warning("subscribing to %s not confirmed (%r); relying on resync", ch, exc)

    async def unwatch(self, feed: str) -> None:
        ch = self.storage.channel(feed)
        if self.channels.pop(ch, None) is None or self._ps is None or not self.connected:
            return
        try:
            if self.sharded:
                await self._ps.sunsubscribe(ch)
            else:
                await self._ps.unsubscribe(ch)
        except self._unavailable:
            pass

    async def publish(self, feed: str, payload: str) -> None:
        r = self.storage.r
        if r is None:
            return
        try:
            if self.sharded:
                await r.spublish(self.storage.channel(feed), payload)
            else:
                await r.publish(self.storage.channel(feed), payload)
        except self._unavailable:
            pass  # ephemeral: the presence sweep repairs it

    async def _run(self) -> None:
        first = True
        delay = 0.1
        while not self._closing:
            try:
                self._ps = self._new_pubsub()
                channels = list(self.channels)
                if channels:
                    await self._subscribe(channels)
                else:
                    await self._ps.ping() if not self.sharded else None
                self.connected = True
                delay = 0.1
                if not first:
                    self.reconnects += 1
                    log.info("redis bus reconnected; resyncing %d feeds", len(self.channels))
                    await self._resync()
                first = False
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost or refused: back off and reconnect
                if not self._closing:
                    log.warning("redis bus connection lost: %r", exc)
            finally:
                self.connected = False
                await self._drop_pubsub()
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _read(self) -> None:
        get = self._ps.get_sharded_message if self.sharded else self._ps.get_message
        while not self._closing:
            msg = await get(ignore_subscribe_messages=False, timeout=1.0)
            if msg is None:
                continue
            kind = msg["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            ch = msg["channel"]
            ch = ch.decode() if isinstance(ch, bytes) else ch
            if kind in ("subscribe", "ssubscribe"):
                fut = self._confirm.pop(ch, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind in ("message", "smessage"):
                feed = self.channels.get(ch)
                if feed is not None:
                    self.messages += 1
                    data = msg["data"]
                    self._deliver(feed, data.decode() if isinstance(data, bytes) else data)

    async def _drop_pubsub(self) -> None:
        ps, self._ps = self._ps, None
        client, self._ps_client = self._ps_client, None
        for closable in (ps, client):
            if closable is not None:
                try:
                    await closable.aclose()
                except Exception:
                    pass

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._drop_pubsub()

    def health(self) -> dict[str, Any]:
        return {"bus": self.name, "connected": self.connected, "channels": len(self.channels),
                "reconnects": self.reconnects, "messages": self.messages}
