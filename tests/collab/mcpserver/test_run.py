"""The transports' address parsing (the transports themselves run in test_live.py)."""
from __future__ import annotations

import pytest

from collab.mcpserver.run import HTTP_PATH, parse_addr


def test_http_addresses() -> None:
    assert parse_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:8800") == ("::1", 8800)
    assert parse_addr(":8800") == ("127.0.0.1", 8800)
    assert HTTP_PATH == "/mcp"
    for bad in ("localhost", "127.0.0.1:http", "127.0.0.1:70000", ""):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_addr(bad)
