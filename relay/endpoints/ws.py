"""The WebSocket pump for ``/ws``: moves messages between the socket and a Session."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.server import Relay

log = logging.getLogger(__name__)


async def native_endpoint(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    if relay.closing:
        await websocket.close(1001)
        return
    await websocket.accept()
    ip = websocket.client.host if websocket.client else "unknown"
    session = relay.new_session(websocket, ip)
    session.start()
    try:
        while not session.out.closed:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            await session.handle_message(data)
        else:
            await await_peer_close(websocket)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection from %s failed", ip)
    finally:
        relay.end_session(session)


async def await_peer_close(websocket: WebSocket, timeout: float = 2.0) -> None:
    """The relay is closing this connection: read (and drop) until the client's close frame,
    so the closing handshake completes. Closing the socket with unread client data in it would
    make the kernel reset the connection, and the client might never see our close code."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
