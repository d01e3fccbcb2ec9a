"""relay/ops/runner.py: a real uvicorn in this event loop on a free port; leaving ``serving``
stops it; a first SIGTERM/SIGINT drains the relay (clients see 1001) before uvicorn stops."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from collab.events import Event
from collab.keys import Keypair
from relay.core.config import Config
from relay.endpoints.wsdirect import GuardedProtocol
from relay.ops.runner import GracefulServer, Running, serving, uvicorn_config
from tests.conftest import Backend, make_config
from tests.rawclient import Raw

pytestmark = pytest.mark.timeout(60)


async def test_serving_listens_on_a_free_port_and_stops_when_left(tmp_path: Path, backend: Backend) -> None:
    async with serving(make_config(tmp_path, backend)) as running:
        assert running.port > 0 and running.host == "127.0.0.1"
        assert running.url == f"http://127.0.0.1:{running.port}"
        assert running.ws_url == f"ws://127.0.0.1:{running.port}/ws"
        assert running.yjs_url == f"ws://127.0.0.1:{running.port}/yjs"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{running.url}/health")).status_code == 200
        url = running.url
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/health")


async def test_a_first_signal_drains_then_stops(tmp_path: Path) -> None:
    async with serving(make_config(tmp_path)) as running:
        key = Keypair.generate()
        raw = await Raw.connect(running.ws_url, key)
        ev = Event.create(key, "misc/drain", "note", {"n": 1})
        assert (await raw.request({"t": "pub", "event": ev.to_wire()}, "p1"))["t"] == "ok"
        # what uvicorn's handler does on a signal. Not SIGTERM itself: uvicorn (0.29+) raises the
        # signals it handled again once it has stopped, which would end this test process; SIGWINCH's
        # default action is to ignore it, and the drain does not depend on which signal came
        running.server.handle_exit(signal.SIGWINCH, None)
        code, _ = await asyncio.wait_for(raw.closed, 15)
        assert code == 1001  # going away: the relay drained, then uvicorn stops
        await raw.close()
        await asyncio.wait_for(_drained(running), 15)
        assert running.server.should_exit  # set by uvicorn's own handler once the drain finished
        assert running.relay.closing


async def _drained(running: Running) -> None:
    """Wait for the drain task the signal started; it ends by calling uvicorn's own handler."""
    server = running.server
    assert isinstance(server, GracefulServer)
    assert server._draining is not None  # started before the clients were closed with 1001
    await server._draining


def test_uvicorn_settings_follow_the_config() -> None:
    cfg = Config(port=0, ws_deflate=True, ws_ping_interval=3.0, ws_ping_timeout=4.0)
    uc = uvicorn_config(object(), cfg, log_level="error")
    # uvicorn's websockets-sansio protocol, guarded against peers that stop reading (a stuck
    # keep-alive aborts, the kernel send buffer fits the byte cap: wsdirect.GuardedProtocol)
    assert uc.port == 0 and uc.lifespan == "on"
    assert isinstance(uc.ws, type) and issubclass(uc.ws, GuardedProtocol)
    assert issubclass(uc.ws, WebSocketsSansIOProtocol)
    assert uc.ws.send_buffer == cfg.limits.max_outbound_bytes
    assert uc.ws_per_message_deflate is True and uc.ws_ping_interval == 3.0 and uc.ws_ping_timeout == 4.0
    assert uc.ws_max_size == cfg.limits.max_frame_bytes * 4 + 1024 and uc.log_level == "error"
