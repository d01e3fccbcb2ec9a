"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document, built as data.

:data:`PATHS` describes every HTTP route of :mod:`relay.endpoints.http`,
:mod:`relay.endpoints.http_publish`, :mod:`relay.endpoints.http_coord`, this module and the
viewer; each namespace plug-in describes its own routes (``Plugin.openapi``), merged in by
:func:`document`. Adding a route is a local edit: one entry under its path here (or in its
plug-in), and tests/relay/endpoints/test_openapi.py checks that the routes the app serves and
the operations the document lists are the same, both ways. The normative text stays
docs/protocol.md section 15; the WebSocket endpoints are named in ``info.description`` only.
"""
from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from collab.events import FEED_RE, KIND_RE, MAX_TS

from relay.coordination.views import ERROR_SCHEMA as ERROR, HEX64_SCHEMA as HEX64, UINT_SCHEMA as UINT
from relay.coordination.views import doc_error as error, doc_json as json_body, doc_path as path_param
from relay.coordination.views import doc_query as query
from relay.core.limits import Limits

if TYPE_CHECKING:
    from relay.server import Relay

HEX128 = {"type": "string", "pattern": "^[0-9a-f]{128}$"}
FEED_ID = {"type": "string", "pattern": FEED_RE.pattern.replace("\\Z", "$")}  # JSON Schema regexes: no \Z
KIND = {"type": "string", "pattern": KIND_RE.pattern.replace("\\Z", "$")}
INT53 = {"type": "integer", "minimum": 0, "maximum": MAX_TS}
NULLABLE_STR = {"type": ["string", "null"]}

#: a signed event of the test vectors (tests/vectors/events.json, ``doc_update_1``): the
#: example a publish is documented (and fuzzed) with
EXAMPLE_EVENT = {
    "feed": "doc/notes", "kind": "doc.update",
    "author": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "ts": 1700000000000, "ctx": 0, "body": {"update": "AQEBAAQBBHRleHQFaGVsbG8A"},
    "sig": "deb95216d53290cc6c31904a308db5b2af41ea54749bf9e5deeb4e938d3701d4"
           "dcf71a48cb6af1719689ec145023502acb059979bb368366555b6ad60b9bdc01",
    "id": "be006720525c14297ea87f6aab0fbcfdf71749b9e855fc9d135e412aaf233b45",
}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}


def retry_error(description: str) -> dict[str, Any]:
    return json_body(ERROR, description, RETRY_AFTER)


FEED = path_param("feed", {"type": "string"}, "a feed id (docs/protocol.md 4.1), its '/' verbatim", "doc/notes")
AUTH = {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "a signed request (docs/protocol.md 15.1): `Colony key=…,ts=…,sig=…`; else anonymous"}
UNAVAILABLE = retry_error("storage cannot answer now (`unavailable`), or the relay holds as many feeds as it may "
                          "(`busy`)")
BAD_REQUEST = error("a bad feed id or query parameter (`invalid`), or a malformed `Authorization` header")
BAD_AUTH = error("a signed request whose signature does not verify (`bad_signature`) or is out of its time window "
                 "(`unauthorized`)")
PRIVATE = error("a feed the caller may not read (`unauthorized`)")
NO_ROUTE = error("no route matches the path (`not_found`), e.g. a parameter with a line break")


def _limits_schema() -> dict[str, Any]:
    props: dict[str, Any] = {f.name: {"type": "integer" if f.type in ("int", int) else "number"}
                             for f in fields(Limits)}
    return {"type": "object", "required": sorted(props), "properties": props}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string", "description": "the machine code (docs/protocol.md 13.1, 15)"},
                       "message": {"type": "string"},
                       "feed": {"type": "string"}, "id": {"type": "string"}},
    },
    "Event": {
        "type": "object", "additionalProperties": False,
        "required": ["feed", "kind", "author", "ts", "ctx", "body", "sig", "id"],
        "properties": {"feed": FEED_ID, "kind": KIND, "author": HEX64, "ts": INT53, "ctx": INT53, "body": {},
                       "sig": HEX128, "id": HEX64},
        "description": "a signed event (docs/protocol.md section 5)",
    },
    "Record": {
        "type": "object", "required": ["seq", "prev", "rtime", "relay", "rsig", "event"],
        "properties": {"seq": UINT, "prev": HEX64, "rtime": UINT, "relay": HEX64, "rsig": HEX128,
                       "event": {"$ref": "#/components/schemas/Event"}},
    },
    "Snapshot": {
        "type": "object", "required": ["feed", "seq", "head", "state", "relay", "rsig"],
        "properties": {"feed": {"type": "string"}, "seq": UINT, "head": HEX64, "state": {"type": "string"},
                       "relay": HEX64, "rsig": HEX128},
    },
    "Limits": _limits_schema(),
}

HEALTH = {
    "type": "object",
    "required": ["ok", "backend", "relay", "components", "storage", "bus", "connections", "feeds_loaded", "federation"],
    "properties": {
        "ok": {"type": "boolean"}, "backend": {"type": "string"}, "relay": HEX64,
        "components": {"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
        "storage": {"type": "object"}, "bus": {"type": "object"}, "connections": UINT, "feeds_loaded": UINT,
        "federation": {"type": ["object", "null"]},
    },
}
SUMMARY_PROPS: dict[str, Any] = {
    "feed": {"type": "string"}, "seq": UINT, "head": HEX64, "rtime": UINT,
    "subscribers": {"type": ["integer", "null"]}, "participants": {"type": ["array", "null"], "items": HEX64},
}
FEED_SUMMARY = {"type": "object", "required": sorted(SUMMARY_PROPS), "properties": SUMMARY_PROPS}
FEED_INFO = {
    "type": "object",
    "required": ["feed", "seq", "head", "rtime", "policy", "owner", "subscribers", "participants", "state"],
    "properties": {**SUMMARY_PROPS, "policy": {"enum": ["open", "signed", "members"]},
                   "owner": {"type": ["string", "null"]}, "state": {}},
}
RECORDS = {
    "type": "object", "required": ["feed", "seq", "head", "records"],
    "properties": {"feed": {"type": "string"}, "seq": UINT, "head": HEX64,
                   "base": {"$ref": "#/components/schemas/Snapshot"},
                   "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}},
}
STATE = {
    "type": "object", "required": ["feed", "seq", "at", "hash", "state"],
    "properties": {"feed": {"type": "string"}, "seq": UINT, "at": UINT, "hash": HEX64, "state": {}},
}
PUBLISHED = {
    "type": "object", "required": ["id", "seq", "dup"], "additionalProperties": False,
    "properties": {"id": HEX64, "seq": {"type": "integer", "minimum": 1}, "dup": {"type": "boolean"}},
}
ROUTE = {
    "type": "object", "required": ["feed", "home", "self", "replicated"],
    "properties": {"feed": {"type": "string"}, "self": {"type": "boolean"}, "replicated": {"type": "boolean"},
                   "home": {"type": "object", "required": ["key", "url"],
                            "properties": {"key": HEX64, "url": NULLABLE_STR}}},
}


def _get(summary: str, responses: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
         op: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op, "summary": summary, "responses": responses}
    if parameters:
        out["parameters"] = parameters
    return out


#: every HTTP route of the relay's core: path -> method -> operation
PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": _get("Health of the relay's components", {
        "200": json_body(HEALTH, "healthy"), "503": json_body(HEALTH, "storage or bus down")}, op="health")},
    "/metrics": {"get": _get("Prometheus metrics (text 0.0.4, or OpenMetrics by Accept)", {
        "200": {"description": "the exposition", "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}}}},
    }, op="metrics")},
    "/limits": {"get": _get("The limits this relay enforces (docs/protocol.md 14)", {
        "200": json_body({"allOf": [{"$ref": "#/components/schemas/Limits"},
                                    {"type": "object", "required": ["rate_scope"],
                                     "properties": {"rate_scope": {"enum": ["site", "process"]}}}]}, "the limits"),
    }, op="limits")},
    "/relay": {"get": _get("The relay's key, software, namespaces and limits", {
        "200": json_body({"type": "object", "required": ["key", "software", "namespaces", "limits"],
                          "properties": {"key": HEX64, "software": {"type": "string"},
                                         "namespaces": {"type": "array", "items": {"type": "string"}},
                                         "limits": {"$ref": "#/components/schemas/Limits"}}}, "about this relay"),
    }, op="relay")},
    "/feeds": {"get": _get("Feeds with records, sorted by id", {
        "200": json_body({"type": "object", "required": ["feeds"],
                          "properties": {"feeds": {"type": "array", "items": FEED_SUMMARY}}}, "the feeds"),
        "400": BAD_REQUEST, "401": BAD_AUTH, "503": UNAVAILABLE,
    }, [query("prefix", {"type": "string"}, "only ids starting with this"),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most this many (default 1000)"),
        AUTH], op="listFeeds")},
    "/feeds/{feed}": {"get": _get("A feed's head, access and derived state", {
        "200": json_body(FEED_INFO, "the feed"), "400": BAD_REQUEST, "401": BAD_AUTH, "403": PRIVATE,
        "404": error("no records in the feed (`not_found`)"), "503": UNAVAILABLE,
    }, [FEED, AUTH], op="feedInfo")},
    "/feeds/{feed}/events": {
        "get": _get("A page of the feed's records after `since`", {
            "200": json_body(RECORDS, "the records (and a base snapshot for a compacted feed)"),
            "400": BAD_REQUEST, "401": BAD_AUTH, "403": PRIVATE, "404": NO_ROUTE, "503": UNAVAILABLE,
        }, [FEED, query("since", {"type": "integer", "minimum": 0, "maximum": 2**53}, "records after this seq"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (default 100)"),
            AUTH], op="feedEvents"),
        "post": {
            "operationId": "publish",
            "summary": "Publish one signed event; answered after the durable append (docs/protocol.md 15.2)",
            "parameters": [FEED],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Event"}, "example": EXAMPLE_EVENT}}},
            "responses": {
                "200": json_body(PUBLISHED, "stored (or stored before: `dup` true)"),
                "400": error("`malformed`, `invalid` or `bad_signature`"),
                "403": error("`unauthorized` (access policy, capability, relay-owned feed) or `limit_exceeded`"),
                "404": NO_ROUTE,
                "409": error("`conflict`, `late` or `insufficient_funds` (the feed's state refuses it)"),
                "413": error("`too_large`: the body, the event or the document is over its limit"),
                "429": retry_error("`rate_limited`"),
                "503": retry_error("`unavailable`, `busy` or `home_unreachable`: nothing was stored; retry"),
            },
        },
    },
    "/feeds/{feed}/state": {"get": _get("The feed's derived state as it was after record `at`", {
        "200": json_body(STATE, "the state"), "400": BAD_REQUEST, "401": BAD_AUTH, "403": PRIVATE,
        "404": error("no records (`not_found`)"), "410": error("`at` is in the compacted part (`compacted`)"),
        "413": error("answering would replay too many records (`too_large`)"), "503": UNAVAILABLE,
    }, [FEED, query("at", {"type": "integer", "minimum": 0, "maximum": 2**53}, "the seq (default: the head)"),
        AUTH], op="feedState")},
    "/feeds/{feed}/stream": {"get": _get(
        "The feed's records as Server-Sent Events: catch-up, `synced`, then live records (docs/protocol.md 15.4)", {
            "200": {"description": "an endless `text/event-stream`: `retry`, then events `snapshot`?, `rec`… "
                                   "(each with `id` = its seq), `synced`, live `rec`, keep-alive comments, and "
                                   "`end` (`{reason, message}`) when the relay ends the stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": error("a bad feed id, `since`, `Last-Event-ID`, token or `Authorization` header (`invalid`)"),
            "401": BAD_AUTH, "403": PRIVATE, "404": NO_ROUTE,
            "429": retry_error("the address holds `max_connections_per_ip` connections (`too_many_connections`)"),
            "503": UNAVAILABLE,
        }, [FEED, query("since", {"type": "integer", "minimum": 0, "maximum": 2**53}, "records after this seq"),
            query("token", {"type": "string", "maxLength": 4096}, "a read capability (docs/protocol.md 20)"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]{0,16}$"},
             "description": "the seq of the last event processed; wins over `since` when not empty"},
            AUTH], op="feedStream")},
    "/watch": {"get": _get(
        "Announcements of every new record of the feeds under a prefix, as Server-Sent Events (docs/protocol.md 15.5)",
        {
            "200": {"description": "an endless `text/event-stream`: `: watching`, then `announce` events "
                                   "(`{feed, seq, head, kind, rtime}`) and keep-alive comments",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": error("`prefix` missing or not a watch prefix, or a malformed `Authorization` header (`invalid`)"),
            "401": BAD_AUTH, "403": error("`max_watches` is 0 (`limit_exceeded`)"),
            "429": retry_error("the address holds `max_connections_per_ip` connections (`too_many_connections`)"),
            "503": retry_error("the relay is shutting down (`unavailable`)"),
        }, [{"name": "prefix", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 233},
             "description": "a start of a feed id (docs/protocol.md 9.4); empty: every feed the caller may read"},
            AUTH], op="watch")},
    "/route/{feed}": {"get": _get("Which member of the federation homes the feed", {
        "200": json_body(ROUTE, "the home"), "400": BAD_REQUEST, "404": NO_ROUTE,
    }, [FEED], op="route")},
    "/openapi.json": {"get": _get("This document", {
        "200": json_body({"type": "object"}, "the OpenAPI document")}, op="openapi")},
    "/": {"get": _get("The viewer (static files under `/`)", {
        "200": {"description": "the viewer's page", "content": {"text/html": {"schema": {"type": "string"}}}},
    }, op="viewer")},
}

DESCRIPTION = (
    "Colony relay HTTP API (docs/protocol.md section 15 is normative). Errors are "
    "`{\"error\": code, \"message\": text}`; 429 and 503 carry `Retry-After`. Not HTTP routes, so "
    "not listed: the WebSocket endpoints `/ws` (native protocol, section 8), `/yjs/{name}` (y-websocket, "
    "section 21) and `/fed` (federation links, docs/federation.md)."
)


def document(relay: Relay, viewer: bool = True) -> dict[str, Any]:
    """The OpenAPI document of ``relay``'s app: the core's paths (``/``, the viewer, only if it
    is served) and its plug-ins' paths."""
    paths = {path: dict(ops) for path, ops in PATHS.items() if viewer or path != "/"}
    for plugin in relay.plugins:
        for path, ops in plugin.openapi.items():
            paths.setdefault(path, {}).update(ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Colony relay", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


async def openapi(request: Request) -> Response:
    body: bytes | None = getattr(request.app.state, "openapi", None)
    if body is None:  # built once per app: the routes do not change while it runs
        viewer = any(isinstance(route, Mount) for route in request.app.routes)
        body = request.app.state.openapi = bytes(JSONResponse(document(request.app.state.relay, viewer)).body)
    return Response(body, media_type="application/json")


routes = [
    Route("/openapi.json", openapi),
]

__all__ = ["PATHS", "SCHEMAS", "document", "routes"]
