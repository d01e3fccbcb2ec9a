"""The HTTP API's health and error surfaces (relay/endpoints/http.py, relay/app.py).

Anyone may call ``GET /health`` and read error bodies: they name unhealthy components by fixed
names and show counters, never storage paths, peer URLs or exception text. Operators find those
in the log and in ``/metrics`` (``colony_component_up``)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.ops.runner import serving
from tests.conftest import Backend, make_config
from tests.redis_server import RedisServer

LEAKS = ("Error", "Exception", "Traceback", "redis://", "127.0.0.1", "colony.db", "/tmp", "Errno", "refused")  # noqa: S108 - text looked for in answers, not a path


def assert_no_leak(text: str, *extra: str) -> None:
    for needle in (*LEAKS, *extra):
        assert needle not in text, f"{needle!r} shown to an anonymous caller: {text}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it gets killed)."""
    srv = RedisServer.start(tmp_path / "redis")
    yield srv
    srv.stop(graceful=False)


async def test_health_of_a_healthy_relay_names_its_components(tmp_path: Path, backend: Backend) -> None:
    async with serving(make_config(tmp_path / "r", backend)) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["ok"] is True and body["components"] == {"storage": "up", "bus": "up"}, body
        assert body["federation"] is None
        assert_no_leak(resp.text, str(tmp_path))


async def test_health_of_a_failing_storage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLite store stops under a running relay: /health says ``storage`` is down and no more;
    the log has the detail, /metrics the gauge, and an HTTP request that needs storage gets a
    fixed 503 body."""
    caplog.set_level(logging.INFO, logger="relay")
    async with serving(make_config(tmp_path / "r")) as run, httpx.AsyncClient() as http:
        assert (await http.get(f"{run.url}/health")).status_code == 200
        await run.relay.hub.storage.close()

        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["ok"] is False and body["components"]["storage"] == "down", body
        assert body["components"]["bus"] == "up" and body["backend"] == "sqlite"
        assert_no_leak(resp.text, str(tmp_path))
        assert any("component storage is down" in r.getMessage() and "colony.db" in r.getMessage()
                   for r in caplog.records), "the operator's log says what is down, and where"

        metrics = (await http.get(f"{run.url}/metrics")).text
        assert 'colony_component_up{component="storage"} 0' in metrics
        assert 'colony_component_up{component="bus"} 1' in metrics

        resp = await http.get(f"{run.url}/feeds")
        assert resp.status_code == 503
        assert resp.json() == {"error": "unavailable", "message": "the relay cannot serve this right now; retry later"}
        assert_no_leak(resp.text, str(tmp_path), "closed")


async def test_health_of_a_relay_whose_redis_is_down(tmp_path: Path, private_redis: RedisServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    backend = Backend("redis", private_redis.url, "health")
    async with serving(make_config(tmp_path / "r", backend)) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 200 and resp.json()["components"] == {"storage": "up", "bus": "up"}
        assert_no_leak(resp.text, str(private_redis.port))

        private_redis.stop(graceful=False)  # the process is gone once this returns: refused from now on
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["ok"] is False and body["components"]["storage"] == "down", body
        assert body["backend"] == "redis" and body["storage"]["backend"] == "redis"
        assert_no_leak(resp.text, str(private_redis.port), str(tmp_path))
        assert any("component storage is down" in r.getMessage() and str(private_redis.port) in r.getMessage()
                   for r in caplog.records), "the operator's log names the Redis that is down"
        assert 'colony_component_up{component="storage"} 0' in (await http.get(f"{run.url}/metrics")).text


async def test_a_bad_request_still_says_what_was_wrong(tmp_path: Path) -> None:
    """Errors about the caller's own input keep their explanation."""
    async with serving(make_config(tmp_path / "r")) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/feeds", params={"limit": "x"})
        assert resp.status_code == 400
        assert resp.json() == {"error": "invalid", "message": "limit must be an integer"}
