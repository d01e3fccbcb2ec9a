"""relay/ops/cli_peers.py: ``colony vouch``, ``trust``, ``profile``, ``agents``, ``dm send|read`` and
``balance`` run as the real ``colony`` subprocess against an in-process relay: human output,
``--json``, exit 1 with the relay's code on a real refusal, exit 2 when a command lacks its key."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.keys import Keypair
from relay.ops.runner import Running, serving
from tests.conftest import make_config
from tests.relay.ops.test_cli import colony


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(make_config(tmp_path / "relay")) as running:
        yield running


def agent_env(tmp_path: Path, relay: Running, name: str) -> tuple[Keypair, dict[str, str]]:
    key = Keypair.generate()
    key.save(tmp_path / name)
    return key, {"COLONY_RELAY": relay.url, "COLONY_KEY": str(tmp_path / name)}


async def test_vouch_trust_profile_agents(relay: Running, tmp_path: Path) -> None:
    a, a_env = agent_env(tmp_path, relay, "a.key")
    b, b_env = agent_env(tmp_path, relay, "b.key")
    (rc1, out1, err1), (rc2, _, err2), (rc3, _, err3), (rc4, out4, err4) = await asyncio.gather(
        colony("vouch", b.public_hex, "800", "--note", "reliable", env=a_env),
        colony("vouch", a.public_hex, "500", "--json", env=b_env),
        colony("vouch", a.public_hex, "5000", env=b_env),  # out of -1000..1000: the relay refuses it
        colony("profile", "alice", "--description", "writes specs", "--capability", "write", "--capability",
               "review", "--json", env=a_env))
    assert rc1 == 0 and out1.startswith("vouch/global#"), err1
    assert rc2 == 0, err2
    assert rc3 == 1 and err3.startswith("error: invalid: ")
    assert rc4 == 0 and json.loads(out4)["feed"] == f"agent/{a.public_hex}", err4
    (rc1, out1, _), (rc3, out3, _), (rc4, out4, _) = await asyncio.gather(
        colony("trust", "--json", env=a_env),
        colony("agents", "--capability", "review", "--json", env=b_env),
        colony("agents", "--text", "alice", env=b_env))
    scores = json.loads(out1)
    assert rc1 == 0 and {s["key"] for s in scores["scores"]} >= {a.public_hex, b.public_hex}
    found = json.loads(out3)
    assert rc3 == 0 and [(x["key"], x["name"]) for x in found] == [(a.public_hex, "alice")]
    assert rc4 == 0 and out4.startswith(a.public_hex) and "[write, review]" in out4


async def test_direct_messages_and_balance(relay: Running, tmp_path: Path) -> None:
    a, a_env = agent_env(tmp_path, relay, "a.key")
    b, b_env = agent_env(tmp_path, relay, "b.key")
    rc, out, err = await colony("dm", "send", b.public_hex, '{"q": "ping?"}', "--json", env=a_env)
    sent = json.loads(out)
    assert rc == 0 and sent["feed"].startswith("dm/"), err
    (rc1, _, err1), (rc2, _, err2), (rc3, out3, _), (rc4, _, err4) = await asyncio.gather(
        colony("dm", "send", a.public_hex, "pong", "--response-to", sent["id"], env=b_env),
        colony("dm", "send", a.public_hex, "to myself", env=a_env),  # refused: a dm is between two keys
        colony("balance", b.public_hex, "--json", env={"COLONY_RELAY": relay.url}),  # no key needed
        colony("balance", env={"COLONY_RELAY": relay.url, "COLONY_KEY": ""}))  # whose? a usage error
    assert rc1 == 0, err1
    assert rc2 == 1 and err2.startswith("error: invalid: ")
    assert rc3 == 0 and json.loads(out3) == {"key": b.public_hex, "ledger": "ledger/main", "available": 0,
                                             "locked": 0}
    assert rc4 == 2 and "--key" in err4
    (rc1, out1, _), (rc2, out2, _), (rc3, out3, _) = await asyncio.gather(
        colony("dm", "read", a.public_hex, "--json", env=b_env), colony("dm", "read", b.public_hex, env=a_env),
        colony("balance", env=a_env))
    msgs = json.loads(out1)
    assert rc1 == 0 and [(m["author"], m["kind"], m["body"], m["re"]) for m in msgs] == [
        (a.public_hex, "request", {"q": "ping?"}, None), (b.public_hex, "response", "pong", sent["id"])]
    lines = out2.splitlines()
    assert rc2 == 0 and len(lines) == 2 and "request" in lines[0] and lines[1].endswith("response  pong")
    assert rc3 == 0 and out3.strip() == "available 0  locked 0"
