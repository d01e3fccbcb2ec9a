"""Slowloris and idle connections are closed within the deadlines; connections per IP are capped.

A relay subprocess (``colony serve``) with short deadlines: connections that send partial HTTP
headers (plain requests and WebSocket upgrades) or nothing at all are closed by the header
deadline; a WebSocket that completes its handshake but sends nothing is closed with 4408 after
``first_message_timeout`` while one that spoke stays open; the WebSocket past
``max_connections_per_ip`` (/ws, /yjs and /fed alike) is refused with HTTP 429 before anything is allocated for it.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.procs import start_relay_proc
from tests.rawclient import Raw
from tests.wait import eventually

HEADER_TIMEOUT = 1.0
FIRST_MESSAGE_TIMEOUT = 1.0
PER_IP = 4


async def _closed_after(reader: asyncio.StreamReader, t0: float) -> float:
    """Seconds from ``t0`` until the relay closed the connection (EOF or reset)."""
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return time.monotonic() - t0


async def test_deadlines_and_per_ip_cap(tmp_path: Path) -> None:
    proc = await start_relay_proc(tmp_path / "r", "--header-timeout", str(HEADER_TIMEOUT),
                                  "--first-message-timeout", str(FIRST_MESSAGE_TIMEOUT),
                                  "--max-connections-per-ip", str(PER_IP))
    try:
        host, port = proc.url.removeprefix("http://").split(":")
        partial = [b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1",  # never ends its headers
                   b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
                   b""]  # connects and sends nothing
        conns = []
        t0 = time.monotonic()
        for i in range(60):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(partial[i % 3])
            conns.append((reader, writer))
        # a WebSocket that never sends, and one that does (both from this address: 2 of PER_IP)
        silent = await Raw.connect(proc.ws_url)
        talker = await Raw.connect(proc.ws_url)
        assert (await talker.request({"t": "ping"}, "p1"))["t"] == "pong"
        closed = await asyncio.wait_for(asyncio.gather(*(_closed_after(r, t0) for r, _ in conns)), 10)
        assert max(closed) < HEADER_TIMEOUT + 2.0, closed
        assert min(closed) >= HEADER_TIMEOUT - 0.1, closed
        code, _ = await asyncio.wait_for(silent.closed, 10)
        assert code == 4408
        assert (await talker.request({"t": "ping"}, "p2"))["t"] == "pong"  # past the deadline, still open
        # complete requests are unaffected (and kept alive between them)
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                assert (await http.get(f"{proc.url}/health")).status_code == 200
        # per-IP cap: talker + PER_IP - 1 more, then refused
        more = [await Raw.connect(proc.ws_url) for _ in range(PER_IP - 1)]
        for raw in more:
            await raw.send({"t": "ping"})
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(proc.ws_url)
        assert refused.value.response.status_code == 429
        assert b'"too_many_connections"' in refused.value.response.body
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(proc.url.replace("http://", "ws://") + "/yjs/capped")
        with pytest.raises(websockets.InvalidStatus) as refused_fed:  # a would-be peer counts too
            await websockets.connect(proc.url.replace("http://", "ws://") + "/fed")
        assert refused_fed.value.response.status_code == 429
        await talker.close()

        async def admitted() -> bool:
            try:
                ws = await websockets.connect(proc.ws_url)
            except websockets.InvalidStatus:
                return False
            await ws.close()
            return True

        await eventually(admitted, 10, "a connection admitted once one of the address's closed")
        for raw in more:
            await raw.close()
        for _, writer in conns:
            writer.close()
    finally:
        await proc.stop()
