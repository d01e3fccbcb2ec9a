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

The same object is the outbox's view of the socket under the WebSocket
(:class:`relay.endpoints.outbox.Socket`), found for every connection, deflate or not: how many
bytes wait in the transport's write buffer, whether the transport takes more (not paused), and
``abort``, which drops the buffer and resets the TCP connection (``SO_LINGER`` 0) instead of
waiting for a close frame a peer that does not read will never take. :class:`GuardedProtocol`
(the protocol the relay runs) does the same when uvicorn's keep-alive gives up on a peer whose
bytes are not draining.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

from starlette.websockets import WebSocket

from relay.endpoints.wslean import Flag, ReceiveQueue

try:  # the protocol the relay runs (relay.ops.runner pins ws="websockets-sansio")
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - both ship with the install
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

_OPEN = State.OPEN if State is not None else None
SCOPE_KEY = "colony.raw_send"
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() drops unsent bytes and sends RST

log = logging.getLogger(__name__)


class RawSendMiddleware:
    """ASGI middleware: remember the server's own ``send`` of each WebSocket in its scope."""

    def __init__(self, app: Any, direct: dict[str, Any] | None = None) -> None:
        self.app = app
        self.direct = direct or {}  # path -> an endpoint taking a WebSocket, called without the router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
            endpoint = self.direct.get(scope["path"])
            if endpoint is not None:
                await _call_direct(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _call_direct(endpoint: Any, scope: Any, receive: Any, send: Any) -> None:
    """A WebSocket endpoint called straight from the middleware: the router, its exception
    middleware and their wrappers would keep about 3.5 KiB of suspended frames for every open
    connection (docs/benchmarks.md, "Many agents per process"). Such an endpoint handles its
    own errors; anything escaping it is a bug: logged, and the connection closed with 1011."""
    websocket = WebSocket(scope, receive, send)
    try:
        await endpoint(websocket)
    except Exception:  # logged with its traceback
        log.exception("WebSocket endpoint %s failed", scope.get("path"))
        with contextlib.suppress(Exception):
            await websocket.close(1011)


class DirectWriter:
    """Writes pre-framed messages to one accepted WebSocket's transport when safe, and is the
    outbox's handle on the socket (buffered bytes, writability, abort)."""

    __slots__ = ("_closing", "_conn", "_proto", "_writable", "_write", "frames_ok")

    def __init__(self, proto: Any, frames_ok: bool = True) -> None:
        self._proto = proto
        self.frames_ok = frames_ok  # no extension: a shared frame is exactly what the server would send
        # bound once: a room's broadcast calls write for every client (about 0.5 µs saved each)
        transport = proto.transport
        self._write, self._closing = transport.write, transport.is_closing
        self._writable, self._conn = proto.writable.is_set, proto.conn

    @classmethod
    def of(cls, websocket: Any) -> DirectWriter | None:
        """The writer for a Starlette ``WebSocket`` after ``accept()``, or None when the server is
        not the websockets-sansio protocol. ``frames_ok`` is False when an extension was negotiated."""
        if WebSocketsSansIOProtocol is None:
            return None
        scope = getattr(websocket, "scope", None)
        proto = getattr(scope.get(SCOPE_KEY), "__self__", None) if isinstance(scope, dict) else None
        if not isinstance(proto, WebSocketsSansIOProtocol):
            return None
        conn = getattr(proto, "conn", None)
        if conn is None or getattr(proto, "transport", None) is None:
            return None
        return cls(proto, not getattr(conn, "extensions", None))

    def write(self, frame: bytes) -> bool:
        p = self._proto
        if p.disconnected or p.close_sent or not self._writable() or self._conn.state is not _OPEN or self._closing():
            return False
        self._write(frame)
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

    # -- the socket (relay.endpoints.outbox.Socket) ----------------------------------------------
    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel (asyncio's or uvloop's write buffer)."""
        p = self._proto
        return 0 if p.disconnected else p.transport.get_write_buffer_size()

    def writable(self) -> bool:
        """The transport takes more bytes (its buffer is below the high-water mark), or it is gone."""
        return bool(self._proto.writable.is_set())

    async def wait_writable(self, timeout: float) -> bool:
        """True once the transport takes bytes again (or is gone); False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._proto.writable.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        abort_transport(self._proto)

    def abort_unless_drained(self, timeout: float) -> None:
        """In ``timeout`` seconds, abort the connection if it is still there with bytes unsent
        (a close frame the peer never took)."""
        p = self._proto
        p.loop.call_later(timeout, _abort_if_stuck, p)


def abort_transport(proto: Any) -> None:
    """Drop what the transport holds and reset the connection at once (the peer sees a reset)."""
    transport = proto.transport
    if proto.disconnected or transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:  # the kernel drops its send buffer too, instead of retrying it for minutes
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def bound_send_buffer(transport: Any, send_buffer: int) -> None:
    """Cap the kernel's send buffer of ``transport``'s socket at ``send_buffer`` bytes when that is
    below what the kernel would grow it to by itself (bytes it holds for a peer that stops reading
    then count against the same budget as the relay's own queue)."""
    if 0 < send_buffer < _CEILING:
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer // 2)  # Linux doubles it


def _abort_if_stuck(proto: Any) -> None:
    if not proto.disconnected and proto.transport.get_write_buffer_size() > 0:
        log.info("aborting a connection whose close frame did not go out in time (%s)", proto.client)
        abort_transport(proto)


_Base: Any = WebSocketsSansIOProtocol if WebSocketsSansIOProtocol is not None else object


def _autotune_ceiling() -> int:
    """The most the kernel grows a TCP send buffer to by itself (Linux ``tcp_wmem`` max)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


class GuardedProtocol(_Base):
    """uvicorn's websockets-sansio protocol with two bounds for peers that stop reading:

    * a keep-alive timeout on a peer whose bytes are not draining aborts the connection:
      uvicorn's own close would wait for the write buffer to drain, which it never does when
      the peer reads nothing, and hold it for good;
    * when ``send_buffer`` (:meth:`bounded`: the relay's ``max_outbound_bytes``) is below what
      the kernel would grow a socket's send buffer to by itself, the kernel buffer is capped at
      it (``SO_SNDBUF``): bytes the kernel holds for a peer count against the same budget."""

    send_buffer = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # lean stand-ins for asyncio's Queue and Event: an idle connection holds neither deques
        # nor waiter lists (relay.endpoints.wslean)
        self.queue = ReceiveQueue()
        self.writable = Flag()
        self.writable.set()

    @classmethod
    def bounded(cls, send_buffer: int) -> type[GuardedProtocol]:
        return type(cls.__name__, (cls,), {"send_buffer": send_buffer})

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # the handshake's request and response are not needed any more; websockets' parser
            # keeps the request for the connection's life: its headers go at least
            request: Any = getattr(self, "request", None)
            if request is not None:
                request.headers.clear()
            self.request = self.response = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        bound_send_buffer(transport, self.send_buffer)

    def keepalive_timeout(self) -> None:
        stuck = not self.disconnected and self.transport.get_write_buffer_size() > 0
        super().keepalive_timeout()
        if stuck and not self.disconnected:
            log.info("aborting a connection that neither answers pings nor reads (%s)", self.client)
            abort_transport(self)


_CEILING = _autotune_ceiling()
