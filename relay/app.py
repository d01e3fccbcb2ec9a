"""Starlette assembly: routes for the HTTP API, the native WebSocket and the viewer."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
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
from relay.endpoints.http_errors import FIXED_MESSAGES, HTTP_CODES
from relay.endpoints.http_publish import routes as publish_routes
from relay.endpoints.http_watch import routes as watch_routes
from relay.endpoints.openapi import routes as openapi_routes
from relay.endpoints.sse import routes as sse_routes
from relay.server import Relay
from relay.endpoints.ws import native_endpoint
from relay.endpoints.wsdirect import RawSendMiddleware
from relay.endpoints.yjs import yjs_endpoint

WEB_DIR = Path(web.__file__).resolve().parent

log = logging.getLogger(__name__)


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
        message = FIXED_MESSAGES.get(exc.code, FIXED_MESSAGES["internal"])
    if isinstance(conn, WebSocket):
        await conn.close(1011 if status >= 500 else 1008)
        return None
    headers = {"retry-after": "1"} if status == 503 else None
    return JSONResponse({"error": exc.code, "message": message}, status_code=status, headers=headers)


async def _http_error(conn: HTTPConnection, exc: HTTPException) -> Response | None:
    """Starlette's own refusals (a path no route matches: 404; a method its route does not take:
    405, with ``Allow``) in the API's error shape, codes from relay.endpoints.http_errors."""
    if isinstance(conn, WebSocket):
        await conn.close(1008)
        return None
    code = HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "malformed")
    return JSONResponse({"error": code, "message": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(conn: HTTPConnection, exc: Exception) -> Response:
    """Anything else (a bug): a fixed body; Starlette then re-raises it, and the server logs it
    with its traceback."""
    return JSONResponse({"error": "internal", "message": FIXED_MESSAGES["internal"]}, status_code=500)


def create_app(config: Config | None = None, relay: Relay | None = None) -> Starlette:
    """Build the ASGI app; the relay starts and stops with the app's lifespan."""
    relay = relay or Relay(config or Config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay:
            yield

    web_dir = relay.config.web_dir or WEB_DIR
    # sse_routes first: /feeds/{feed}/stream must win over the /feeds/{feed:path} catch-all
    routes = [*sse_routes, *http_routes, *publish_routes, *coord_routes, *watch_routes, *relay.plugins.routes(),
              *openapi_routes, WebSocketRoute("/ws", native_endpoint),
              WebSocketRoute("/yjs/{name:path}", yjs_endpoint), WebSocketRoute("/fed", fed_endpoint)]
    if web_dir.is_dir():
        routes.append(Mount("/", StaticFiles(directory=web_dir, html=True), name="web"))
    handlers: dict[Any, Any] = {ColonyError: _colony_error, HTTPException: _http_error,  # HTTP and WebSocket
                                Exception: _internal_error}
    # /ws skips the router (relay.endpoints.wsdirect._call_direct): thousands of idle agents each
    # keep one suspended endpoint call, and the router's frames around it would double its size
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(RawSendMiddleware, direct={"/ws": native_endpoint})],
                    exception_handlers=handlers)
    app.state.relay = relay
    return app
