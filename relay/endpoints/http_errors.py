"""How the HTTP API answers an error code: one table of statuses (docs/protocol.md section 15.2).

Every error body is ``{"error": code, "message": text}`` (a publish's may add ``feed`` and
``id``, as an ``error`` frame does: section 13.3). The codes are those of ``/ws`` (section 13.1)
plus a few only HTTP has (``not_found``, ``method_not_allowed``, ``compacted``,
``too_many_connections``). 429 and 503 carry ``Retry-After``. A code that is not about the
caller's request (``unavailable``, ``busy``, ``home_unreachable``, ``internal``) has a fixed
message: never paths, peer URLs or exception text.
"""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from collab.frames import sendable

#: the HTTP status of every error code
STATUS: dict[str, int] = {
    "malformed": 400,
    "invalid": 400,
    "bad_signature": 400,       # the event (the request body) fails validation, section 5.3
    "too_large": 413,
    "auth_required": 403,       # not sent for a publish: its signature authenticates it
    "unauthorized": 403,
    "limit_exceeded": 403,
    "late": 409,
    "conflict": 409,
    "stale_epoch": 409,
    "insufficient_funds": 409,
    "rate_limited": 429,
    "too_many_connections": 429,
    "unavailable": 503,
    "busy": 503,
    "home_unreachable": 503,
    "not_found": 404,
    "method_not_allowed": 405,
    "compacted": 410,
    "false_evidence": 400,      # /fed only: never an HTTP answer
    "internal": 500,
}

#: the codes of Starlette's own refusals, by status (relay.app renders them in this shape)
HTTP_CODES = {401: "unauthorized", 403: "unauthorized", 404: "not_found", 405: "method_not_allowed"}

#: seconds a client is asked to wait (``Retry-After``) after a 429 or a 503
RETRY_AFTER = 1

#: what an HTTP caller reads for an error that is not about its request (the detail goes to the log)
FIXED_MESSAGES = {
    "unavailable": "the relay cannot serve this right now; retry later",
    "home_unreachable": "the relay that homes this feed is out of reach; retry later",
    "busy": "the relay holds as many feeds as it may and none is idle; retry later",
    "internal": "the relay failed to handle this request",
}


def status_of(code: str) -> int:
    """The status for ``code`` (an unknown code is a bug: 500)."""
    return STATUS.get(code, 500)


def error_response(code: str, message: str, **extra: Any) -> JSONResponse:
    """The answer for error ``code``: its status, ``Retry-After`` on 429/503, and the fixed
    message where the code has one. ``extra`` members that are None (or a string that cannot be
    sent as UTF-8) are left out."""
    status = status_of(code)
    body: dict[str, Any] = {"error": code, "message": FIXED_MESSAGES.get(code, message)}
    if status == 500:
        body["error"], body["message"] = "internal", FIXED_MESSAGES["internal"]
    body.update({k: v for k, v in extra.items() if v is not None and sendable(v)})
    headers = {"retry-after": str(RETRY_AFTER)} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


__all__ = ["FIXED_MESSAGES", "HTTP_CODES", "RETRY_AFTER", "STATUS", "error_response", "status_of"]
