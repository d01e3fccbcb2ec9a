"""relay/ops/cli_common.py: the exit codes every agent command shares, run as the real ``colony``
subprocess: 3 (and the URL named) when nothing listens at the relay URL, 2 on bad usage; and
how each failure is reported (``error: <code>: <message>``)."""
from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from collab.errors import InvalidEvent, RelayError, Unreachable
from collab.keys import Keypair
from relay.ops.cli import build_parser, main
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
    commands = [("publish", "chat/x", "msg", "{}"), ("tail", "doc/x")]  # as processes; every command in-process below
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


K = "ab" * 32
CLIENT_COMMANDS = {  # every command that talks to a relay, with arguments that parse
    "publish": ["chat/x", "msg", "{}"], "feeds": [], "read": ["chat/x"],
    "doc append": ["doc/x", "hi"], "doc insert": ["doc/x", "0", "hi"], "doc replace": ["doc/x", "a", "b"],
    "doc cat": ["doc/x"],
    "auction open": ["auction/x", "a task"], "auction list": [], "auction bid": ["auction/x", "1"],
    "auction status": ["auction/x"], "auction deliver": ["auction/x", "done"], "auction accept": ["auction/x"],
    "auction reject": ["auction/x", "why"],
    "task open": ["task/x", "a title"], "task spawn": ["task/x", "s1", K, "a title"],
    "task progress": ["task/x", "s1", "1", "2"], "task checkpoint": ["task/x", "s1", "{}"],
    "task done": ["task/x", "s1", "done"], "task fail": ["task/x", "s1", "why"], "task finish": ["task/x"],
    "task status": ["task/x"], "task assigned": [], "task resume": ["task/x", "s1"],
    "vouch": [K, "800"], "trust": [], "agents": [], "profile": ["alice"], "dm send": [K, "hi"], "dm read": [K],
    "balance": [], "watch": ["doc/"], "tail": ["doc/x"], "replay": ["doc/x"], "grant": ["doc/x"], "mcp": [],
    "lease campaign": ["lease/x"], "lease status": ["lease/x"], "lease resign": ["lease/x"], "lease watch": ["lease/x"],
}
OTHER_COMMANDS = {"serve", "keygen", "pubkey", "export", "import", "compact", "demo"}  # no relay URL


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out |= leaf_commands(sub, f"{prefix}{name} ") or {prefix + name}
    return out


def test_the_list_below_has_every_client_command() -> None:
    assert leaf_commands(build_parser()) == set(CLIENT_COMMANDS) | OTHER_COMMANDS


@pytest.fixture(scope="module")
def refused_url() -> Iterator[str]:
    with socket.socket() as s:  # bound, never listening: every connection is refused
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS))
def test_every_client_command_names_the_url_it_could_not_reach(
        command: str, refused_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "a.key"
    Keypair.generate().save(key)
    monkeypatch.setenv("COLONY_KEY", str(key))  # the environment, as a shell would set it
    try:
        rc = main([*command.split(), *CLIENT_COMMANDS[command], "--relay", refused_url])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert (rc, out) == (UNREACHABLE, ""), err
    assert err.startswith("error: unreachable: ") and refused_url in err.splitlines()[-1], err
