"""A real relay (SQLite, no sockets needed) for the plug-in tests: events go in through
``Hub.publish`` as a session's would, and the plug-in's hooks get the real coordinator."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.keys import Keypair
from relay.server import Relay
from tests.conftest import make_config

OPERATOR = Keypair.generate()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Relay]:
    async with Relay(make_config(tmp_path / "site", operators=(OPERATOR.public_hex,))) as relay:
        yield relay
