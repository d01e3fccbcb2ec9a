"""HTTP for coordination: the agent directory and trust scores (docs/coordination.md)."""
from __future__ import annotations


from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.errors import InvalidEvent
from collab.events import HEX64_RE, check_feed

from relay.server import Relay


def _relay(request: Request) -> Relay:
    return request.app.state.relay  # type: ignore[no-any-return]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _bool(raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidEvent("online must be true or false")


def _int(raw: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidEvent(f"{name} must be an integer between {lo} and {hi}")
    return int(raw)


async def agents(request: Request) -> Response:
    """``GET /agents?capability=&q=&online=&limit=&offset=``: profiles from the in-memory index."""
    q = request.query_params
    try:
        online = _bool(q.get("online"))
        limit = _int(q.get("limit"), 100, 1, 1000, "limit")
        offset = _int(q.get("offset"), 0, 0, 10**9, "offset")
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    total, page = _relay(request).directory.query(q.get("capability"), q.get("q"), online, limit, offset)
    return JSONResponse({"total": total, "agents": page})


async def agent(request: Request) -> Response:
    key = request.path_params["key"]
    relay = _relay(request)
    prof = await relay.directory.lookup(key)
    if prof is None:
        return _error(404, "not_found", "no profile for this key")
    return JSONResponse(prof.to_json(key in relay.directory.online_keys()))


async def _scores(relay: Relay, topic: str) -> tuple[int, dict[str, int]]:
    from collab.trust import scores

    feed = check_feed("vouch/" + topic)
    rt = relay.hub.feeds.get(feed)
    if rt is None:
        if await relay.hub.storage.head(feed) is None:
            return 0, {}  # nothing to score: no need to load (and watch) an empty feed
        rt = await relay.hub.runtime(feed)
    cache = relay.trust_cache
    hit = cache.get(feed)
    if hit is not None and hit[0] == rt.seq:
        return hit
    result = (rt.seq, scores(rt.state, relay.coordinator.trust_params(), relay=relay.hub.relay_key.public_hex))
    cache[feed] = result
    return result


async def trust(request: Request) -> Response:
    """``GET /trust/{topic}``: every key's score in parts per billion, highest first."""
    try:
        seq, table = await _scores(_relay(request), request.path_params["topic"])
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    ranked = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
    return JSONResponse({"feed": "vouch/" + request.path_params["topic"], "seq": seq, "scale": 1_000_000_000,
                         "scores": [{"key": k, "score": v} for k, v in ranked]})


async def trust_of(request: Request) -> Response:
    key = request.path_params["key"]
    if not HEX64_RE.match(key):
        return _error(400, "invalid", "key must be 64 lowercase hex chars")
    try:
        seq, table = await _scores(_relay(request), request.path_params["topic"])
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    return JSONResponse({"feed": "vouch/" + request.path_params["topic"], "seq": seq, "key": key,
                         "score": table.get(key, 0), "scale": 1_000_000_000})


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
    Route("/agents", agents),
    Route("/agents/{key}", agent),
    Route("/trust/{topic}/{key}", trust_of),
    Route("/trust/{topic}", trust),
]
