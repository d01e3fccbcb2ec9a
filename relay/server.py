"""The relay's lifecycle: storage, identity, hub and sessions, as one async context manager.

``Relay.__aenter__`` enters each component into one :class:`contextlib.AsyncExitStack`, in
order: storage, bus, hub, federation, coordinator, directory, the open connections and the
periodic sweepers. Leaving closes them in the reverse order; a component that fails to start
closes the ones already started (no task, thread, file lock or socket is left behind), and the
error propagates.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from types import TracebackType
from typing import Any

from collab.errors import Unavailable
from collab.keys import Keypair
from collab.namespaces import Registry, default_registry

from relay.coordination.coordinator import Coordinator, TrustSettings
from relay.coordination.hooks import Plugins
from relay.coordination.namespaces import default_plugins
from relay.coordination.directory import Directory
from relay.core.bus import Bus, LocalBus
from relay.core.config import Config
from relay.core.hub import Hub
from relay.core.health import ComponentHealth, HealthWatch, federation_view, public_view
from relay.core.sitelimits import SiteLimiter
from relay.core.presence import PresenceStore, RedisPresence
from relay.core.sequencer import Sequencer
from relay.endpoints.connection import Connection
from relay.endpoints.session import CLOSE_GOING_AWAY, Session, Transport
from relay.storage.base import Storage

log = logging.getLogger(__name__)


class Relay:
    """Everything one relay process owns. ``async with Relay(config):`` opens and closes it."""

    def __init__(self, config: Config, storage: Storage | None = None, relay_key: Keypair | None = None,
                 registry: Registry | None = None, plugins: Plugins | None = None) -> None:
        self.config = config
        self._storage = storage
        self._relay_key = relay_key
        self.registry = registry or default_registry(config.limits.doc_pending, engine_checks=False)  # sandbox
        self.plugins = plugins if plugins is not None else default_plugins()  # namespaces' relay-side hooks
        self.sessions: set[Connection] = set()  # every endpoint's open connections (/ws, /yjs): health, drain
        self.per_ip: dict[str, int] = {}  # open /ws and /yjs connections by client IP (max_connections_per_ip)
        # per process, and across the site's processes when the storage is shared (relay.core.sitelimits)
        self.ip_limiter = SiteLimiter(config.limits.events_per_sec_ip, config.limits.burst_ip, "ip")
        self.key_limiter = SiteLimiter(config.limits.events_per_sec_key, config.limits.burst_key, "key")
        self._stack: contextlib.AsyncExitStack | None = None  # the running components (None: stopped)
        self._no_sessions = asyncio.Event()  # set by end_session when the last connection ended
        self._hub: Hub | None = None
        self._coordinator: Coordinator | None = None
        self._directory: Directory | None = None
        self._federation: Any = None
        self.health_watch = HealthWatch()  # last known up/down per component (logs, /metrics)
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
        if self._stack is not None:
            raise RuntimeError("this Relay is already running")
        stack = contextlib.AsyncExitStack()
        self._stack, self.closing = stack, False
        try:
            await self._start(stack)
        except BaseException:
            self.closing, self._stack = True, None
            try:
                await stack.aclose()  # roll back: close what did start, newest first
            except Exception:
                log.exception("closing a half-started relay failed")
            raise
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start each component, registering its close on ``stack`` (closed in reverse order)."""
        stack.callback(self._forget)  # runs last
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.config.relay_key_file or self.config.data_dir / "relay.key"
        key = self._relay_key or Keypair.load_or_create(key_file)
        storage = await stack.enter_async_context(self._storage or self._default_storage())
        bus = self._bus_for(storage)
        presence: PresenceStore = PresenceStore()
        if bus.name == "redis":
            presence = RedisPresence(storage, bus, self.config.presence_ttl)
        handoff = self._sequencer(storage, bus)
        hub = self._hub = Hub(storage, self.registry, key, self.config, bus, presence, handoff=handoff)
        stack.push_async_callback(bus.close)
        await bus.start(hub.on_bus, hub.resync)
        if handoff is not None:  # closed after the hub drained its feeds: then its leases are released
            stack.push_async_callback(handoff.close)
            await handoff.start(hub.runtime, hub.feeds.get)
        stack.push_async_callback(hub.close)  # before the bus and storage close: it saves snapshots
        if self.config.peers:  # before the coordinator: it runs timers only for feeds homed here
            from relay.federation.node import Federation

            federation = self._federation = Federation(hub, self.config)
            stack.push_async_callback(federation.close)
            await federation.start()
        coordinator = self._coordinator = Coordinator(hub, self.config.operators, TrustSettings(
            frozenset(self.config.trust_pretrusted), int(self.config.trust_half_life * 1000)), self.plugins)
        stack.push_async_callback(coordinator.close)
        await coordinator.start()
        directory = self._directory = Directory(hub)
        stack.push_async_callback(directory.close)
        await directory.start()
        stack.push_async_callback(self._close_sessions)
        await stack.enter_async_context(_background(self._sweep, "relay-janitor"))
        if storage.name == "redis":  # one site, many processes: the limits hold site-wide
            from relay.storage.redis import RedisStorage

            if isinstance(storage, RedisStorage):
                for lim in (self.key_limiter, self.ip_limiter):
                    await stack.enter_async_context(_background(partial(lim.run, storage), f"{lim.kind}-limits"))
        if bus.name != "local":
            await stack.enter_async_context(_background(self._sweep_heads, "relay-anti-entropy"))
        log.info("relay %s up (storage %s)", key.public_hex[:16], storage.name)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.closing = True
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _forget(self) -> None:
        self._hub = self._coordinator = self._directory = self._federation = None

    async def _close_sessions(self) -> None:
        await asyncio.gather(*(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in list(self.sessions)),
                             return_exceptions=True)

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
        handoff = self._hub.handoff  # publishes handed to another process of the site: their answers
        if handoff is not None and deadline > loop.time():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(handoff.settled(), deadline - loop.time())
        await asyncio.wait_for(asyncio.gather(
            *(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in list(self.sessions)),
            return_exceptions=True), max(0.5, deadline - loop.time()))
        # let the clients answer the close (the endpoints end then); uvicorn's own shutdown would
        # otherwise cut sockets that still hold unread client data, and a reset may lose our frame
        if self.sessions:
            self._no_sessions.clear()  # no new ones now (closing): end_session sets it at the last
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._no_sessions.wait(), min(2.0, max(0.1, deadline - loop.time())))

    async def check_health(self) -> tuple[bool, dict[str, Any]]:
        """``(ok, report)``: the report is what ``GET /health`` shows anyone (relay.core.health:
        no paths, URLs or exception text; the components by fixed name). Checking also logs each
        component that went down or came back, with its detail, and updates ``/metrics``."""
        hub = self.hub
        try:
            storage = await hub.storage.health()
        except Exception as exc:  # a broken store: down, and the operator learns why in the log
            log.warning("storage health check failed", exc_info=True)
            storage = {"backend": hub.storage.name, "ok": False, "error": repr(exc)}
        if hub.handoff is not None:  # the site's sequencing (relay.core.sequencer): hand-offs, answers
            storage = {**storage, **hub.handoff.health()}
        bus = hub.bus.health()
        components = [ComponentHealth("storage", bool(storage.get("ok")), storage),
                      ComponentHealth("bus", bool(bus.get("connected")), bus)]
        federation = None
        if self._federation is not None:
            fed, federation = federation_view(self._federation)
            components.append(fed)
        self.health_watch.observe(components)
        ok = components[0].up and components[1].up  # a peer out of reach does not make this relay unhealthy
        return ok, {
            "ok": ok, "backend": hub.storage.name, "relay": hub.relay_key.public_hex,
            "components": {c.name: "up" if c.up else "down" for c in components},
            "storage": public_view(storage), "bus": public_view(bus),
            "connections": len(self.sessions), "feeds_loaded": len(hub.feeds), "federation": federation,
        }

    def _default_storage(self) -> Storage:
        if self.config.redis_url:
            from relay.storage.redis import RedisStorage

            return RedisStorage(self.config.redis_url, prefix=self.config.redis_prefix,
                                timeout=self.config.limits.storage_timeout)
        from relay.storage.sqlite import SqliteStorage

        return SqliteStorage(self.config.data_dir, synchronous=self.config.synchronous)

    def _sequencer(self, storage: Storage, bus: Bus) -> Sequencer | None:
        """A Redis site: one process at a time sequences each feed (relay.core.sequencer)."""
        if storage.name != "redis" or bus.name == "local" or self.config.sequencer_lease <= 0:
            return None
        from relay.storage.redis import RedisStorage

        if not isinstance(storage, RedisStorage):
            return None
        return Sequencer(storage.leases, bus, self.config.sequencer_lease)

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
            except Unavailable as exc:  # storage down: publishes already say so; try again later
                log.debug("shared-backend sweep failed: %r", exc)
            except Exception:
                log.warning("shared-backend sweep failed; next round retries", exc_info=True)

    def admit(self, ip: str) -> bool:
        """Count one more WebSocket from ``ip``, unless it has ``max_connections_per_ip`` open
        already (then nothing is counted and the caller refuses it before accepting)."""
        n = self.per_ip.get(ip, 0)
        if n >= self.config.limits.max_connections_per_ip:
            self.hub.metrics.refused.inc("too_many_connections")
            return False
        self.per_ip[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        """A connection :meth:`admit` counted has ended."""
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)

    def new_session(self, transport: Transport, ip: str) -> Session:
        s = Session(self.hub, transport, ip, self.config.limits, self.ip_limiter, self.key_limiter)
        self.sessions.add(s)
        return s

    def end_session(self, s: Connection) -> None:
        s.closed()
        self.sessions.discard(s)
        if not self.sessions:
            self._no_sessions.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(1.0, self.config.idle_feed_seconds / 2)))
            try:
                await self.hub.unload_idle()
            except Exception:
                log.exception("unloading idle feeds failed")


@contextlib.asynccontextmanager
async def _background(run: Callable[[], Coroutine[Any, Any, None]], name: str) -> AsyncIterator[None]:
    """Run ``run()`` as a task while the block lasts; on leaving, cancel it and wait until it ended."""
    task = asyncio.get_running_loop().create_task(run(), name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        while not task.done():  # something it awaited swallowed the cancellation: cancel it again
            log.warning("background task %s ignored its cancellation; cancelling it again", name)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", name, exc_info=task.exception())
