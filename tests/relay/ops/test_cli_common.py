"""relay/ops/cli_common.py: the exit codes every agent command shares, run as the real ``colony``
subprocess: 3 (and the URL named) when nothing listens at the relay URL, 2 on bad usage; and
how each failure is reported (``error: <code>: <message>``)."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from collab.errors import InvalidEvent, RelayError, Unreachable
from collab.keys import Keypair
from relay.ops.cli_common import REFUSED, UNREACHABLE, fail
from tests.relay.ops.test_cli import colony


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: nobody listens there


async def test_an_unreachable_relay_exits_3_and_names_the_url(tmp_path: Path) -> None:
    key = tmp_path / "a.key"
    Keypair.generate().save(key)
    url = closed_url()
    env = {"COLONY_RELAY": url, "COLONY_KEY": str(key)}
    commands = [("publish", "chat/x", "msg", "{}"), ("auction", "list", "--json"), ("balance", "--json"),
                ("tail", "doc/x"), ("grant", "doc/x")]  # one of each module's commands
    results = await asyncio.gather(*(colony(*c, env=env) for c in commands))
    for cmd, (rc, out, err) in zip(commands, results, strict=True):
        assert (rc, out) == (UNREACHABLE, ""), (cmd, rc, err)
        assert err.startswith("error: unreachable: ") and url in err, (cmd, err)


async def test_bad_usage_exits_2(tmp_path: Path) -> None:
    env = {"COLONY_RELAY": closed_url(), "COLONY_KEY": ""}
    results = await asyncio.gather(
        colony("publish", "chat/x", "msg", "{not json", env=env),  # a JSON argument that does not parse
        colony("auction", "bid", "auction/x", env=env),            # a missing argument
        colony("feeds", "--relay", "ftp://example.org", env=env),  # not a relay URL
        colony("dm", "send", "ab" * 32, "hi", "--key", str(tmp_path / "missing.key"), env=env))  # no key
    for rc, out, err in results:
        assert rc == 2 and out == "", err
    assert "not JSON" in results[0][2] and "http(s)://" in results[2][2] and "cannot load key" in results[3][2]


async def test_help_names_the_exit_codes() -> None:
    rc, out, _ = await colony("task", "spawn", "--help")
    assert rc == 0 and "exit codes: 0 ok, 1 refused" in out and "--json" in out and "--relay" in out


@pytest.mark.parametrize(("exc", "code", "line"), [
    (RelayError("conflict", "a second bid"), REFUSED, "error: conflict: a second bid"),
    (InvalidEvent("the text to replace occurs 0 times"), REFUSED, "error: invalid: the text to replace occurs 0 times"),
    (Unreachable("http://h:1", "refused"), UNREACHABLE, "error: unreachable: cannot reach http://h:1: refused"),
    (ConnectionRefusedError(111, "Connection refused"), UNREACHABLE, "error: unreachable: cannot reach http://h:1"),
    (httpx.ConnectError("refused"), UNREACHABLE, "error: unreachable: cannot reach http://h:1: refused"),
    (TimeoutError(), UNREACHABLE, "error: timeout: no answer from http://h:1"),
])
def test_each_failure_has_its_code_and_line(exc: BaseException, code: int, line: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert fail(exc, "http://h:1") == code
    assert capsys.readouterr().err.startswith(line)


def test_anything_else_is_a_bug_and_raises() -> None:
    with pytest.raises(KeyError):
        fail(KeyError("x"), "http://h:1")
