"""relay/core/health.py: what ``GET /health`` shows anyone (numbers, booleans, backend names),
what only the operator's log sees, and the federation's view."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.keys import Keypair
from relay.core.health import COMPONENTS, ComponentHealth, HealthWatch, public_view
from relay.ops.runner import serving
from tests.conftest import make_config


def test_public_view_keeps_numbers_booleans_and_backend_names_only() -> None:
    detail = {"backend": "sqlite", "bus": "redis", "ok": True, "pending": 3, "lag": 0.5,
              "path": "/srv/colony/data", "error": "OperationalError('disk I/O error')", "url": "redis://h:1/0",
              "nested": {"x": 1}, "items": [1, 2], "none": None}
    assert public_view(detail) == {"backend": "sqlite", "bus": "redis", "ok": True, "pending": 3, "lag": 0.5}
    assert public_view({"backend": 3}) == {"backend": 3}
    assert public_view({}) == {}


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                                        st.text(max_size=10), st.lists(st.integers(), max_size=2))))
def test_public_view_never_shows_a_string_outside_the_safe_names(detail: dict[str, Any]) -> None:
    view = public_view(detail)
    assert view.items() <= detail.items()
    for k, v in view.items():
        assert isinstance(v, (bool, int, float)) or k in ("backend", "bus")


def test_watch_logs_each_change_once_with_its_detail(caplog: pytest.LogCaptureFixture) -> None:
    watch = HealthWatch()
    caplog.set_level(logging.INFO, logger="relay.core.health")
    up = ComponentHealth("storage", True, {"backend": "sqlite", "ok": True})
    down = ComponentHealth("storage", False, {"backend": "sqlite", "ok": False, "error": "disk full at /data"})
    bus = ComponentHealth("bus", True, {"connected": True})
    watch.observe([up, bus])
    assert caplog.records == []  # first sight of a component that is up: nothing to say
    watch.observe([down, bus])
    watch.observe([down, bus])  # no change: no second line
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING,
         "component storage is down: {'backend': 'sqlite', 'ok': False, 'error': 'disk full at /data'}")]
    caplog.clear()
    watch.observe([up, bus])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "component storage is up again")]
    assert watch.up == {"storage": True, "bus": True}


def test_a_component_down_at_first_sight_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.core.health")
    watch = HealthWatch()
    watch.observe([ComponentHealth("federation", False, {"links": {}})])
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert watch.up == {"federation": False}
    assert set(COMPONENTS) == {"storage", "bus", "federation"}


async def test_health_of_a_relay_with_an_unreachable_peer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The federation's public view shows member keys and a link that is not connected, never
    the peer's URL; a peer out of reach does not make the relay unhealthy."""
    peer = Keypair.generate().public_hex
    peer_url = "http://127.0.0.1:9"
    cfg = make_config(tmp_path / "r", peers=(f"{peer_url}/#{peer}",), public_url="http://127.0.0.1:1")
    caplog.set_level(logging.INFO, logger="relay.core.health")
    async with serving(cfg) as running:
        me = running.relay.hub.relay_key.public_hex
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{running.url}/health")
    body = resp.json()
    assert resp.status_code == 200 and body["ok"] is True
    assert body["components"] == {"storage": "up", "bus": "up", "federation": "down"}
    fed = body["federation"]
    assert {m["key"] for m in fed["members"]} >= {peer, me}
    assert all(set(m) == {"key"} for m in fed["members"])
    assert fed["links"] == {peer: {"connected": False}} and fed["alarms"] == 0
    assert peer_url not in resp.text and str(tmp_path) not in resp.text
    assert body["storage"]["backend"] == "sqlite"
    # the operator's log has what the public view leaves out
    assert any("federation is down" in r.getMessage() and peer_url in r.getMessage() for r in caplog.records)
