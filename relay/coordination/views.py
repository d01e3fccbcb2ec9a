"""Small helpers the plug-ins' HTTP views share: JSON errors and query parameters."""
from __future__ import annotations

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
