"""The one outbox of every connection the relay serves (native ``/ws``, ``/yjs``, ``/fed``).

An :class:`Outbox` is a bounded queue of outgoing messages with one writer task, started when
something is queued and ended when the queue is empty (an idle connection holds no task):

* text frames queued during one event-loop turn go out as one message (frames separated by
  ``\\n``, up to ``MAX_COALESCE_BYTES``); binary messages go out one by one, in order;
* a connection whose queue passes ``max_frames``, or whose queue plus the socket's write buffer
  passes ``max_bytes``, is cut as a slow consumer and resumes by ``seq``: its backlog is
  dropped at once; it gets close 4008 when its socket still takes bytes, else the transport
  is aborted (a reset: a close frame it cannot take would only hold the buffer);
* a socket that takes no bytes (paused for back-pressure) for ``unwritable_timeout`` seconds
  is aborted, and so is one whose close frame has not gone out that long after the close:
  what a peer that stops reading holds is bounded in bytes and in time;
* a message several connections get unchanged (:class:`~relay.endpoints.wsdirect.SharedText`,
  or a pre-framed binary message) is written straight to the socket when nothing is queued
  ahead of it (``relay.endpoints.wsdirect``);
* ``close`` flushes what is queued for the codes in ``flush_codes`` (a drain, 1001) and drops
  it otherwise, then closes the transport with the code and reason; ``aclose`` waits for that
  (bounded) and, if the backlog does not go out in time, still sends the close frame.

The transport is anything with ``send_text``, ``send_bytes`` and ``close`` (:class:`Transport`):
a Starlette ``WebSocket`` today, an HTTP stream writing bytes tomorrow. The bounds in bytes and
time need the :class:`Socket` under it (``relay.endpoints.wsdirect.DirectWriter`` for uvicorn's
WebSocket protocol, found by itself); a future HTTP stream passes its own ``sock`` (its
transport's buffer, pause state and abort) and gets the same bounds. Without one, only the
frame cap and close codes apply.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from collab import frames

from relay.core.limits import Limits
from relay.core.memory import release_soon
from relay.core.wsframe import OP_TEXT, SharedText
from relay.core.wsframe import frame as ws_frame
from relay.endpoints.wsdirect import DirectWriter

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_SLOW = 4008
MAX_COALESCE_BYTES = 256 << 10
CLOSE_TIMEOUT = 2.0   # seconds aclose waits for the backlog and the close to go out
SLOW_REASON = "slow consumer: resubscribe with since=<last seq>"
_DEFAULT = Limits()
#: the queue of every outbox that holds nothing (never appended to): an idle connection has no
#: deque of its own (each costs about 600 bytes; docs/benchmarks.md, "Many agents per process")
_IDLE: deque[str | bytes] = deque(maxlen=0)


class Transport(Protocol):
    """Where an outbox writes: one message at a time, then a close with a code and a reason."""

    async def send_text(self, data: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


RELEASE_AFTER = 256 << 10  # bytes of dropped backlog after which freed memory is given back (relay.core.memory)

class Socket(Protocol):
    """The byte stream under a transport: what bounds a peer that stops reading."""

    def buffered(self) -> int:
        """Bytes written to the transport that the kernel has not taken yet."""
    def writable(self) -> bool:
        """The transport takes more bytes now (not paused for back-pressure), or it is gone."""
    async def wait_writable(self, timeout: float) -> bool:
        """True once writable; False if it stayed unwritable for ``timeout`` seconds."""
    def abort(self) -> None:
        """Drop what is buffered and reset the connection now."""
    def abort_unless_drained(self, timeout: float) -> None:
        """Abort in ``timeout`` seconds if bytes written by then (a close frame) are still unsent."""


class Direct(Protocol):
    """Writes a message already framed for the wire straight to the connection's transport when
    that is safe (False: queue it instead). :class:`relay.endpoints.wsdirect.DirectWriter` for a
    WebSocket, ``relay.endpoints.sse.HttpSocket`` (HTTP chunks) for an event stream."""

    frames_ok: bool

    def write(self, frame: bytes) -> bool: ...
    def force_close(self, code: int, reason: str) -> bool: ...


class Outbox:
    """Bounded queue of outgoing messages (text frames and binary messages) with one writer task."""

    def __init__(self, transport: Transport, max_frames: int, *, max_bytes: int = _DEFAULT.max_outbound_bytes,
                 unwritable_timeout: float = _DEFAULT.unwritable_timeout, slow_reason: str = SLOW_REASON,
                 flush_codes: Iterable[int] = (CLOSE_GOING_AWAY,), sock: Socket | None = None,
                 direct: Direct | None = None) -> None:
        self.transport = transport
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.unwritable_timeout = unwritable_timeout
        self.slow_reason = slow_reason
        self.flush_codes = frozenset(flush_codes)
        ws = DirectWriter.of(transport)
        self.sock: Socket | None = sock if sock is not None else ws
        if direct is None:
            direct = ws
        self.direct = direct if direct is not None and direct.frames_ok else None
        self._ws = self.direct if isinstance(self.direct, DirectWriter) else None  # writes WebSocket frames
        self.frames: deque[str | bytes] = _IDLE  # a deque of its own while something is queued
        self.held = 0          # length of what ``frames`` holds (a shared frame counts for each connection)
        self.aborted = False   # cut at the transport: no close frame
        self._binary = 0       # binary messages in ``frames`` (none: text frames only, the fast path)
        self._sending = False  # a message popped from the queue is being sent (maybe paused)
        self._room: asyncio.Event | None = None  # set while the queue has room (made by put_wait)
        self.closed = False
        self.close_code: int | None = None
        self._close_reason = ""
        self.sent_messages = 0
        self._task: asyncio.Task[None] | None = None  # the writer, while there is something to write
        self._gone = False  # the writer is done for good (the connection is closed)
        self._ended: asyncio.Future[None] | None = None  # ``finished``, made when asked for

    @classmethod
    def of(cls, transport: Transport, limits: Limits, **kw: Any) -> Outbox:
        """An outbox with the relay's per-connection limits."""
        return cls(transport, limits.max_outbound_frames, max_bytes=limits.max_outbound_bytes,
                   unwritable_timeout=limits.unwritable_timeout, **kw)

    @property
    def finished(self) -> asyncio.Future[None]:
        """Done once the connection is closed for good and the writer ended (an endpoint that
        has nothing to receive, an SSE stream, waits on it)."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
            if self._gone:
                self._ended.set_result(None)
        return self._ended

    def _kick(self) -> None:
        """Start the writer unless it runs (or ended for good)."""
        if self._task is None and not self._gone:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")

    def _room_set(self) -> None:
        if self._room is not None:
            self._room.set()

    def _pending_bytes(self) -> int:
        """Bytes held for this connection: queued here plus the transport's write buffer."""
        sock = self.sock
        return self.held + (sock.buffered() if sock is not None else 0)

    def _over(self, size: int) -> bool:
        """Queueing ``size`` more would pass a cap (frames, or bytes counting the socket's buffer).
        A connection holding nothing takes any one message, whatever its size (one batch of large
        records may be bigger than the cap: a reader that keeps up is never cut for it)."""
        if len(self.frames) >= self.max_frames:
            return True
        pending = self._pending_bytes()
        return pending > 0 and pending + size > self.max_bytes

    # -- queueing (never waits) ------------------------------------------------------------------
    def put(self, frame: str) -> bool:
        """Queue a text frame (coalesced with its neighbours); False (and the connection is being
        cut) when too far behind, or closed."""
        if self.closed:
            return False
        if self._over(len(frame)):
            self.cut()
            return False
        frames = self.frames
        if frames is _IDLE:
            frames = self.frames = deque()
        frames.append(frame)
        self.held += len(frame)
        if self._task is None:
            self._kick()
        if len(frames) >= self.max_frames >> 1 and self._room is not None:
            self._room.clear()
        return True

    def put_bytes(self, msg: bytes) -> bool:
        """Queue a binary message (sent as one message of its own); False as ``put``."""
        if self.closed:
            return False
        if self._over(len(msg)):
            self.cut()
            return False
        if self.frames is _IDLE:
            self.frames = deque()
        self.frames.append(msg)
        self.held += len(msg)
        self._binary += 1
        if self._task is None:
            self._kick()
        return True

    # put_shared and put_framed are the per-subscriber fan-out path: conditions inline, and the
    # shared frame is only built when it can be used
    def put_shared(self, msg: SharedText) -> bool:
        """Queue a batch of text frames other connections may get too: written straight to the
        socket as one pre-framed message when nothing is queued ahead of it."""
        if (not self.frames and not self._sending and not self.closed and self.direct is not None
                and len(msg.parts) <= self.max_frames and self.direct.write(msg.framed)):
            self.sent_messages += 1
            return True
        ok = True
        for f in msg.parts:
            ok = self.put(f)
        return ok

    def put_framed(self, msg: bytes, framed: bytes) -> bool:
        """Queue a binary message; ``framed`` is ``msg`` already framed (the same bytes for every
        connection), written straight to the socket when nothing is queued ahead of it."""
        if (not self.frames and not self._sending and not self.closed and self.direct is not None
                and self.direct.write(framed)):
            self.sent_messages += 1
            return True
        return self.put_bytes(msg)

    async def put_wait(self, frame: str) -> None:
        """Queue once the queue is below half full and the socket has taken what it was given
        (catch-up: the reader sets the pace, and a backlog never trips the byte cap by itself)."""
        half_bytes = self.max_bytes >> 1
        while not self.closed:
            if len(self.frames) >= self.max_frames >> 1 or self.held >= half_bytes:
                if self._room is None:
                    self._room = asyncio.Event()
                self._room.clear()
                await self._room.wait()
                continue
            sock = self.sock
            if (sock is not None and self._pending_bytes() >= half_bytes
                    and not await sock.wait_writable(self.unwritable_timeout)):
                self.abort(f"the socket took no bytes for {self.unwritable_timeout:g} s")
                return
            break
        self.put(frame)

    # -- closing ---------------------------------------------------------------------------------
    def close(self, code: int, reason: str) -> None:
        """Stop taking messages; the writer flushes (``flush_codes``) or drops the queue, then
        closes the transport."""
        if self.closed:
            return
        self.closed, self.close_code, self._close_reason = True, code, reason
        self._kick()
        self._room_set()

    def cut(self) -> None:
        """Too far behind (a cap passed): drop the backlog now and close with the slow-consumer
        code; abort at the transport if its socket takes no bytes (the close frame could not go out)."""
        self._drop()
        self.close(CLOSE_SLOW, self.slow_reason)
        sock = self.sock
        if sock is not None and not sock.writable():
            self.abort("slow consumer: the socket takes no bytes")

    def abort(self, why: str) -> None:
        """End the connection at the transport now: no close frame, nothing more is written."""
        if self.aborted:
            return
        self.aborted = True
        self._drop()
        release_soon()  # the transport's buffer goes too (relay.core.memory)
        self.close(self.close_code or CLOSE_SLOW, why)
        log.info("aborting a connection: %s", why)
        if self.sock is not None:
            self.sock.abort()

    def _drop(self) -> None:
        if self.held >= RELEASE_AFTER:  # megabytes freed at once: hand the pages back to the OS
            release_soon()
        self.frames.clear()
        self.held = 0
        self._binary = 0

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self.close(code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait (bounded) until the writer is done; if it is not, drop the backlog but still say why."""
        if self._task is None:  # never closed, or done for good
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
            return
        except TimeoutError:
            pass
        except Exception:  # the writer handles its own errors: this is a bug
            log.exception("outbox writer failed")
        self._task.cancel()
        if self.sock is not None and not self.sock.writable():  # nothing would go out: do not hold it
            self.abort("the socket takes no bytes at close")
        elif self.direct is not None and self.close_code is not None:
            self.direct.force_close(self.close_code, self._close_reason[:120])

    # -- the writer ------------------------------------------------------------------------------
    def _coalesce(self, first: str) -> str:
        """``first`` and the text frames queued right behind it, as one message."""
        frames, binary = self.frames, self._binary
        parts, size = [first], len(first) + 1
        while frames and size < MAX_COALESCE_BYTES and not (binary and frames[0].__class__ is bytes):
            f: str = frames.popleft()  # type: ignore[assignment]
            parts.append(f)
            size += len(f) + 1
        self.held -= size - len(first) - len(parts)
        return "\n".join(parts)

    async def _wait_writable(self) -> bool:
        """Before a send: False (and the connection aborted) when the socket took no bytes for
        ``unwritable_timeout`` seconds. Free when it is writable."""
        sock = self.sock
        if sock is None or sock.writable() or await sock.wait_writable(self.unwritable_timeout):
            return True
        self.abort(f"the socket took no bytes for {self.unwritable_timeout:g} s")
        return False

    async def _run(self) -> None:
        idle = False
        try:
            idle = await self._write()  # True: the queue is empty; the next message starts another writer
        finally:
            if not idle:  # closed for good (or cancelled)
                self._gone = True
                if self._ended is not None and not self._ended.done():
                    self._ended.set_result(None)

    async def _write(self) -> bool:
        """Write until the queue is empty (True: the writer may end, the connection stays) or
        the connection is closed for good (False)."""
        transport = self.transport
        send_text, send_bytes = transport.send_text, transport.send_bytes
        frames = self.frames
        half = self.max_frames >> 1
        flush = self.flush_codes
        try:
            while True:
                while frames and (not self.closed or self.close_code in flush):
                    if not await self._wait_writable():
                        return False
                    if not frames:
                        break
                    msg = frames.popleft()
                    self.held -= len(msg)
                    self._sending = True
                    if msg.__class__ is bytes:  # a binary message: on its own
                        self._binary -= 1
                        await send_bytes(msg)
                    else:
                        if frames:
                            msg = self._coalesce(msg)  # type: ignore[arg-type]
                        if len(frames) < half:
                            self._room_set()
                        # a WebSocket's message is framed here and written to its transport when
                        # that is exactly what the server would write (relay.endpoints.wsdirect):
                        # no ASGI send per message; else (or an event stream) the transport's send
                        ws = self._ws
                        if ws is None or not ws.write(ws_frame(msg.encode(), OP_TEXT)):  # type: ignore[union-attr]
                            await send_text(msg)  # type: ignore[arg-type]
                    self._sending = False
                    self.sent_messages += 1
                self._room_set()
                if not await self._wait_writable():  # what went out must drain too, queue or not
                    return False
                if self.closed:
                    self._drop()
                    if self.aborted:
                        return False
                    await transport.close(self.close_code or CLOSE_NORMAL, self._close_reason[:120])
                    if self.sock is not None:
                        self.sock.abort_unless_drained(self.unwritable_timeout)
                    return False
                if not frames:  # nothing more queued (checked with no await before returning)
                    self._task = None
                    self.frames = _IDLE
                    return True
        except asyncio.CancelledError:
            raise
        except Exception:  # the peer went away mid-send: end it for good
            self.closed = True
            self._drop()
            self._room_set()
            if self.aborted:  # we cut it: the send failed because of that
                return False
            log.debug("outbox send failed; closing the connection", exc_info=True)
            try:
                await transport.close(CLOSE_INTERNAL, "send failed")
            except Exception:  # already gone
                log.debug("closing after a failed send failed too", exc_info=True)
            return False


class OutboxSubscriber:
    """The hub-subscriber side every outbox-backed connection shares (``relay.core.fanout.Subscriber``):
    records go to ``self.out``; a subclass sets ``out`` and may filter in ``deliver``."""

    out: Outbox

    def deliver(self, frame: str) -> None:
        self.out.put(frame)

    def deliver_shared(self, msg: SharedText) -> None:
        self.out.put_shared(msg)

    async def deliver_wait(self, frame: str) -> None:
        await self.out.put_wait(frame)

    def send(self, frame: dict[str, Any]) -> None:
        self.out.put(frames.encode(frame))


__all__ = ["CLOSE_GOING_AWAY", "CLOSE_SLOW", "MAX_COALESCE_BYTES", "Direct", "Outbox", "OutboxSubscriber", "Socket",
           "Transport"]
