"""relay.endpoints.connection: the one receive pump and the closing handshake, on real sockets."""
from __future__ import annotations

import asyncio
import logging

import pytest
import websockets
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from relay.endpoints.connection import Connection, receive_pump
from relay.endpoints.outbox import Outbox
from tests.relay.endpoints.asgi_ws import ws_server


class Echo:
    """Answers every message with its kind; "bye" makes the relay side close with 4000;
    "boom" raises (a bug)."""

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self.seen: list[str | bytes] = []
        self.ended = asyncio.Event()

    async def handle_message(self, message: str | bytes) -> None:
        self.seen.append(message)
        if message == "boom":
            raise RuntimeError("a bug")
        if message == "bye":
            self.out.close(4000, "as you wish")
            return
        if isinstance(message, str):
            self.out.put(f"text:{message}")
        else:
            self.out.put_bytes(b"bin:" + message)

    def closed(self) -> None:
        self.out.close(1000, "closed")
        self.ended.set()


def _serve(conns: list[Echo]):  # type: ignore[no-untyped-def]
    async def handler(websocket: WebSocket) -> None:
        await websocket.accept()
        conn = Echo(Outbox(websocket, 100))  # type: ignore[arg-type]
        conns.append(conn)
        c: Connection = conn  # the protocol is structural: Echo is a Connection
        try:
            await receive_pump(websocket, c, "test connection")
        finally:
            conn.closed()
            await conn.out.wait_closed()
    return ws_server(handler)


async def test_messages_reach_the_connection_in_order_and_a_client_close_ends_it() -> None:
    conns: list[Echo] = []
    async with _serve(conns) as url:
        async with websockets.connect(url, compression=None) as ws:
            await ws.send("a")
            await ws.send(b"\x01")
            await ws.send("b")
            got = [await ws.recv() for _ in range(3)]
            assert got == ["text:a", b"bin:\x01", "text:b"]
        await asyncio.wait_for(conns[0].ended.wait(), 10)
    assert conns[0].seen == ["a", b"\x01", "b"]


async def test_relay_side_close_completes_the_closing_handshake() -> None:
    """The client keeps writing after the relay closed: the pump reads (and drops) until the
    client's close frame, so the client sees our code, not a reset (1006)."""
    conns: list[Echo] = []
    async with _serve(conns) as url:
        async with websockets.connect(url, compression=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "text:x"
            await ws.send("bye")

            async def keep_writing() -> None:
                for i in range(10_000):
                    await ws.send(f"more {i}")
                    await asyncio.sleep(0)
                await ws.recv()

            with pytest.raises(ConnectionClosed):
                await keep_writing()
            await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (4000, "as you wish")
        await asyncio.wait_for(conns[0].ended.wait(), 10)
    assert conns[0].seen[:2] == ["x", "bye"] and len(conns[0].seen) == 2  # nothing handled after


async def test_a_bug_in_a_handler_is_logged_and_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    conns: list[Echo] = []
    caplog.set_level(logging.ERROR, "relay.endpoints.connection")
    async with _serve(conns) as url:
        async with websockets.connect(url, compression=None) as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1011, "internal error")
        await asyncio.wait_for(conns[0].ended.wait(), 10)
    assert any("test connection failed" in r.getMessage() and r.exc_info for r in caplog.records)
