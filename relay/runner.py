"""Run the relay app on uvicorn inside the current event loop (CLI, demo and tests).

``async with serving(config) as running:`` starts a real server (port 0 picks a free port)
and yields where it listens; leaving the block shuts it down gracefully.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from .app import create_app
from .config import Config
from .server import Relay


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
    opts: dict[str, object] = dict(
        host=config.host, port=config.port, log_level="warning", lifespan="on",
        ws="websockets-sansio",  # relay.wsdirect relies on it for shared-frame fan-out
        ws_max_size=config.limits.max_frame_bytes * 4 + 1024, ws_ping_interval=config.ws_ping_interval,
        ws_ping_timeout=config.ws_ping_timeout, ws_per_message_deflate=config.ws_deflate,
        timeout_graceful_shutdown=5,
    )
    opts.update(overrides)
    return uvicorn.Config(app, **opts)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(config: Config, relay: Relay | None = None, **overrides: object) -> AsyncIterator[Running]:
    relay = relay or Relay(config)
    app = create_app(config, relay)
    server = uvicorn.Server(uvicorn_config(app, config, **overrides))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started listening")
        await asyncio.sleep(0.005)
    sock = server.servers[0].sockets[0]
    host, port = sock.getsockname()[:2]
    try:
        yield Running(host, port, relay, server)
    finally:
        server.should_exit = True
        await task
