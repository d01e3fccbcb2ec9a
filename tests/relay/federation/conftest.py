"""The two-relay federation (relays "a" and "b", on each backend) the federation tests share
(test_link, test_endpoint, test_node, test_peer_bounds); test_federation.py brings its own
three-relay one."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.relay.federation.test_link import Federation


@pytest.fixture
async def fed(tmp_path: Path, backend: Backend) -> AsyncIterator[Federation]:
    f = Federation(tmp_path, backend, ("a", "b"))
    try:
        yield f
    finally:
        await f.close()
