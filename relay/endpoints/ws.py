"""The native ``/ws`` endpoint: accept, then pump messages into a Session (relay.endpoints.connection)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from relay.endpoints.connection import receive_pump, refuse_crowded

if TYPE_CHECKING:
    from relay.server import Relay

__all__ = ["native_endpoint"]


async def native_endpoint(websocket: WebSocket) -> None:
    relay: Relay = websocket.app.state.relay
    if relay.closing:
        await websocket.close(1001)
        return
    ip = websocket.client.host if websocket.client else "unknown"
    limits = relay.config.limits
    if not relay.admit(ip):
        await refuse_crowded(websocket, limits.max_connections_per_ip)
        return
    try:
        await websocket.accept()
        websocket.scope["headers"] = ()  # read by nobody after the handshake: idle agents hold no copy
        session = relay.new_session(websocket, ip)
        session.start()
        try:
            await receive_pump(websocket, session, f"connection from {ip}", limits.first_message_timeout)
        finally:
            relay.end_session(session)
    finally:
        relay.release(ip)
