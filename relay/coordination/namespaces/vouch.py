"""``vouch/`` on the relay's side: trust outcomes, the scores a relay ranks with, ``GET /trust``.

The state machine and the EigenTrust scoring are in ``collab/namespaces/vouch.py``. Other
plug-ins record work outcomes here (:func:`record_outcome`) and rank with the current scores
(:func:`current_scores`); the HTTP views serve every key's score, cached per feed head.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.errors import InvalidEvent
from collab.events import HEX64_RE, Event, check_feed
from collab.trust import TrustParams, scores

from relay.coordination.hooks import Context, Plugin, Site
from relay.coordination.views import HEX64_SCHEMA, UINT_SCHEMA, doc_error, doc_json, doc_path, error

PREFIX = "vouch/"


def trust_params(ctx: Context) -> TrustParams:
    """The site's EigenTrust parameters (pre-trusted keys, half-life)."""
    return TrustParams(pretrusted=ctx.trust.pretrusted, half_life_ms=ctx.trust.half_life_ms)


async def current_scores(ctx: Context, feed: str) -> tuple[int, dict[str, int]]:
    """``(seq, scores)`` of the trust feed ``feed`` as this relay has it now (loading it)."""
    trt = await ctx.hub.runtime(feed)
    return trt.seq, scores(trt.state, trust_params(ctx), relay=ctx.relay)


async def record_outcome(ctx: Context, feed: str, body: dict[str, Any], ts: int) -> None:
    """A relay-signed ``vouch.outcome`` (delivered or slashed work) in the trust feed ``feed``."""
    await ctx.try_publish(Event.create(ctx.hub.relay_key, feed, "vouch.outcome", body, ts=ts))


class VouchPlugin(Plugin):
    namespace = "vouch"
    sdk = "collab.trust"

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, dict[str, int]]] = {}  # GET /trust: feed -> (seq, scores)

    @property
    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/trust/{topic}/{key}", self.trust_of), Route("/trust/{topic}", self.trust)]

    @property
    def openapi(self) -> dict[str, dict[str, Any]]:
        topic = doc_path("topic", {"type": "string"}, "the trust feed is vouch/<topic>", "global")
        key = doc_path("key", {"type": "string"}, "the key (64 hex)")
        bad = doc_error("a bad topic or key (`invalid`)")
        no_route = doc_error("no route matches the path (`not_found`), e.g. a topic with a '/'")
        scale = {"const": 1_000_000_000}
        entry = {"type": "object", "required": ["key", "score"],
                 "properties": {"key": HEX64_SCHEMA, "score": UINT_SCHEMA}}
        table = {"type": "object", "required": ["feed", "seq", "scale", "scores"],
                 "properties": {"feed": {"type": "string"}, "seq": UINT_SCHEMA, "scale": scale,
                                "scores": {"type": "array", "items": entry}}}
        one = {"type": "object", "required": ["feed", "seq", "key", "score", "scale"],
               "properties": {"feed": {"type": "string"}, "seq": UINT_SCHEMA, "key": HEX64_SCHEMA,
                              "score": UINT_SCHEMA, "scale": scale}}
        return {
            "/trust/{topic}": {"get": {
                "operationId": "trust", "summary": "Every key's trust score, highest first", "parameters": [topic],
                "responses": {"200": doc_json(table, "the scores (parts per billion)"), "400": bad,
                              "404": no_route}}},
            "/trust/{topic}/{key}": {"get": {
                "operationId": "trustOf", "summary": "One key's trust score", "parameters": [topic, key],
                "responses": {"200": doc_json(one, "the score"), "400": bad, "404": no_route}}},
        }

    async def _scores(self, site: Site, topic: str) -> tuple[int, dict[str, int]]:
        feed = check_feed(PREFIX + topic)
        hub = site.hub
        rt = hub.feeds.get(feed)
        if rt is None:
            if await hub.storage.head(feed) is None:
                return 0, {}  # nothing to score: no need to load (and watch) an empty feed
            rt = await hub.runtime(feed)
        hit = self._cache.get(feed)
        if hit is not None and hit[0] == rt.seq:
            return hit
        ctx = site.coordinator
        result = (rt.seq, scores(rt.state, trust_params(ctx), relay=ctx.relay))
        self._cache[feed] = result
        return result

    async def trust(self, request: Request) -> Response:
        """``GET /trust/{topic}``: every key's score in parts per billion, highest first."""
        topic = request.path_params["topic"]
        try:
            seq, table = await self._scores(request.app.state.relay, topic)
        except InvalidEvent as exc:
            return error(400, "invalid", str(exc))
        ranked = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
        return JSONResponse({"feed": PREFIX + topic, "seq": seq, "scale": 1_000_000_000,
                             "scores": [{"key": k, "score": v} for k, v in ranked]})

    async def trust_of(self, request: Request) -> Response:
        """``GET /trust/{topic}/{key}``: one key's score."""
        key, topic = request.path_params["key"], request.path_params["topic"]
        if not HEX64_RE.match(key):
            return error(400, "invalid", "key must be 64 lowercase hex chars")
        try:
            seq, table = await self._scores(request.app.state.relay, topic)
        except InvalidEvent as exc:
            return error(400, "invalid", str(exc))
        return JSONResponse({"feed": PREFIX + topic, "seq": seq, "key": key,
                             "score": table.get(key, 0), "scale": 1_000_000_000})
