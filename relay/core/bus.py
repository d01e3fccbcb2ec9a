"""Spreading new records between relay processes that share one backend.

The storage append itself publishes each batch (see ``relay.storage.redis``); a bus is the
receiving side. Pub/sub is at-most-once, so the bus is only a fast path: every feed runtime
checks ``seq`` continuity and backfills from storage on a gap, the bus asks every loaded feed
to catch up after it reconnects, and an anti-entropy sweep compares heads periodically.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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

    async def publish(self, feed: str, payload: str) -> None:  # noqa: B027 - a no-op default: one process has no one to tell
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


class _Link:
    """One pub/sub connection and its reader task.

    On a plain Redis the bus has one, to the server (``SUBSCRIBE``). On a cluster it has one
    per primary that owns a watched channel, speaking sharded pub/sub (``SSUBSCRIBE``; a shard
    channel is served only by the node owning its slot). redis-py's ``ClusterPubSub`` is not
    used for that: its ``get_sharded_message()`` returns at once, awaiting nothing, while no
    shard subscription exists (a reader loop then starves the event loop: the relay process
    never gets to listen), and it polls the nodes in turn with the whole timeout each, so one
    idle node delays every other node's messages by up to that timeout.
    """

    def __init__(self, bus: RedisBus, name: str, url: str, sharded: bool) -> None:
        self.bus, self.name, self.url, self.sharded = bus, name, url, sharded
        self.channels: set[str] = set()
        self.connected = False
        self.attempted = False  # a first connection attempt has finished (either way)
        self.first_attempt = asyncio.Event()
        self._ps: Any = None
        self._client: Any = None
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"redis-bus:{name}")

    async def subscribe(self, channels: list[str]) -> None:
        if self.sharded:
            for ch in channels:  # one slot per SSUBSCRIBE: several in one command are CROSSSLOT
                await self._ps.ssubscribe(ch)
        else:
            await self._ps.subscribe(*channels)

    async def unsubscribe(self, ch: str) -> None:
        if self.sharded:
            await self._ps.sunsubscribe(ch)
        else:
            await self._ps.unsubscribe(ch)

    def _connect(self) -> Any:
        import redis.asyncio as aioredis

        extra: dict[str, Any] = {}
        if self.sharded:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # no silent reconnect inside redis-py: it would resubscribe every shard channel in one
            # SSUBSCRIBE (CROSSSLOT) and skip our resync; _run reconnects and resyncs instead
            extra["retry"] = Retry(NoBackoff(), 0)
        return aioredis.Redis.from_url(self.url, socket_connect_timeout=2.0, socket_keepalive=True, **extra)

    async def _run(self) -> None:
        bus = self.bus
        first = True
        delay = 0.1
        while not bus.closing:
            try:
                self._client = self._connect()
                self._ps = self._client.pubsub()
                await self._ps.ping()
                done: set[str] = set()
                while self.channels - done:  # channels watched meanwhile are taken too
                    todo = sorted(self.channels - done)
                    await self.subscribe(todo)
                    done.update(todo)
                self.connected = True  # no await since the last check: watch() subscribes from now on
                self.attempted = True
                self.first_attempt.set()
                delay = 0.1
                if not first:
                    await bus.reconnected(self.name)
                first = False
                await self._read()
            except asyncio.CancelledError:
                raise
            except bus.unavailable as exc:  # connection lost or refused: back off and reconnect
                if not bus.closing:
                    log.warning("redis bus connection %s lost: %r", self.name, exc)
            except Exception:  # anything else is a bug of ours: reconnecting repairs the state
                if not bus.closing:
                    log.exception("redis bus connection %s failed", self.name)
            finally:
                self.connected = False
                self.attempted = True
                self.first_attempt.set()
                await self.drop()
            if not bus.closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _read(self) -> None:
        bus = self.bus
        while not bus.closing:
            msg = await self._ps.get_message(ignore_subscribe_messages=False, timeout=1.0)
            if msg is None:
                continue
            kind = msg["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            ch = msg["channel"]
            ch = ch.decode() if isinstance(ch, bytes) else ch
            if kind in ("subscribe", "ssubscribe"):
                bus.confirmed(ch)
            elif kind in ("message", "smessage"):
                data = msg["data"]
                bus.received(ch, data.decode() if isinstance(data, bytes) else data)
            elif kind == "sunsubscribe" and ch in self.channels:
                # the server dropped us (its slot moved): the anti-entropy sweep carries the feed
                log.warning("redis bus %s: shard channel %s unsubscribed by the server", self.name, ch)

    async def drop(self) -> None:
        """Close this link's connection (its reader task ends or reconnects on its own)."""
        ps, self._ps = self._ps, None
        client, self._client = self._client, None
        for closable in (ps, client):
            if closable is not None:
                try:
                    await closable.aclose()
                except Exception:  # the connection is broken already: nothing left to close
                    log.debug("closing redis bus connection %s failed", self.name, exc_info=True)


class RedisBus(Bus):
    """Redis pub/sub, one channel per feed (sharded pub/sub on a cluster: one connection per
    primary that owns a watched channel; see :class:`_Link`)."""

    name = "redis"

    def __init__(self, storage: Any, confirm_timeout: float = 5.0) -> None:
        from relay.storage.redis import UNAVAILABLE

        self.storage = storage
        self.unavailable = UNAVAILABLE  # the exceptions meaning "redis is unreachable"
        self.confirm_timeout = confirm_timeout
        self.channels: dict[str, str] = {}       # channel -> feed
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._links: dict[str, _Link] = {}       # "" (plain Redis) or a primary's host:port -> link
        self._owner: dict[str, _Link] = {}       # channel -> the link it is subscribed on
        self._closing = False
        self.reconnects = 0
        self.messages = 0

    @property
    def closing(self) -> bool:
        """True once :meth:`close` began: the links stop reconnecting."""
        return self._closing

    @property
    def sharded(self) -> bool:
        return bool(self.storage.cluster)

    @property
    def connected(self) -> bool:
        if not self.sharded:
            link = self._links.get("")
            return link is not None and link.connected
        return all(link.connected for link in self._links.values())  # no links: nothing to miss

    # -- called by the links --------------------------------------------------------------
    def confirmed(self, ch: str) -> None:
        """The server confirmed the subscription of ``ch``: wake the ``watch`` waiting for it."""
        fut = self._confirm.pop(ch, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def received(self, ch: str, payload: str) -> None:
        """A message on ``ch``: deliver it to the feed watched there (if it still is)."""
        feed = self.channels.get(ch)
        if feed is not None:
            self.messages += 1
            self._deliver(feed, payload)

    async def reconnected(self, link: str) -> None:
        """A link reconnected after losing its connection: every loaded feed catches up."""
        self.reconnects += 1
        log.info("redis bus %s reconnected; resyncing %d feeds", link, len(self.channels))
        await self._resync()

    async def start(self, deliver: Deliver, resync: Resync) -> None:
        await super().start(deliver, resync)
        if not self.sharded:
            link = self._links[""] = _Link(self, "", self.storage.url, sharded=False)
            # report healthy only once we listen: wait (bounded) for the first connection
            try:
                await asyncio.wait_for(link.first_attempt.wait(), self.confirm_timeout)
            except TimeoutError:
                log.warning("redis bus not connected yet; it keeps trying")

    def _link_for(self, ch: str) -> _Link:
        if not self.sharded:
            return self._links[""]
        node = self.storage.r.get_node_from_key(ch)  # the primary owning the channel's slot
        link = self._links.get(node.name)
        if link is None:
            parts = urlsplit(self.storage.url)
            netloc = f"{parts.netloc.rpartition('@')[0]}@" if "@" in parts.netloc else ""
            url = urlunsplit((parts.scheme, f"{netloc}{node.host}:{node.port}", "", parts.query, ""))
            link = self._links[node.name] = _Link(self, node.name, url, sharded=True)
        return link

    async def watch(self, feed: str) -> None:
        ch = self.storage.channel(feed)
        if ch in self.channels:
            return
        self.channels[ch] = feed
        link = self._owner[ch] = self._link_for(ch)
        link.channels.add(ch)
        if not link.connected and link.attempted:
            return  # the link subscribes everything when it (re)connects, then resyncs
        fut = self._confirm.setdefault(ch, asyncio.get_running_loop().create_future())
        try:
            if link.connected:
                await link.subscribe([ch])
            await asyncio.wait_for(asyncio.shield(fut), self.confirm_timeout)
        except (TimeoutError, RuntimeError, *self.unavailable) as exc:
            # RuntimeError: redis-py's "unable to perform operation on <TCPTransport closed=True>"
            # when the pub/sub connection died under us (Redis killed); found by the chaos run
            log.warning("subscribing to %s not confirmed (%r); relying on resync", ch, exc)

    async def unwatch(self, feed: str) -> None:
        ch = self.storage.channel(feed)
        link = self._owner.pop(ch, None)
        if self.channels.pop(ch, None) is None or link is None:
            return
        link.channels.discard(ch)
        if not link.connected:
            return
        with contextlib.suppress(*self.unavailable):
            await link.unsubscribe(ch)

    async def publish(self, feed: str, payload: str) -> None:
        r = self.storage.r
        if r is None:
            return
        try:
            if self.sharded:
                await r.spublish(self.storage.channel(feed), payload)
            else:
                await r.publish(self.storage.channel(feed), payload)
        except self.unavailable:
            pass  # ephemeral: the presence sweep repairs it

    async def close(self) -> None:
        self._closing = True
        links = list(self._links.values())
        for link in links:
            link.task.cancel()
        for link in links:
            try:
                await link.task
            except asyncio.CancelledError:
                pass
            except Exception:  # _run handles connection trouble itself: this is a bug
                log.exception("redis bus connection %s failed", link.name)
            await link.drop()

    def health(self) -> dict[str, Any]:
        return {"bus": self.name, "connected": self.connected, "channels": len(self.channels),
                "reconnects": self.reconnects, "messages": self.messages,
                "sharded": self.sharded, "links": len(self._links)}
