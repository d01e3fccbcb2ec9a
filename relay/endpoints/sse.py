"""Server-Sent Events: ``GET /feeds/{feed}/stream`` for clients that cannot hold a WebSocket.

A stream is one more hub subscriber (:class:`SseStream`, a ``relay.core.fanout.Subscriber``):
the fan-out hands it the same frames as a native ``/ws`` subscription (catch-up, ``synced``,
live records, ``unsubbed`` when access is lost) and it turns each into one SSE event, queued
in the connection's :class:`~relay.endpoints.outbox.Outbox` like any other connection's
frames. So the bounds are the outbox's: a stream that falls behind (``max_outbound_frames`` /
``max_outbound_bytes``) is ended as a slow consumer, and a reader that stops reading is reset
after ``unwritable_timeout`` (the outbox's :class:`~relay.endpoints.outbox.Socket` here is
:class:`HttpSocket`, uvicorn's HTTP connection under the response). Streams count against
``max_connections_per_ip`` with the WebSockets, and a comment line goes out every
``stream_keepalive`` seconds. ``docs/protocol.md`` section 15.4 is normative.

The outbox coalesces the texts queued in one turn into one message joined by ``\\n``; each
event text here ends with one ``\\n`` and the transport ends every message with one more, so
every event is followed by exactly one blank line.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from collab import frames
from collab.capability import Capability
from collab.errors import ColonyError, InvalidEvent, Unauthorized
from collab.events import check_feed, now_ms

from relay.core.wsframe import SharedText
from relay.endpoints.http import _DECIMAL, auth_refused, not_readable, readable_feed
from relay.endpoints.outbox import CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_SLOW, Outbox, OutboxSubscriber
from relay.endpoints.wsdirect import abort_transport, bound_send_buffer

if TYPE_CHECKING:
    from relay.server import Relay

log = logging.getLogger(__name__)

RETRY_MS = 2000            # the reconnection delay the stream suggests (the SSE ``retry`` field)
MAX_SINCE = 2**53
END_UNAUTHORIZED = 4403    # outbox close code of a stream ended for lost read access
SLOW_REASON = "slow consumer: reconnect with Last-Event-ID"
#: the ``end`` event's ``reason`` for each way the relay closes a stream's outbox (1000: the
#: client went away, nothing to say)
END_REASONS = {CLOSE_GOING_AWAY: "going_away", CLOSE_SLOW: "slow_consumer", END_UNAUTHORIZED: "unauthorized",
               CLOSE_INTERNAL: "internal"}
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache, no-transform"),
           (b"x-accel-buffering", b"no")]
_SEQ = re.compile(r'\{"seq":([0-9]{1,16}),')


def end_event(reason: str, message: str) -> str:
    return "event: end\ndata: " + frames.encode({"reason": reason, "message": message}) + "\n"


class HttpSocket:
    """The outbox's :class:`~relay.endpoints.outbox.Socket` over the HTTP connection of one
    streaming response (uvicorn's request-response cycle: its transport and flow control)."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    @classmethod
    def of(cls, receive: Receive) -> HttpSocket | None:
        """The socket under the response whose ASGI ``receive`` this is (uvicorn's own, which no
        middleware wraps), or None under another server."""
        cycle = getattr(receive, "__self__", None)
        if getattr(cycle, "transport", None) is None or getattr(cycle, "flow", None) is None:
            return None
        return cls(cycle)

    @property
    def transport(self) -> Any:
        return self._cycle.transport

    def buffered(self) -> int:
        c = self._cycle
        return 0 if c.disconnected else int(c.transport.get_write_buffer_size())

    def writable(self) -> bool:
        c = self._cycle
        return bool(c.disconnected or not c.flow.write_paused)

    async def wait_writable(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._cycle.flow.drain(), timeout)
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        abort_transport(self._cycle)

    # -- the outbox's direct path (relay.endpoints.outbox.Direct) -------------------------------
    frames_ok = True

    def write(self, frame: bytes) -> bool:
        """Write ``frame``, one whole HTTP chunk (``len CRLF body CRLF``), straight to the
        transport while the response is an open chunked body that takes bytes; False otherwise
        (the outbox then queues the body and sends it through ASGI)."""
        c = self._cycle
        if (c.disconnected or c.flow.write_paused or not c.response_started or c.response_complete
                or c.chunked_encoding is not True):
            return False
        transport = c.transport
        if transport.is_closing():
            return False
        transport.write(frame)
        return True

    def force_close(self, code: int, reason: str) -> bool:
        """(The outbox's last resort for a WebSocket.) A stream's end goes through ASGI only."""
        return False

    def abort_unless_drained(self, timeout: float) -> None:
        asyncio.get_running_loop().call_later(timeout, self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        c = self._cycle
        if not c.disconnected and c.transport.get_write_buffer_size() > 0:
            log.info("aborting an event stream whose end did not go out in time")
            abort_transport(c)


class SseTransport:
    """The outbox's transport: each message is a chunk of the response body; the close ends the
    body, with an ``end`` event when the relay ended the stream."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.done = False

    async def send_text(self, data: str) -> None:
        await self._send({"type": "http.response.body", "body": (data + "\n").encode(), "more_body": True})

    async def send_bytes(self, data: bytes) -> None:  # an SSE stream queues text only
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        end = END_REASONS.get(code)
        body = (end_event(end, reason or "") + "\n").encode() if end else b""
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class SseStream(OutboxSubscriber):
    """One event stream: a hub subscriber of one feed whose frames become SSE events."""

    records_only = False  # a doc stream may start from the snapshot, as on /ws

    def __init__(self, relay: Relay, feed: str, key: str | None, cap: Capability | None, transport: SseTransport,
                 sock: HttpSocket | None) -> None:
        self.relay, self.feed, self.key, self.cap = relay, feed, key, cap
        self.reads_any = cap is not None  # a capability holder: read rights checked here (its expiry)
        self.out = Outbox.of(transport, relay.config.limits, slow_reason=SLOW_REASON, sock=sock, direct=sock,
                             flush_codes=(CLOSE_GOING_AWAY, END_UNAUTHORIZED, CLOSE_INTERNAL))
        self.rec_prefix = '{"t":"rec","feed":' + json.dumps(feed) + ',"rec":'
        self._expiry: asyncio.TimerHandle | None = None
        if cap is not None:
            self._watch_expiry()

    # -- frames to events (relay.core.fanout.Subscriber) ---------------------------------------
    def event(self, frame: str) -> str | None:
        """The SSE event for a native frame (docs/protocol.md 15.4), or None (not sent)."""
        if frame.startswith(self.rec_prefix):  # the hot path: the record's text as stored, not parsed
            rec = frame[len(self.rec_prefix):-1]
            m = _SEQ.match(rec)
            seq = int(m.group(1)) if m else json.loads(rec)["seq"]
            return f"event: rec\nid: {seq}\ndata: {rec}\n"
        obj = json.loads(frame)
        t = obj.get("t")
        if t == "rec":  # (every record frame has the prefix above; this is a safety net)
            return f"event: rec\nid: {obj['rec']['seq']}\ndata: " + frames.encode(obj["rec"]) + "\n"
        if t == "synced":
            data = frames.encode({"seq": obj["seq"], "head": obj["head"]})
            return f"event: synced\nid: {obj['seq']}\ndata: {data}\n"
        if t == "snapshot":
            snap = obj["snap"]
            return f"event: snapshot\nid: {snap['seq']}\ndata: " + frames.encode(snap) + "\n"
        if t == "unsubbed":  # the relay ended the subscription (lost access, or a failed backlog)
            if obj.get("reason") == "unauthorized":
                self.end(END_UNAUTHORIZED, "your read access to this feed ended")
            else:
                self.end(CLOSE_INTERNAL, "the relay failed to send this feed; reconnect")
        return None  # presence frames are not sent on a stream

    def deliver(self, frame: str) -> None:
        text = self.event(frame)
        if text is not None:
            self.out.put(text)

    def deliver_shared(self, msg: SharedText) -> None:
        """A batch of record frames every subscriber of the feed gets: rendered as SSE once for
        all the feed's streams (:func:`_rendered`), written straight to the socket as one HTTP
        chunk when nothing is queued ahead of it, else queued as one message."""
        rendered = _rendered(msg, self)
        if rendered is None:
            for frame in msg.parts:
                self.deliver(frame)
        else:
            self.out.put_framed(*rendered)

    async def deliver_wait(self, frame: str) -> None:
        text = self.event(frame)
        if text is not None:
            await self.out.put_wait(text)

    # -- lifecycle -------------------------------------------------------------------------------
    def end(self, code: int, message: str) -> None:
        """The relay ends the stream: what is queued goes out, then the ``end`` event."""
        self.relay.hub.unsubscribe(self, self.feed)
        self.out.close(code, message)

    def _watch_expiry(self) -> None:
        exp = self.cap.exp if self.cap is not None else 0
        delay = (exp - now_ms()) / 1000
        if delay > 0:  # (in steps: event loops cap long timers)
            self._expiry = asyncio.get_running_loop().call_later(min(delay, 86_400.0), self._watch_expiry)
        else:
            self.end(END_UNAUTHORIZED, "the capability has expired")

    async def handle_message(self, message: str | bytes) -> None:
        """(relay.endpoints.connection.Connection) A stream receives nothing."""

    def closed(self) -> None:
        """The client went away (or the stream ended): leave the feed, stop the writer."""
        if self._expiry is not None:
            self._expiry.cancel()
        self.relay.hub.unsubscribe(self, self.feed)
        self.out.close(1000, "closed")


#: the last batch rendered (:func:`_rendered`): the fan-out hands one batch to every stream of
#: its feed in turn, so one slot keeps the work to once per batch
_last: list[Any] = [None, None]


def _rendered(msg: SharedText, stream: SseStream) -> tuple[bytes, bytes] | None:
    """The SSE body of a batch of record frames (its events, each followed by a blank line) and
    the same as one HTTP chunk; None when a part is not a record frame of ``stream``'s feed."""
    if _last[0] is msg:
        return _last[1]
    events = []
    for frame in msg.parts:
        if not frame.startswith(stream.rec_prefix):
            return None
        events.append(stream.event(frame))
    body = ("\n".join(events) + "\n").encode()  # type: ignore[arg-type]
    out = (body, b"%x\r\n%b\r\n" % (len(body), body))
    _last[0], _last[1] = msg, out
    return out


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers or None)


def _since(request: Request) -> int:
    """``Last-Event-ID`` (a reconnecting EventSource's last seq) if present, else ``since``."""
    raw = request.headers.get("last-event-id") or request.query_params.get("since")
    name = "Last-Event-ID" if request.headers.get("last-event-id") else "since"
    if raw is None:
        return 0
    if not _DECIMAL.match(raw) or not 0 <= int(raw) <= MAX_SINCE:
        raise InvalidEvent(f"{name} must be an integer between 0 and {MAX_SINCE}")
    return int(raw)


class StreamEndpoint:
    """The ASGI app of ``GET /feeds/{feed}/stream``: checks (plain JSON errors), then the stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        relay: Relay = request.app.state.relay
        refused = await self._check(request, relay)
        if isinstance(refused, Response):
            await refused(scope, receive, send)
            return
        feed, key, since, cap = refused
        ip = request.client.host if request.client else "unknown"
        if not relay.admit(ip):
            limit = relay.config.limits.max_connections_per_ip
            await _error(429, "too_many_connections", f"at most {limit} connections per address",
                         **{"retry-after": "5"})(scope, receive, send)
            return
        try:
            await self._serve(request, relay, feed, key, since, cap, receive, send)
        finally:
            relay.release(ip)

    async def _check(self, request: Request, relay: Relay) -> Response | tuple[str, str | None, int, Capability | None]:
        if relay.closing:
            return _error(503, "unavailable", "the relay is shutting down; retry later", **{"retry-after": "1"})
        checked = await readable_feed(request)  # 400 bad id or header, 401 bad signature, 403 dm/
        if isinstance(checked, Response):
            return checked
        feed, key = checked
        cap: Capability | None = None
        try:
            since = _since(request)
            token = request.query_params.get("token")
            if token is not None:
                cap = Capability.from_token(token)
                if not cap.allows("read") or cap.feed != feed:
                    raise Unauthorized(f"the capability is not a read grant for {feed}")
        except Unauthorized as exc:
            return _error(403, exc.code, f"capability refused: {exc}")
        except ColonyError as exc:
            return auth_refused(exc)  # 400 invalid, 401 bad_signature
        return feed, key, since, cap

    async def _serve(self, request: Request, relay: Relay, feed: str, key: str | None, since: int,
                     cap: Capability | None, receive: Receive, send: Send) -> None:
        scope = request.scope
        fed = relay.federation
        if fed is not None:  # a feed another member homes: mirror it (its records come from its home)
            await fed.ensure_mirror(check_feed(feed))
        rt = await relay.hub.runtime(feed)  # busy / unavailable: the app's JSON errors (503)
        try:
            if cap is not None:
                cap.check(feed, rt.access.owner, "read", now_ms())
            elif not rt.access.can_read(key):
                relay.hub.release_if_empty(feed)
                await not_readable(feed)(scope, receive, send)
                return
        except Unauthorized as exc:
            relay.hub.release_if_empty(feed)
            await _error(403, exc.code, f"capability refused: {exc}")(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        if scope["method"] == "HEAD":
            relay.hub.release_if_empty(feed)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        sock = HttpSocket.of(receive)
        if sock is not None:
            bound_send_buffer(sock.transport, relay.config.limits.max_outbound_bytes)
        stream = SseStream(relay, feed, key, cap, SseTransport(send), sock)
        relay.sessions.add(stream)  # counted in /health, ended at shutdown like every connection
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            stream.out.put(f"retry: {RETRY_MS}\n")
            await self._subscribe(relay, stream, since)
            keepalive = relay.config.limits.stream_keepalive or None  # 0: none
            while True:
                done, _ = await asyncio.wait((gone, stream.out.finished), timeout=keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
                if done:  # the client went away, or the relay ended the stream
                    break
                stream.out.put(": ka\n")
        finally:
            gone.cancel()
            relay.end_session(stream)
            await stream.out.wait_closed()

    @staticmethod
    async def _subscribe(relay: Relay, stream: SseStream, since: int) -> None:
        try:
            await relay.hub.subscribe(stream, stream.feed, since)
        except Unauthorized:  # access changed since the check: ended like a lost subscription
            stream.end(END_UNAUTHORIZED, "this feed is members-only and your key may not read it")
        except Exception as exc:
            if isinstance(exc, ColonyError) and exc.code in ("busy", "unavailable"):
                log.info("stream of %s refused: %r", stream.feed, exc)
            else:
                log.exception("starting a stream of %s failed", stream.feed)
            stream.end(CLOSE_INTERNAL, "the relay failed to start this stream; reconnect")


async def _disconnected(receive: Receive) -> None:
    """Until the client goes away (what it sends meanwhile is dropped)."""
    msg: Message = {"type": ""}
    while msg["type"] != "http.disconnect":
        msg = await receive()


routes = [Route("/feeds/{feed:path}/stream", StreamEndpoint(), methods=["GET"])]

__all__ = ["END_REASONS", "HttpSocket", "SseStream", "SseTransport", "StreamEndpoint", "routes"]
