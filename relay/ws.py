"""The WebSocket pump for ``/ws``: moves messages between the socket and a Session."""
from __future__ import annotations

import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from .server import Relay

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
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("connection from %s failed", ip)
    finally:
        relay.end_session(session)
