"""The relay starts on a free port and answers its health check."""
from __future__ import annotations

import httpx

from relay.runner import Running


async def test_health_reports_sqlite_backend(relay: Running) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(relay.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True
    assert body["storage"]["backend"] == "sqlite"
    assert body["relay"] == relay.relay.hub.relay_key.public_hex
