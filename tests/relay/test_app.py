"""relay/app.py: the Starlette assembly, served by a real uvicorn on a free port: the HTTP API,
the three WebSocket doors, the viewer, and the relay's lifecycle bound to the app's lifespan."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets

from relay.app import WEB_DIR, create_app
from relay.ops.runner import serving
from relay.server import Relay
from tests.conftest import make_config
from tests.rawclient import Raw

pytestmark = pytest.mark.timeout(60)


async def test_every_door_is_routed_and_the_viewer_is_served(tmp_path: Path) -> None:
    async with serving(make_config(tmp_path)) as running:
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{running.url}/health")
            assert health.status_code == 200
            limits = (await http.get(f"{running.url}/limits")).json()
            assert "max_frame_bytes" in json.dumps(limits) and limits["rate_scope"] == "process"
            index = await http.get(f"{running.url}/")
            assert index.status_code == 200 and index.text == (WEB_DIR / "index.html").read_text()
            assert (await http.get(f"{running.url}/colony.js")).status_code == 200
        raw = await Raw.connect(running.ws_url)  # /ws: the native protocol's challenge
        assert raw.challenge["relay"] == running.relay.hub.relay_key.public_hex
        await raw.close()
        async with websockets.connect(f"{running.yjs_url}/doc/app") as ws:  # /yjs/{name}: sync step 1 first
            first = await ws.recv()
            assert isinstance(first, bytes) and first[:2] == b"\x00\x00"
        async with websockets.connect(running.url.replace("http", "ws") + "/fed") as ws:  # /fed: accepted
            await ws.send("not a handshake")
            with pytest.raises(websockets.ConnectionClosed):
                await _receive_until_closed(ws)


async def _receive_until_closed(ws: websockets.ClientConnection) -> None:
    """Drop what the peer sends; ``recv`` raises ``ConnectionClosed`` once it has closed."""
    while True:
        await ws.recv()


async def test_the_viewer_directory_is_a_setting(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>own viewer</p>")
    async with serving(make_config(tmp_path / "a", web_dir=site)) as running, httpx.AsyncClient() as http:
        assert (await http.get(f"{running.url}/")).text == "<p>own viewer</p>"
    missing = make_config(tmp_path / "b", web_dir=tmp_path / "missing")
    async with serving(missing) as running, httpx.AsyncClient() as http:
        assert (await http.get(f"{running.url}/")).status_code == 404  # no viewer, the API still works
        assert (await http.get(f"{running.url}/health")).status_code == 200


async def test_the_relay_lives_as_long_as_the_app(tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path))
    app = create_app(relay=relay)
    assert app.state.relay is relay
    async with serving(relay.config, relay) as running:
        assert running.relay is relay and not relay.closing
        assert (await relay.storage.health())["ok"]
    assert relay.closing
    assert create_app().state.relay.config.port == 8765  # a default relay (not started) when given nothing


async def test_a_path_or_method_no_route_takes_gets_the_json_error_shape(tmp_path: Path) -> None:
    """Starlette's own refusals answer like the API (docs/protocol.md 15.2): 404 ``not_found`` for
    a path no route matches (the viewer's missing files too), 405 ``method_not_allowed`` with
    ``Allow`` for a method its route does not take."""
    async with serving(make_config(tmp_path)) as running, httpx.AsyncClient() as http:
        for path in ("/nope.js", "/feeds/doc/a%0Ab/events"):  # a line break matches no feed route
            resp = await http.post(f"{running.url}{path}", content=b"{}") if "feeds" in path else \
                await http.get(f"{running.url}{path}")
            assert resp.status_code == 404 and resp.json() == {"error": "not_found", "message": "Not Found"}, path
        resp = await http.post(f"{running.url}/feeds/doc/a", content=b"{}")
        assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"
        assert set(resp.headers["allow"].split(", ")) == {"GET", "HEAD"}
