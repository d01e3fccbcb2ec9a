"""``agent/`` on the relay's side: the directory's HTTP views (``GET /agents``, ``/agents/{key}``).

The index itself is ``relay/coordination/directory.py`` (one per relay, ``Relay.directory``);
the Yjs endpoint reads agents' names from it too.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.errors import InvalidEvent

from relay.coordination.directory import Directory
from relay.coordination.hooks import Plugin, Site
from relay.coordination.views import (
    HEX64_SCHEMA, UINT_SCHEMA, doc_error, doc_json, doc_path, doc_query, error, query_bool, query_int,
)


def _directory(request: Request) -> Directory:
    site: Site = request.app.state.relay
    return site.directory


async def agents(request: Request) -> Response:
    """``GET /agents?capability=&q=&online=&limit=&offset=``: profiles from the in-memory index."""
    q = request.query_params
    try:
        online = query_bool(q.get("online"), "online")
        limit = query_int(q.get("limit"), 100, 1, 1000, "limit")
        offset = query_int(q.get("offset"), 0, 0, 10**9, "offset")
    except InvalidEvent as exc:
        return error(400, "invalid", str(exc))
    total, page = _directory(request).query(q.get("capability"), q.get("q"), online, limit, offset)
    return JSONResponse({"total": total, "agents": page})


async def agent(request: Request) -> Response:
    """``GET /agents/{key}``: one profile, with whether the agent is online."""
    key = request.path_params["key"]
    directory = _directory(request)
    prof = await directory.lookup(key)
    if prof is None:
        return error(404, "not_found", "no profile for this key")
    return JSONResponse(prof.to_json(key in directory.online_keys()))


class AgentPlugin(Plugin):
    namespace = "agent"
    sdk = "collab.directory"

    @property
    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/agents", agents), Route("/agents/{key}", agent)]

    @property
    def openapi(self) -> dict[str, dict[str, Any]]:
        profile = {"type": "object", "required": ["key", "name", "description", "capabilities", "updated", "online"],
                   "properties": {"key": HEX64_SCHEMA, "name": {"type": "string"}, "description": {"type": "string"},
                                  "capabilities": {"type": "array", "items": {"type": "string"}},
                                  "updated": UINT_SCHEMA, "online": {"type": "boolean"}}}
        page = {"type": "object", "required": ["total", "agents"],
                "properties": {"total": UINT_SCHEMA, "agents": {"type": "array", "items": profile}}}
        return {
            "/agents": {"get": {"operationId": "agents", "summary": "Agent profiles (the directory)", "parameters": [
                doc_query("capability", {"type": "string"}, "only agents offering this capability"),
                doc_query("q", {"type": "string"}, "only agents whose name or description contains this"),
                doc_query("online", {"enum": ["true", "false", "1", "0", "yes", "no"]}, "only agents (not) online"),
                doc_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (100)"),
                doc_query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "skip this many"),
            ], "responses": {"200": doc_json(page, "a page of profiles"),
                             "400": doc_error("a bad query parameter (`invalid`)")}}},
            "/agents/{key}": {"get": {"operationId": "agent", "summary": "One agent's profile", "parameters": [
                doc_path("key", {"type": "string"}, "the agent's key (64 hex)")],
                "responses": {"200": doc_json(profile, "the profile"),
                              "404": doc_error("no profile for this key (`not_found`)")}}},
        }
