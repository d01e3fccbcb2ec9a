"""Read-only HTTP API: health, limits, feeds, heads and records."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab import httpauth
from collab.access import Access
from collab.errors import ColonyError, InvalidEvent
from collab.events import GENESIS, check_feed, now_ms

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


def reader(request: Request) -> str | None:
    """The key a signed request is made by (``collab.httpauth``, docs/protocol.md section 15.1),
    or None for an anonymous one; raise InvalidEvent (400) / BadSignature / Unauthorized (401)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    relay = _relay(request)
    return httpauth.check(header, relay.hub.relay_key.public_hex, request.method, request.url.path, now_ms())


def auth_refused(exc: ColonyError) -> JSONResponse:
    """The answer to a bad ``Authorization`` header: 400 malformed, 401 otherwise."""
    return _error(400 if isinstance(exc, InvalidEvent) else 401, exc.code, str(exc))


def not_readable(feed: str) -> JSONResponse:
    return _error(403, "unauthorized", f"{feed} is private: only its readers may read it, with a signed request")


def fixed_unreadable(relay: Relay, feed: str, key: str | None) -> bool:
    """Whether ``key`` may not read ``feed`` by its namespace's fixed access (``dm/``: only the
    two keys it names), known from the id alone: such a feed is refused before storage is
    asked, so its existence is not shown either."""
    fixed: Access | None = relay.registry.for_feed(feed).initial_access(feed)
    return fixed is not None and not fixed.can_read(key)


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
    relay = _relay(request)
    # what the per-key and per-IP rates apply to: the whole site (a Redis site shares its counts,
    # relay.core.sitelimits) or this process (docs/protocol.md 14)
    scope = "site" if relay.hub.storage.name == "redis" else "process"
    return JSONResponse({**relay.config.limits.to_json(), "rate_scope": scope})


async def relay_info(request: Request) -> Response:
    relay = _relay(request)
    return JSONResponse({"key": relay.hub.relay_key.public_hex, "software": "colony",
                         "namespaces": relay.registry.names(), "limits": relay.config.limits.to_json()})


async def list_feeds(request: Request) -> Response:
    """Feeds with records. A feed of fixed access the caller may not read (``dm/``) is left
    out; a loaded ``members`` feed it may not read shows ``subscribers``/``participants`` null."""
    relay = _relay(request)
    try:
        limit = _int_param(request, "limit", 1000, 1, 10000)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    try:
        key = reader(request)
    except ColonyError as exc:
        return auth_refused(exc)
    heads = await relay.storage.feeds(request.query_params.get("prefix", ""), limit)
    out = []
    for h in heads:
        if fixed_unreadable(relay, h.feed, key):
            continue
        rt = relay.hub.feeds.get(h.feed)
        hidden = rt is not None and not rt.access.can_read(key)
        out.append({"feed": h.feed, "seq": h.seq, "head": h.hash, "rtime": h.rtime,
                    "subscribers": None if hidden else len(rt.subs) if rt else 0,
                    "participants": None if hidden else sorted(rt.present) if rt else []})
    return JSONResponse({"feeds": out})


async def _feed_param(request: Request) -> str:
    feed = request.path_params["feed"]
    check_feed(feed)
    fed = _relay(request).federation
    if fed is not None:  # a feed another member homes: mirror it (reads are then local)
        await fed.ensure_mirror(feed)
    return feed


async def readable_feed(request: Request) -> tuple[str, str | None] | JSONResponse:
    """The request's feed and caller (a key, or None: anonymous), or the answer refusing them: a
    bad id or ``Authorization`` (400/401), or a feed of fixed access the caller may not read (403,
    before storage is asked)."""
    try:
        feed = check_feed(request.path_params["feed"])
        key = reader(request)
    except ColonyError as exc:
        return auth_refused(exc)
    if fixed_unreadable(_relay(request), feed, key):
        return not_readable(feed)
    return feed, key


async def feed_info(request: Request) -> Response:
    """A feed's head and metadata. Its ``owner``, ``subscribers``, ``participants`` and ``state``
    are shown only to a caller that may read it (null otherwise: a ``members`` feed)."""
    relay = _relay(request)
    checked = await readable_feed(request)
    if isinstance(checked, Response):
        return checked
    key = checked[1]
    try:
        feed = await _feed_param(request)
    except InvalidEvent as exc:
        return _error(400, "invalid", str(exc))
    head = await relay.storage.head(feed)
    if head is None:
        return _error(404, "not_found", f"no records in {feed}")
    rt = await relay.hub.runtime(feed)
    shown = rt.access.can_read(key)
    return JSONResponse({
        "feed": feed, "seq": rt.seq, "head": rt.head, "rtime": head.rtime, "policy": rt.access.policy,
        "owner": rt.access.owner if shown else None, "subscribers": len(rt.subs) if shown else None,
        "participants": sorted(rt.present) if shown else None, "state": rt.ns.view(rt.state) if shown else None,
    })


async def feed_events(request: Request) -> Response:
    relay = _relay(request)
    checked = await readable_feed(request)
    if isinstance(checked, Response):
        return checked
    key = checked[1]
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
    if not rt.access.can_read(key):
        return not_readable(feed)
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
