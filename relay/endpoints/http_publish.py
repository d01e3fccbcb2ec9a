"""``POST /feeds/{feed}/events``: publish one signed event over HTTP (docs/protocol.md 15.2).

The body is exactly an event object (section 5.1). Its signature authenticates it: there is no
hello, and the event is handed to the hub as if a connection authenticated as its author had sent
it (``session_key`` = the event's ``author``, which the signature just proved). So the access
policy, capabilities, namespace rules, the coordinator's gate and federation forwarding apply as
they do to a ``pub`` frame, through the same call (:meth:`relay.core.hub.Hub.submit`, answered
by :func:`relay.endpoints.session.publish_answer`), and the same limiters are charged. The
answer comes only after the durable append: ``200 {"id", "seq", "dup"}``.

The checks run in the order of a ``pub`` frame (section 13.3), the body standing for the
WebSocket message:

1. the body is at most ``max_frame_bytes`` (a ``Content-Length`` above it is refused before a
   byte is read; a body without one is counted while it streams in and refused as soon as it
   passes) and arrives within ``header_timeout`` seconds → ``too_large`` (413) / ``malformed``;
2. it is UTF-8 JSON, parsed strictly (no floats, NaN or duplicate keys) → ``malformed`` (400);
3. the relay is not shutting down → ``unavailable`` (503);
4. the client address's rate (``events_per_sec_ip``), before any signature work → ``rate_limited``;
5. event validation (section 5.3) → ``invalid`` / ``bad_signature`` (400); the event's ``feed``
   is the path's → ``invalid``; its size → ``too_large`` (413);
6. the author's rate (``events_per_sec_key``), unless the event is known to be stored already:
   a duplicate costs only the address's token of step 4, never its author's (a token charged
   for an event that then turns out stored is given back);
7. the hub: idempotency, access, namespace rules, quotas, durable append (section 11.1).

While it waits for the hub's answer (a ``doc/`` publish may wait for a home relay that is out of
reach, section 11.1), the request holds one of its address's ``max_connections_per_ip`` slots,
counted with its WebSockets and streams: an address cannot pile up unanswered publishes without
bound (``too_many_connections``, 429, checked before the body is read).

Nothing is stored on any error. Statuses come from :mod:`relay.endpoints.http_errors`.
"""
from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab import frames
from collab.errors import ColonyError, InvalidEvent, MalformedFrame, RateLimited, TooLarge, Unavailable
from collab.events import Event

from relay.endpoints.http_errors import error_response
from relay.endpoints.session import publish_answer

if TYPE_CHECKING:
    from relay.server import Relay

_DIGITS = re.compile(r"[0-9]{1,20}\Z")


async def read_body(request: Request, limit: int, timeout: float) -> str:
    """The request body as text, read only while it stays within ``limit`` bytes and arrives
    within ``timeout`` seconds; raise TooLarge / MalformedFrame otherwise."""
    length = request.headers.get("content-length")
    if length is not None:
        if not _DIGITS.match(length):
            raise MalformedFrame("Content-Length must be a decimal integer")
        if int(length) > limit:
            raise TooLarge(f"the body is {int(length)} bytes; the limit is {limit} (max_frame_bytes)")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the body is over {limit} bytes (max_frame_bytes)")
                chunks.append(chunk)
    except TimeoutError:
        raise MalformedFrame(f"the body did not arrive within {timeout:g} s") from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("the body must be UTF-8 JSON text") from None


def _id_member(wire: Any) -> str | None:
    """The body's ``id`` member as an error may carry it before the event is valid (13.3)."""
    eid = wire.get("id") if isinstance(wire, dict) else None
    return eid if isinstance(eid, str) and len(eid) <= 64 else None


async def publish(request: Request) -> Response:
    relay: Relay = request.app.state.relay  # set by relay.app.create_app
    limits = relay.config.limits
    ip = request.client.host if request.client else "unknown"
    if not relay.admit(ip):  # a waiting publish holds a connection slot (docstring)
        return error_response("too_many_connections",
                              f"at most {limits.max_connections_per_ip} connections per address")
    try:
        return await _publish(request, relay, ip)
    finally:
        relay.release(ip)


async def _publish(request: Request, relay: Relay, ip: str) -> Response:
    hub, limits = relay.hub, relay.config.limits
    wire: Any = None
    event: Event | None = None
    try:
        wire = frames.parse_value(await read_body(request, limits.max_frame_bytes, limits.header_timeout), "body")
        if hub.draining:
            raise Unavailable("the relay is shutting down; publish again later")
        if not relay.ip_limiter.allow(ip):
            raise RateLimited("too many events from this address; slow down")
        event = Event.from_wire(wire)
        if event.feed != request.path_params["feed"]:
            raise InvalidEvent(f"the event's feed {event.feed} is not the feed of the path")
        if event.size > limits.max_event_bytes:
            raise TooLarge(f"event is {event.size} bytes; the limit is {limits.max_event_bytes}")
        # the author pays only for a new event (a known duplicate cost the address's token only)
        charged = not hub.known(event)
        if charged and not relay.key_limiter.allow(event.author):
            raise RateLimited("too many events from this key; slow down")
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it
    except ColonyError as exc:
        hub.metrics.rejected.inc(exc.code)
        if event is None:
            return error_response(exc.code, str(exc), id=_id_member(wire))
        return error_response(exc.code, str(exc), feed=event.feed, id=event.id)
    fut = hub.submit(event, event.author)  # the signature proved the author: it is the session's key
    await asyncio.wait({fut})  # never cancels the publish, even if this request goes away
    frame, refused = publish_answer(fut, event, None)
    if refused is not None:
        hub.metrics.rejected.inc(refused)
        return error_response(refused, frame["message"], feed=event.feed, id=event.id)
    dup = bool(frame.get("dup"))
    if charged and dup:  # a duplicate after all (found in storage): it costs its author nothing
        relay.key_limiter.refund(event.author)
    return JSONResponse({"id": event.id, "seq": frame["seq"], "dup": dup})


routes = [
    Route("/feeds/{feed:path}/events", publish, methods=["POST"]),
]

__all__ = ["publish", "read_body", "routes"]
