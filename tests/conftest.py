"""Shared fixtures: real relays on real ports (port 0), real WebSocket clients.

Fixtures return handles (a running relay with its URLs); nothing is stashed globally.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config
from relay.limits import Limits
from relay.runner import Running, serving


def make_config(tmp: Path, **kw: Any) -> Config:
    limits = kw.pop("limits", None) or Limits()
    return Config(data_dir=tmp, host="127.0.0.1", port=0, limits=limits, **kw)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    """One relay on the embedded SQLite default, on a free port."""
    async with serving(make_config(tmp_path / "relay")) as running:
        yield running


@pytest.fixture
async def start_relay(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await start_relay(name="a", limits=Limits(...))`` -> Running (stopped at teardown)."""
    stack = contextlib.AsyncExitStack()

    async def start(name: str = "r", **kw: Any) -> Running:
        return await stack.enter_async_context(serving(make_config(tmp_path / name, **kw)))

    async with stack:
        yield start
