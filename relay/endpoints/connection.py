"""The one connection layer: what every endpoint's connection is, and its one receive pump.

A :class:`Connection` (a native ``/ws`` session, a ``/yjs`` connection, a ``/fed`` peer) is
protocol state fed one received message at a time (``handle_message``) that writes into its
:class:`~relay.endpoints.outbox.Outbox` (``out``); ``closed`` tells it the socket is gone.
:func:`receive_pump` moves messages from a WebSocket into a connection until either side ends
it; when the relay ended it (the outbox is closed), the pump waits for our close frame to go
out and then completes the closing handshake (:func:`await_peer_close`). Messages a client
queued up are handled without the loop getting a turn (receiving one does not wait), so after
:data:`PUMP_SLICE` seconds of handling the pump yields: one connection's backlog of large
messages (each costing signature checks and parsing) cannot hold up everyone else's.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.endpoints.outbox import CLOSE_INTERNAL, Outbox

log = logging.getLogger(__name__)

PEER_CLOSE_TIMEOUT = 2.0
CLOSE_NO_FIRST_MESSAGE = 4408  # nothing received within first_message_timeout of the handshake
PUMP_SLICE = 0.002  # seconds of message handling before the receive pump lets other tasks run


class Connection(Protocol):
    """What the pump, the relay's drain and the hub's fan-out need of a connection."""

    @property
    def out(self) -> Outbox: ...

    async def handle_message(self, message: str | bytes) -> None:
        """One received WebSocket message (text or binary), in arrival order."""

    def closed(self) -> None:
        """The socket is gone: leave every feed and stop the writer."""


async def receive_pump(websocket: WebSocket, conn: Connection, what: str,
                       first_message_timeout: float | None = None) -> None:
    """Hand ``conn`` every message of ``websocket`` until the client or the relay ends it.

    With ``first_message_timeout``, a client that sends nothing that long after the handshake
    is closed with 4408 (a connection held open for nothing). Errors of the socket end the pump
    quietly; anything else is a bug, logged (``what`` names the connection) and answered with
    close 1011. The caller ends the connection afterwards."""
    out = conn.out
    clock = time.perf_counter
    try:
        if first_message_timeout is not None and not out.closed:
            try:
                async with asyncio.timeout(first_message_timeout):
                    msg = await websocket.receive()
            except TimeoutError:
                log.info("%s sent nothing within %ss; closing it", what, first_message_timeout)
                out.close(CLOSE_NO_FIRST_MESSAGE, "no message within the handshake deadline")
            else:
                if msg["type"] == "websocket.disconnect":
                    return
                text = msg.get("text")
                await conn.handle_message(text if text is not None else (msg.get("bytes") or b""))
                del msg, text  # not kept while the connection waits for its next message
        turn = clock()
        while not out.closed:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            await conn.handle_message(text if text is not None else (msg.get("bytes") or b""))
            del msg, text  # an idle connection keeps no copy of its last message
            if clock() - turn > PUMP_SLICE:
                await asyncio.sleep(0)  # let the others run (queued messages do not wait in receive)
                turn = clock()
        await out.wait_closed()  # our close frame is out: wait for the client's answer
        await await_peer_close(websocket)
    except WebSocketDisconnect:
        pass
    except Exception:  # logged with its traceback
        log.exception("%s failed", what)
        out.close(CLOSE_INTERNAL, "internal error")


async def refuse_crowded(websocket: WebSocket, limit: int) -> None:
    """Refuse a WebSocket handshake from an address with ``limit`` connections open already:
    HTTP 429 ``{"error": "too_many_connections"}`` (close 1008 where the server cannot answer a
    handshake with an HTTP response). Nothing was allocated for it."""
    message = f"at most {limit} connections per address"
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(
            {"error": "too_many_connections", "message": message}, status_code=429, headers={"retry-after": "5"}))
    else:
        await websocket.close(1008, message)


async def await_peer_close(websocket: WebSocket, timeout: float = PEER_CLOSE_TIMEOUT) -> None:
    """The relay is closing this connection: read (and drop) until the client's close frame,
    so the closing handshake completes. Closing the socket with unread client data in it would
    make the kernel reset the connection, and the client might never see our close code."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass


__all__ = ["CLOSE_NO_FIRST_MESSAGE", "Connection", "await_peer_close", "receive_pump", "refuse_crowded"]
