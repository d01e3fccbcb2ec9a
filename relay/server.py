"""The relay's lifecycle: storage, identity, hub and sessions, as one async context manager."""
from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from collab.keys import Keypair
from collab.namespaces import Registry, default_registry

from .config import Config
from .feeds import Hub
from .limits import RateLimiter
from .session import CLOSE_GOING_AWAY, Session
from .storage.base import Storage

log = logging.getLogger(__name__)


class Relay:
    """Everything one relay process owns. ``async with Relay(config):`` opens and closes it."""

    def __init__(self, config: Config, storage: Storage | None = None, relay_key: Keypair | None = None,
                 registry: Registry | None = None) -> None:
        self.config = config
        self._storage = storage
        self._relay_key = relay_key
        self.registry = registry or default_registry()
        self.sessions: set[Session] = set()
        self.ip_limiter = RateLimiter(config.limits.events_per_sec_ip, config.limits.burst_ip)
        self.key_limiter = RateLimiter(config.limits.events_per_sec_key, config.limits.burst_key)
        self._hub: Hub | None = None
        self._janitor: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the relay is not running; use `async with Relay(config):` first")
        return self._hub

    @property
    def storage(self) -> Storage:
        return self.hub.storage

    async def __aenter__(self) -> Relay:
        if self._hub is not None:
            raise RuntimeError("this Relay is already running")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        key = self._relay_key or Keypair.load_or_create(self.config.data_dir / "relay.key")
        storage = self._storage
        if storage is None:
            from .storage.sqlite import SqliteStorage

            storage = SqliteStorage(self.config.data_dir, synchronous=self.config.synchronous)
        await storage.open()
        self._hub = Hub(storage, self.registry, key, self.config)
        self._janitor = asyncio.get_running_loop().create_task(self._sweep())
        log.info("relay %s up (storage %s)", key.public_hex[:16], storage.name)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.closing = True
        if self._janitor is not None:
            self._janitor.cancel()
        await asyncio.gather(*(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in list(self.sessions)),
                             return_exceptions=True)
        hub = self.hub
        await hub.close()
        await hub.storage.close()
        self._hub = None

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
