"""HTTP for coordination: where a feed lives (``GET /route``). The namespaces' own views
(``/agents``, ``/trust``) are routes of their relay-side plug-ins (relay/coordination/namespaces/),
mounted with these by ``relay.app``."""
from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.errors import InvalidEvent
from collab.events import check_feed

if TYPE_CHECKING:
    from relay.server import Relay



def _relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay  # set by relay.app.create_app
    return relay


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def route(request: Request) -> Response:
    """``GET /route/{feed}``: which member of the federation homes ``feed``."""
    relay = _relay(request)
    try:
        feed = check_feed(request.path_params["feed"])
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    routing = relay.hub.routing
    home = routing.home(feed)
    return JSONResponse({"feed": feed, "home": {"key": home.key, "url": home.url or None},
                         "self": home.key == routing.me.key, "replicated": routing.replicated(feed)})


routes = [
    Route("/route/{feed:path}", route),
]
