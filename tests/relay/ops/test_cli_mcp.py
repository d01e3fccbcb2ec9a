"""``colony mcp``'s command line: its options, and the refusals before it serves (no key, a bad
--http address, no relay at the URL). Serving itself runs in tests/collab/mcpserver/test_live.py."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from collab.keys import Keypair
from relay.ops.cli import build_parser, main


def test_the_mcp_command_takes_key_relay_and_http() -> None:
    a = build_parser().parse_args(["mcp", "--key", "k", "--relay", "http://r", "--http", "127.0.0.1:0"])
    assert (a.command, a.key, a.relay, a.http, a.log_level) == ("mcp", "k", "http://r", "127.0.0.1:0", "warning")


def test_refusals_before_serving(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLONY_KEY", raising=False)
    with pytest.raises(SystemExit) as no_key:
        main(["mcp", "--relay", "http://127.0.0.1:1"])
    assert no_key.value.code == 2 and "pass --key FILE" in capsys.readouterr().err
    key = tmp_path / "a.key"
    Keypair.generate().save(key)
    with pytest.raises(SystemExit) as bad_addr:
        main(["mcp", "--key", str(key), "--http", "somewhere"])
    assert bad_addr.value.code == 2 and "--http takes HOST:PORT" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["mcp", "--key", str(key), "--relay", f"http://127.0.0.1:{port}"]) == 3
    assert f"error: unreachable: cannot reach http://127.0.0.1:{port}" in capsys.readouterr().err
