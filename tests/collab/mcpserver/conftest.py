"""The transports every MCP test runs over: stdio (what an MCP host starts) and streamable HTTP."""
from __future__ import annotations

import pytest


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
