"""Shared fixtures: real relays on real ports (port 0), real WebSocket clients, and a real
redis-server for the scale-out backend.

Every relay fixture is parametrized over the storage backend (``sqlite``, ``redis``), so the
whole suite runs on both. Fixtures return handles (a running relay with its URLs); nothing
is stashed globally.
"""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.core.config import Config
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.redis_server import RedisServer


@dataclass(frozen=True)
class Backend:
    """Where relays of one test keep their feeds; ``site`` separates independent relays."""

    name: str
    redis_url: str | None = None
    prefix: str = "colony"

    def config_kwargs(self, site: str) -> dict[str, Any]:
        if self.name == "redis":
            return {"redis_url": self.redis_url, "redis_prefix": f"{self.prefix}-{site}"}
        return {}

    def serve_args(self, site: str) -> list[str]:
        if self.name == "redis":
            assert self.redis_url
            return ["--redis", self.redis_url, "--redis-prefix", f"{self.prefix}-{site}"]
        return []


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests isolate by key prefix)."""
    srv = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop(graceful=False)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        srv: RedisServer = request.getfixturevalue("redis_server")
        return Backend("redis", srv.url, f"t{uuid.uuid4().hex[:10]}")
    return Backend("sqlite")


def make_config(tmp: Path, backend: Backend | None = None, site: str = "r", **kw: Any) -> Config:
    limits = kw.pop("limits", None) or Limits()
    extra = backend.config_kwargs(site) if backend else {}
    extra.update(kw)
    extra.setdefault("sync_interval", 0.5)
    extra.setdefault("presence_ttl", 3.0)
    return Config(data_dir=tmp, host="127.0.0.1", port=0, limits=limits, **extra)


@pytest.fixture
async def relay(tmp_path: Path, backend: Backend) -> AsyncIterator[Running]:
    """One relay on a free port, on each backend."""
    async with serving(make_config(tmp_path / "relay", backend)) as running:
        yield running


@pytest.fixture
async def start_relay(tmp_path: Path, backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_relay("a", limits=Limits(...))`` -> Running (stopped at teardown).

    Relays started with the same ``site`` share a Redis key prefix (one site, several
    processes); by default each name is its own site.
    """
    stack = contextlib.AsyncExitStack()

    async def start(name: str = "r", site: str | None = None, **kw: Any) -> Running:
        cfg = make_config(tmp_path / name, backend, site or name, **kw)
        return await stack.enter_async_context(serving(cfg))

    async with stack:
        yield start
