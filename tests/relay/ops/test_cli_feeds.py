"""relay/ops/cli_feeds.py: ``colony publish``, ``feeds``, ``read`` and ``doc append|insert|replace|cat``
run as the real ``colony`` subprocess against an in-process relay: human output, ``--json``, and
exit 1 with ``error: <code>: ...`` on a real refusal."""
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


def agent_env(tmp_path: Path, relay: Running, name: str = "a.key") -> tuple[Keypair, dict[str, str]]:
    key = Keypair.generate()
    key.save(tmp_path / name)
    return key, {"COLONY_RELAY": relay.url, "COLONY_KEY": str(tmp_path / name)}


async def test_publish_feeds_and_read(relay: Running, tmp_path: Path) -> None:
    key, env = agent_env(tmp_path, relay)
    rc, out, err = await colony("publish", "chat/x", "msg", '{"text": "hi"}', env=env)
    assert rc == 0, err
    assert out.startswith("chat/x#1 ")
    rc, out, err = await colony("publish", "chat/x", "msg", '"second"', "--json", env=env)
    ack = json.loads(out)
    assert rc == 0 and ack["feed"] == "chat/x" and ack["seq"] == 2 and ack["dup"] is False and len(ack["id"]) == 64
    (rc1, out1, _), (rc2, out2, _), (rc3, out3, _), (rc4, out4, err4) = await asyncio.gather(
        colony("feeds", "chat/", "--json", env=env),
        colony("read", "chat/x", "--json", "--since", "1", env=env),
        colony("read", "chat/x", env=env),
        colony("publish", "chat/x", "feed.policy", '{"policy": "nonsense"}', env=env))
    assert rc1 == 0 and [(f["feed"], f["seq"]) for f in json.loads(out1)] == [("chat/x", 2)]
    recs = json.loads(out2)
    assert rc2 == 0 and [(r["seq"], r["kind"], r["author"], r["body"]) for r in recs] == [
        (2, "msg", key.public_hex, "second")]
    lines = out3.splitlines()
    assert rc3 == 0 and len(lines) == 2 and '{"text":"hi"}' in lines[0] and key.public_hex[:12] in lines[0]
    assert rc4 == 1 and out4 == "" and err4.startswith("error: invalid: ")  # the relay's refusal and code


async def test_doc_edits_and_cat(relay: Running, tmp_path: Path) -> None:
    _, env = agent_env(tmp_path, relay)
    rc, out, err = await colony("doc", "cat", "doc/d", env=env)
    assert rc == 1 and out == "" and "doc/d has no records" in err  # says so, exits 1
    assert await colony("doc", "append", "doc/d", "hello world", env=env) == (0, "1\n", "")
    rc, out, err = await colony("doc", "insert", "doc/d", "5", ",", "--json", env=env)
    assert rc == 0 and json.loads(out) == {"feed": "doc/d", "seq": 2, "text": "hello, world"}
    assert (await colony("doc", "replace", "doc/d", "world", "colony", env=env))[:2] == (0, "3\n")
    (rc1, _, err1), (rc2, out2, _), (rc3, out3, _) = await asyncio.gather(
        colony("doc", "replace", "doc/d", "absent", "x", env=env),
        colony("doc", "cat", "doc/d", env=env),
        colony("doc", "cat", "doc/d", "--json", env={"COLONY_RELAY": relay.url}))  # anonymous reader
    assert rc1 == 1 and err1.startswith("error: invalid: ") and "occurs 0 times" in err1
    assert rc2 == 0 and out2 == "hello, colony\n"
    cat = json.loads(out3)
    assert rc3 == 0 and cat["seq"] == 3 and cat["text"] == "hello, colony" and cat["roots"] == {"text": "hello, colony"}
