"""The relay's lifecycle: storage, identity, hub and sessions, as one async context manager."""
from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from collab.keys import Keypair
from collab.namespaces import Registry, default_registry

from relay.core.config import Config
from relay.core.bus import Bus, LocalBus
from relay.coordination.coordinator import Coordinator, TrustSettings
from relay.coordination.hooks import Plugins
from relay.coordination.namespaces import default_plugins
from relay.coordination.directory import Directory
from relay.core.hub import Hub
from relay.core.limits import RateLimiter
from relay.core.presence import PresenceStore, RedisPresence
from relay.endpoints.session import CLOSE_GOING_AWAY, Session
from relay.storage.base import Storage

log = logging.getLogger(__name__)


class Relay:
    """Everything one relay process owns. ``async with Relay(config):`` opens and closes it."""

    def __init__(self, config: Config, storage: Storage | None = None, relay_key: Keypair | None = None,
                 registry: Registry | None = None, plugins: Plugins | None = None) -> None:
        self.config = config
        self._storage = storage
        self._relay_key = relay_key
        self.registry = registry or default_registry()
        self.plugins = plugins if plugins is not None else default_plugins()  # namespaces' relay-side hooks
        self.sessions: set[Session] = set()
        self.ip_limiter = RateLimiter(config.limits.events_per_sec_ip, config.limits.burst_ip)
        self.key_limiter = RateLimiter(config.limits.events_per_sec_key, config.limits.burst_key)
        self._hub: Hub | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._anti_entropy: asyncio.Task[None] | None = None
        self._coordinator: Coordinator | None = None
        self._directory: Directory | None = None
        self._federation: Any = None
        self.closing = False

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the relay is not running; use `async with Relay(config):` first")
        return self._hub

    @property
    def coordinator(self) -> Coordinator:
        if self._coordinator is None:
            raise RuntimeError("the relay is not running; use `async with Relay(config):` first")
        return self._coordinator

    @property
    def federation(self) -> Any:
        """The relay's federation membership (relay.federation.node.Federation), or None."""
        return self._federation

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            raise RuntimeError("the relay is not running; use `async with Relay(config):` first")
        return self._directory

    @property
    def storage(self) -> Storage:
        return self.hub.storage

    async def __aenter__(self) -> Relay:
        if self._hub is not None:
            raise RuntimeError("this Relay is already running")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        key = self._relay_key or Keypair.load_or_create(self.config.relay_key_file or self.config.data_dir / "relay.key")
        storage = self._storage or self._default_storage()
        await storage.open()
        bus = self._bus_for(storage)
        presence: PresenceStore = PresenceStore()
        if bus.name == "redis":
            presence = RedisPresence(storage, bus, self.config.presence_ttl)
        self._hub = Hub(storage, self.registry, key, self.config, bus, presence)
        await bus.start(self._hub.on_bus, self._hub.resync)
        if self.config.peers:  # before the coordinator: it runs timers only for feeds homed here
            from relay.federation.node import Federation

            self._federation = Federation(self._hub, self.config)
            await self._federation.start()
        self._coordinator = Coordinator(self._hub, self.config.operators, TrustSettings(
            frozenset(self.config.trust_pretrusted), int(self.config.trust_half_life * 1000)), self.plugins)
        await self._coordinator.start()
        self._directory = Directory(self._hub)
        await self._directory.start()
        loop = asyncio.get_running_loop()
        self._janitor = loop.create_task(self._sweep())
        if bus.name != "local":
            self._anti_entropy = loop.create_task(self._sweep_heads())
        log.info("relay %s up (storage %s)", key.public_hex[:16], storage.name)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.closing = True
        for task in (self._janitor, self._anti_entropy):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in list(self.sessions)),
                             return_exceptions=True)
        if self._federation is not None:
            await self._federation.close()
            self._federation = None
        if self._directory is not None:
            self._directory.close()
            self._directory = None
        if self._coordinator is not None:
            await self._coordinator.close()
            self._coordinator = None
        hub = self.hub
        await hub.close()
        await hub.bus.close()
        await hub.storage.close()
        self._hub = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): refuse new connections and publishes, let every publish
        already queued be stored and acknowledged, then close each client with 1001 (going
        away) after the frames queued for it. Bounded by ``timeout``; ``__aexit__`` follows."""
        if self._hub is None:
            return
        self.closing = True
        self._hub.routes.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # queued publishes finish (a worker may pick up jobs queued meanwhile)
            busy = [rt.task for rt in self._hub.feeds.values() if rt.task is not None and not rt.task.done()]
            left = deadline - loop.time()
            if not busy or left <= 0:
                break
            await asyncio.wait(busy, timeout=left)
        await asyncio.wait_for(asyncio.gather(
            *(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in list(self.sessions)),
            return_exceptions=True), max(0.5, deadline - loop.time()))
        # let the clients answer the close (the endpoints end then); uvicorn's own shutdown would
        # otherwise cut sockets that still hold unread client data, and a reset may lose our frame
        until = loop.time() + min(2.0, max(0.1, deadline - loop.time()))
        while self.sessions and loop.time() < until:
            await asyncio.sleep(0.01)

    def _default_storage(self) -> Storage:
        if self.config.redis_url:
            from relay.storage.redis import RedisStorage

            return RedisStorage(self.config.redis_url, prefix=self.config.redis_prefix)
        from relay.storage.sqlite import SqliteStorage

        return SqliteStorage(self.config.data_dir, synchronous=self.config.synchronous)

    @staticmethod
    def _bus_for(storage: Storage) -> Bus:
        if storage.name == "redis":
            from relay.core.bus import RedisBus

            return RedisBus(storage)
        return LocalBus()

    async def _sweep_heads(self) -> None:
        """Shared backend only: heads (lost pub/sub messages) and presence (crashed processes)."""
        last_presence = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.config.sync_interval, self.config.presence_ttl / 3))
            try:
                await self.hub.sweep_heads()
                if loop.time() - last_presence >= self.config.presence_ttl / 3:
                    last_presence = loop.time()
                    await self.hub.sweep_presence()
            except Exception as exc:  # storage down: publishes already say so; try again later
                log.debug("shared-backend sweep failed: %r", exc)

    def new_session(self, transport: object, ip: str) -> Session:
        s = Session(self.hub, transport, ip, self.config.limits, self.ip_limiter, self.key_limiter)  # type: ignore[arg-type]
        self.sessions.add(s)
        return s

    def end_session(self, s: Session) -> None:
        s.closed()
        self.sessions.discard(s)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(1.0, self.config.idle_feed_seconds / 2)))
            try:
                await self.hub.unload_idle()
            except Exception:
                log.exception("unloading idle feeds failed")
