"""relay/endpoints/ws.py: the native ``/ws`` endpoint on a real relay (uvicorn on port 0).
It accepts and sends the challenge, gives each connection its own session (ended when the
socket goes), and once the relay drains it closes open connections with 1001 (going away)
and refuses new ones."""
from __future__ import annotations

import asyncio

import pytest
import websockets

from collab.keys import Keypair
from relay.endpoints.session import CLOSE_GOING_AWAY
from relay.ops.runner import Running
from tests.rawclient import Raw
from tests.wait import eventually


async def test_accepts_with_a_challenge_and_one_session_per_connection(relay: Running) -> None:
    a, b = await Raw.connect(relay.ws_url), await Raw.connect(relay.ws_url, Keypair.generate())
    try:
        assert a.challenge["t"] == "challenge" and b.challenge["t"] == "challenge"
        assert a.challenge["nonce"] != b.challenge["nonce"]  # a session each
        assert a.challenge["relay"] == relay.relay.hub.relay_key.public_hex
        assert len(relay.relay.sessions) == 2
        assert (await a.request({"t": "ping"}, "1"))["t"] == "pong"
    finally:
        await a.close()
    # the closed socket ends its session; the other one goes on
    await eventually(lambda: len(relay.relay.sessions) == 1, 10, "the closed connection's session to end")
    try:
        assert (await b.request({"t": "ping"}, "2"))["t"] == "pong"
    finally:
        await b.close()


async def test_draining_closes_open_connections_with_1001_and_refuses_new_ones(relay: Running) -> None:
    key = Keypair.generate()
    raws = [await Raw.connect(relay.ws_url, key) for _ in range(3)]
    await relay.relay.drain(5.0)
    closes = await asyncio.wait_for(asyncio.gather(*(r.closed for r in raws)), 10)
    assert [code for code, _ in closes] == [CLOSE_GOING_AWAY] * 3 == [1001] * 3
    assert {reason for _, reason in closes} == {"relay shutting down"}
    assert relay.relay.sessions == set()
    # a connection attempt while closing is turned away before the WebSocket is accepted
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(relay.ws_url)
    assert refused.value.response.status_code == 403
