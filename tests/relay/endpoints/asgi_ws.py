"""A bare WebSocket app on real uvicorn (port 0, the relay's websockets-sansio protocol), for
testing the connection layer without a relay: the test hands in the endpoint coroutine."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from relay.endpoints.wsdirect import RawSendMiddleware

Handler = Callable[[WebSocket], Awaitable[None]]


@contextlib.asynccontextmanager
async def ws_server(handler: Handler, ws: object = "websockets-sansio") -> AsyncIterator[str]:
    """Serve ``handler`` at ``/ws``; yields the ``ws://`` URL. ``ws``: uvicorn's protocol (a
    subclass of websockets-sansio, e.g. relay.endpoints.wsdirect.GuardedProtocol)."""
    app = RawSendMiddleware(Starlette(routes=[WebSocketRoute("/ws", handler)]))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=ws, log_level="warning",
                            lifespan="off", ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:  # as relay.ops.runner.serving: uvicorn has no "started" event
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started listening")
        await asyncio.sleep(0.005)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"ws://{host}:{port}/ws"
    finally:
        server.should_exit = True
        await task
