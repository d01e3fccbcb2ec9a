"""Starlette assembly: routes for the HTTP API, the native WebSocket and the viewer."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

import web
from collab.errors import ColonyError, ProtocolError, Unavailable

from relay.core.config import Config
from relay.federation.endpoint import fed_endpoint
from relay.endpoints.http import routes as http_routes
from relay.endpoints.http_coord import routes as coord_routes
from relay.endpoints.http_watch import routes as watch_routes
from relay.server import Relay
from relay.endpoints.ws import native_endpoint
from relay.endpoints.wsdirect import RawSendMiddleware
from relay.endpoints.yjs import yjs_endpoint

WEB_DIR = Path(web.__file__).resolve().parent

log = logging.getLogger(__name__)

#: what an HTTP caller reads for an error that is not about its request (the detail goes to the log)
_FIXED_MESSAGES = {
    "unavailable": "the relay cannot serve this right now; retry later",
    "home_unreachable": "the relay that homes this feed is out of reach; retry later",
    "busy": "the relay holds as many feeds as it may and none is idle; retry later",
    "internal": "the relay failed to handle this request",
}


async def _colony_error(conn: HTTPConnection, exc: ColonyError) -> Response | None:
    """A ColonyError escaping a handler: a request error shows its message (it is about the
    caller's input); any other shows a fixed text, never paths, peer URLs or exception text."""
    if isinstance(exc, ProtocolError):
        status, message = 400, str(exc)
    else:
        if exc.code == "busy":  # an expected refusal under load, not a fault: no traceback
            log.info("%s %s refused: %s", conn.scope.get("method", "WS"), conn.url.path, exc)
        else:
            log.warning("%s %s failed: %r", conn.scope.get("method", "WS"), conn.url.path, exc, exc_info=exc)
        status = 503 if isinstance(exc, Unavailable) else 500
        message = _FIXED_MESSAGES.get(exc.code, _FIXED_MESSAGES["internal"])
    if isinstance(conn, WebSocket):
        await conn.close(1011 if status >= 500 else 1008)
        return None
    headers = {"retry-after": "1"} if status == 503 else None
    return JSONResponse({"error": exc.code, "message": message}, status_code=status, headers=headers)


async def _internal_error(conn: HTTPConnection, exc: Exception) -> Response:
    """Anything else (a bug): a fixed body; Starlette then re-raises it, and the server logs it
    with its traceback."""
    return JSONResponse({"error": "internal", "message": _FIXED_MESSAGES["internal"]}, status_code=500)


def create_app(config: Config | None = None, relay: Relay | None = None) -> Starlette:
    """Build the ASGI app; the relay starts and stops with the app's lifespan."""
    relay = relay or Relay(config or Config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay:
            yield

    web_dir = relay.config.web_dir or WEB_DIR
    routes = [*http_routes, *coord_routes, *watch_routes, *relay.plugins.routes(),
              WebSocketRoute("/ws", native_endpoint), WebSocketRoute("/yjs/{name:path}", yjs_endpoint),
              WebSocketRoute("/fed", fed_endpoint)]
    if web_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_dir, html=True), name="web"))
    handlers: dict[Any, Any] = {ColonyError: _colony_error, Exception: _internal_error}  # HTTP and WebSocket
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RawSendMiddleware)],
                    exception_handlers=handlers)
    app.state.relay = relay
    return app
