"""Starlette assembly: routes for the HTTP API, the native WebSocket and the viewer."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles

import web

from relay.core.config import Config
from relay.federation.endpoint import fed_endpoint
from relay.endpoints.http import routes as http_routes
from relay.endpoints.http_coord import routes as coord_routes
from relay.server import Relay
from relay.endpoints.ws import native_endpoint
from relay.endpoints.wsdirect import RawSendMiddleware
from relay.endpoints.yjs import yjs_endpoint

WEB_DIR = Path(web.__file__).resolve().parent


def create_app(config: Config | None = None, relay: Relay | None = None) -> Starlette:
    """Build the ASGI app; the relay starts and stops with the app's lifespan."""
    relay = relay or Relay(config or Config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay:
            yield

    web_dir = relay.config.web_dir or WEB_DIR
    routes = [*http_routes, *coord_routes, *relay.plugins.routes(), WebSocketRoute("/ws", native_endpoint),
              WebSocketRoute("/yjs/{name:path}", yjs_endpoint), WebSocketRoute("/fed", fed_endpoint)]
    if web_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_dir, html=True), name="web"))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RawSendMiddleware)])
    app.state.relay = relay
    return app
