"""The relay starts on a free port and its health check names the backend it runs on."""
from __future__ import annotations

import httpx

from relay.ops.runner import Running
from tests.conftest import Backend


async def test_health_reports_backend(relay: Running, backend: Backend) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(relay.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["backend"] == body["storage"]["backend"] == backend.name
    assert body["bus"]["connected"] is True
    assert body["relay"] == relay.relay.hub.relay_key.public_hex
