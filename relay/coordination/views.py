"""Small helpers the plug-ins' HTTP views share: JSON errors, query parameters, and the parts
their OpenAPI descriptions are made of (``Plugin.openapi``; relay/endpoints/openapi.py builds
the core's with the same parts)."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from collab.errors import InvalidEvent


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def query_bool(raw: str | None, name: str) -> bool | None:
    """``1/true/yes`` or ``0/false/no`` (case-insensitive); None when absent or empty."""
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidEvent(f"{name} must be true or false")


def query_int(raw: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidEvent(f"{name} must be an integer between {lo} and {hi}")
    return int(raw)


# -- OpenAPI parts ---------------------------------------------------------------------------
ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
HEX64_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
UINT_SCHEMA = {"type": "integer", "minimum": 0}


def doc_json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response with a JSON body."""
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def doc_error(description: str) -> dict[str, Any]:
    """An OpenAPI error response (``{"error", "message"}``)."""
    return doc_json(ERROR_SCHEMA, description)


def doc_query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def doc_path(name: str, schema: dict[str, Any], description: str, example: str | None = None) -> dict[str, Any]:
    """A path parameter."""
    out = {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
    if example is not None:
        out["example"] = example
    return out
