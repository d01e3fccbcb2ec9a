"""A relay with an operator key (who grants stake credits) for the MCP tests: SQLite only (the
MCP server is a client of the relay; the backends are covered by the relay's own suite)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collab.keys import Keypair
from relay.ops.runner import Running, serving
from tests.conftest import make_config


@dataclass
class World:
    relay: Running
    operator: Keypair
    tmp: Path

    @property
    def url(self) -> str:
        return self.relay.url


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    op = Keypair.generate()
    async with serving(make_config(tmp_path / "relay", operators=(op.public_hex,))) as running:
        yield World(running, op, tmp_path)


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
