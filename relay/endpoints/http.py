"""Read-only HTTP API: health, limits, feeds, heads and records."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.errors import InvalidEvent
from collab.events import GENESIS, check_feed

from relay.endpoints.http_state import feed_state
from relay.endpoints.metrics import expose

if TYPE_CHECKING:
    from relay.server import Relay

_DECIMAL = re.compile(r"-?[0-9]{1,20}\Z")


def _relay(request: Request) -> Relay:
    relay: Relay = request.app.state.relay  # set by relay.app.create_app
    return relay


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _DECIMAL.match(raw):  # int() would also take " 5", "+5", "1_0" and non-ASCII digits
        raise InvalidEvent(f"{name} must be an integer")
    v = int(raw)
    if not lo <= v <= hi:
        raise InvalidEvent(f"{name} must be between {lo} and {hi}")
    return v


async def health(request: Request) -> Response:
    """Anyone may ask: components by fixed name, counters; no paths, URLs or error text."""
    ok, report = await _relay(request).check_health()
    return JSONResponse(report, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    """Prometheus exposition, text 0.0.4 or OpenMetrics by ``Accept`` (docs/operations.md, Metrics)."""
    relay = _relay(request)
    await relay.check_health()  # colony_component_up as of this scrape
    body, content_type = expose(relay, request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


async def limits(request: Request) -> Response:
    return JSONResponse(_relay(request).config.limits.to_json())


async def relay_info(request: Request) -> Response:
    relay = _relay(request)
    return JSONResponse({"key": relay.hub.relay_key.public_hex, "software": "colony",
                         "namespaces": relay.registry.names(), "limits": relay.config.limits.to_json()})


async def list_feeds(request: Request) -> Response:
    relay = _relay(request)
    try:
        limit = _int_param(request, "limit", 1000, 1, 10000)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    heads = await relay.storage.feeds(request.query_params.get("prefix", ""), limit)
    out = []
    for h in heads:
        rt = relay.hub.feeds.get(h.feed)
        out.append({"feed": h.feed, "seq": h.seq, "head": h.hash, "rtime": h.rtime,
                    "subscribers": len(rt.subs) if rt else 0, "participants": sorted(rt.present) if rt else []})
    return JSONResponse({"feeds": out})


async def _feed_param(request: Request) -> str:
    feed = request.path_params["feed"]
    check_feed(feed)
    fed = _relay(request).federation
    if fed is not None:  # a feed another member homes: mirror it (reads are then local)
        await fed.ensure_mirror(feed)
    return feed


async def feed_info(request: Request) -> Response:
    relay = _relay(request)
    try:
        feed = await _feed_param(request)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    head = await relay.storage.head(feed)
    if head is None:
        return _error(404, "not_found", f"no records in {feed}")
    rt = await relay.hub.runtime(feed)
    return JSONResponse({
        "feed": feed, "seq": rt.seq, "head": rt.head, "rtime": head.rtime, "policy": rt.access.policy,
        "owner": rt.access.owner, "subscribers": len(rt.subs), "participants": sorted(rt.present),
        "state": rt.ns.view(rt.state) if rt.access.policy != "members" else None,
    })


async def feed_events(request: Request) -> Response:
    relay = _relay(request)
    try:
        feed = await _feed_param(request)
        since = _int_param(request, "since", 0, 0, 2**53)
        limit = _int_param(request, "limit", 100, 1, 1000)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    rt = relay.hub.feeds.get(feed)
    if rt is None and await relay.storage.head(feed) is None:  # nothing stored: answer without loading it
        return Response('{"feed":' + json.dumps(feed) + ',"seq":0,"head":"' + GENESIS + '","records":[]}',
                        media_type="application/json")
    if rt is None:
        rt = await relay.hub.runtime(feed)
    if rt.access.policy == "members":
        return _error(403, "unauthorized", "members-only feeds are read over an authenticated WebSocket")
    base = ""
    if since < rt.base_seq:  # compacted (relay/ops/compact.py): the base snapshot stands for 1..base_seq
        stored = await relay.storage.load_base(feed)
        if stored is not None and stored.seq > since:
            since = stored.seq
            base = ',"base":' + json.dumps(stored.snap.to_wire())
    rows = await relay.storage.read(feed, since, limit)
    body = ('{"feed":' + json.dumps(feed) + ',"seq":' + str(rt.seq) + ',"head":' + json.dumps(rt.head) + base
            + ',"records":[' + ",".join(r.data for r in rows) + "]}")
    return Response(body, media_type="application/json")


routes = [
    Route("/health", health),
    Route("/metrics", metrics),
    Route("/limits", limits),
    Route("/relay", relay_info),
    Route("/feeds", list_feeds),
    Route("/feeds/{feed:path}/events", feed_events),  # before /feeds/{feed}: ids contain '/'
    Route("/feeds/{feed:path}/state", feed_state),    # (feed names never end in events or state)
    Route("/feeds/{feed:path}", feed_info),
]
