"""Run the relay app on uvicorn inside the current event loop (CLI, demo and tests).

``async with serving(config) as running:`` starts a real server (port 0 picks a free port)
and yields where it listens; leaving the block shuts it down gracefully.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from relay.app import create_app
from relay.core.config import Config
from relay.endpoints.outbox import CLOSE_GOING_AWAY
from relay.endpoints.sse import SseStream
from relay.endpoints.wsdirect import GuardedProtocol
from relay.ops.deadlines import header_deadline_protocol
from relay.server import Relay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    host: str
    port: int
    relay: Relay
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def yjs_url(self) -> str:
        """Base URL of the y-websocket endpoint (``WebsocketProvider(yjs_url, name, doc)``)."""
        return f"ws://{self.host}:{self.port}/yjs"


def uvicorn_config(app: object, config: Config, **overrides: object) -> uvicorn.Config:
    opts: dict[str, object] = {
        "host": config.host, "port": config.port, "log_level": "warning", "lifespan": "on",
        # uvicorn's websockets-sansio protocol (relay.endpoints.wsdirect relies on it for shared-frame
        # fan-out and the outbox for its socket), aborting peers that neither read nor answer pings
        "ws": GuardedProtocol.bounded(config.limits.max_outbound_bytes),
        "ws_max_size": config.limits.max_frame_bytes * 4 + 1024, "ws_ping_interval": config.ws_ping_interval,
        "ws_ping_timeout": config.ws_ping_timeout, "ws_per_message_deflate": config.ws_deflate,
        "timeout_graceful_shutdown": 5,
        "http": header_deadline_protocol(config.limits.header_timeout),  # slowloris: relay.ops.deadlines
    }
    opts.update(overrides)
    return uvicorn.Config(app, **opts)  # type: ignore[arg-type]  # opts' values per key, app any ASGI app


class GracefulServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT first drains the relay (``Relay.drain``: queued publishes
    stored and acknowledged, clients closed with 1001) and only then lets uvicorn stop; a
    second signal stops at once.

    uvicorn (0.55, as installed) routes SIGINT/SIGTERM to :meth:`handle_exit` with ``signal.signal``
    while ``serve`` runs, when it runs on the main thread, restores the previous handlers after,
    and then raises the signals it handled again (so a process stopped by SIGTERM ends as one).
    Off the main thread it installs nothing. ``ready`` is set once startup finished, listening
    or not (``started`` says which)."""

    def __init__(self, config: uvicorn.Config, relay: Relay, drain_timeout: float = 10.0) -> None:
        super().__init__(config)
        self.relay, self.drain_timeout = relay, drain_timeout
        self.ready = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().serve(sockets)
        finally:
            self.ready.set()  # it never got to start up (e.g. its config did not load)

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()  # listening, or failed (uvicorn exits through SystemExit then)

    async def wait_started(self, serving: asyncio.Task[None]) -> None:
        """Return once ``serving`` (the task running :meth:`serve`) listens; raise if it ended first."""
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait((ready, serving), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.started:
            await asyncio.wait((serving,))  # it is ending: surface uvicorn's own error, if any
            serving.result()
            raise RuntimeError("uvicorn stopped before it started listening")

    async def shutdown(self, sockets: Any = None) -> None:
        """End the event streams first (``end`` going_away): they are HTTP responses, which
        uvicorn would wait for until ``timeout_graceful_shutdown`` and then cut."""
        streams = [s for s in list(self.relay.sessions) if isinstance(s, SseStream)]
        await asyncio.gather(*(s.out.aclose(CLOSE_GOING_AWAY, "relay shutting down") for s in streams),
                             return_exceptions=True)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining is None and self.started and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain, sig, frame)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self, sig: int, frame: Any) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: Any) -> None:
        try:
            await self.relay.drain(self.drain_timeout)
        except Exception:
            log.exception("draining the relay failed; stopping anyway")
        finally:
            super().handle_exit(sig, frame)


@contextlib.asynccontextmanager
async def serving(config: Config, relay: Relay | None = None, **overrides: object) -> AsyncIterator[Running]:
    relay = relay or Relay(config)
    app = create_app(config, relay)
    server = GracefulServer(uvicorn_config(app, config, **overrides), relay)
    task = asyncio.get_running_loop().create_task(server.serve())
    await server.wait_started(task)
    sock = server.servers[0].sockets[0]
    host, port = sock.getsockname()[:2]
    try:
        yield Running(host, port, relay, server)
    finally:
        server.should_exit = True
        await task
