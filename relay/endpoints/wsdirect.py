"""Fan-out without per-connection framing: write one pre-framed message to many sockets.

A document update goes to every client of a room unchanged, so its WebSocket frame (server
frames are unmasked) is the same bytes for all of them. Going through the ASGI ``send`` for
each client costs a coroutine, the framework's state checks and a fresh framing per client;
profiling the ``/yjs`` fan-out showed that to be most of the relay's CPU per delivered
update (docs/benchmarks.md). :class:`DirectWriter` writes the shared frame straight to the
connection's transport instead, but only when that is exactly what the server would have
written itself:

* the server is uvicorn's ``websockets-sansio`` protocol (the one the relay runs), found as
  the owner of the server's ASGI ``send`` callable, which :class:`RawSendMiddleware` (outside
  Starlette's wrappers) leaves in the scope;
* no extension was negotiated (permessage-deflate would change the bytes per connection);
* the connection is open, not closing, and the transport is not paused for back-pressure.

Otherwise ``write`` returns False and the caller uses the normal path (its outbox, which
also handles back-pressure and slow consumers). Frames are written whole, so they never
interleave with the protocol's own pings or close frame.
"""
from __future__ import annotations

from typing import Any

try:  # the protocol the relay runs (relay.ops.runner pins ws="websockets-sansio")
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - both ship with the install
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

SCOPE_KEY = "colony.raw_send"


class RawSendMiddleware:
    """ASGI middleware: remember the server's own ``send`` of each WebSocket in its scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
        await self.app(scope, receive, send)


class DirectWriter:
    """Writes pre-framed messages to one accepted WebSocket's transport when safe."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    @classmethod
    def of(cls, websocket: Any) -> DirectWriter | None:
        """The writer for a Starlette ``WebSocket`` after ``accept()``, or None when unsupported."""
        if WebSocketsSansIOProtocol is None:
            return None
        scope = getattr(websocket, "scope", None)
        proto = getattr(scope.get(SCOPE_KEY), "__self__", None) if isinstance(scope, dict) else None
        if not isinstance(proto, WebSocketsSansIOProtocol):
            return None
        conn = getattr(proto, "conn", None)
        if conn is None or getattr(conn, "extensions", None) or getattr(proto, "transport", None) is None:
            return None
        return cls(proto)

    def write(self, frame: bytes) -> bool:
        p = self._proto
        if p.disconnected or p.close_sent or not p.writable.is_set() or p.conn.state is not State.OPEN:
            return False
        transport = p.transport
        if transport.is_closing():
            return False
        transport.write(frame)
        return True

    def force_close(self, code: int, reason: str) -> bool:
        """Send a close frame now, ahead of anything the outbox could not flush (a client too
        slow to read its backlog when the relay shuts down still learns why it goes)."""
        p = self._proto
        if p.close_sent or p.disconnected or p.transport is None or p.transport.is_closing():
            return False
        p.conn.send_close(code, reason)
        p.transport.write(b"".join(p.conn.data_to_send()))
        p.close_sent = True
        return True
