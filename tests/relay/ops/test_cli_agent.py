"""relay/ops/cli_agent.py: the agent commands (``colony grant``, ``doc cat --json``, ``replay
--json``) against an in-process relay, run as the real ``colony`` subprocess; ``roots_json``.
(``doc append``/``cat``/``tail``/``replay`` round trips are in tests/relay/ops/test_cli.py.)"""
from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from collab.capability import Capability
from collab.client import Client
from collab.keys import Keypair
from relay.ops.cli_feeds import roots_json
from relay.ops.runner import Running, serving
from tests.conftest import make_config
from tests.relay.ops.test_cli import colony


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    """One in-process relay (SQLite): the commands talk to it like any agent, whatever its store."""
    async with serving(make_config(tmp_path / "relay")) as running:
        yield running


def test_roots_json_reads_each_root_as_its_type() -> None:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "hello")
    doc.get("meta", type=Map)["title"] = "T"
    doc.get("items", type=Array).extend([1, "two"])
    assert roots_json(doc.get_update()) == {"items": [1.0, "two"], "meta": {"title": "T"}, "text": "hello"}
    assert roots_json(Doc().get_update()) == {}


def key_file(tmp_path: Path, name: str) -> tuple[Keypair, Path]:
    key = Keypair.generate()
    path = tmp_path / name
    key.save(path)
    return key, path


async def test_grant_creates_the_feed_and_prints_the_owners_capability(relay: Running, tmp_path: Path) -> None:
    owner, owner_file = key_file(tmp_path, "owner.key")
    _, other_file = key_file(tmp_path, "other.key")
    env = {"COLONY_RELAY": relay.url}
    rc, out, err = await colony("grant", "doc/shared", "--write", "--ttl", "60", "--key", str(owner_file), env=env)
    assert rc == 0, err
    assert "had no records: created it" in err and "read+write" in err
    cap = Capability.from_token(out.strip())
    assert cap.feed == "doc/shared" and cap.issuer == owner.public_hex and "write" in cap.rights
    rc, out, err = await colony("grant", "doc/shared", "--key", str(owner_file), env=env)  # read only, owned now
    assert rc == 0 and "created" not in err and Capability.from_token(out.strip()).rights == ("read",)
    rc, out, err = await colony("grant", "doc/shared", "--key", str(other_file), env=env)
    assert rc == 1 and out == "" and f"owned by {owner.public_hex}" in err
    rc, _, err = await colony("grant", "task/x", "--key", str(owner_file), env=env)
    assert rc == 2 and "doc/ feeds" in err
    rc, _, err = await colony("grant", "doc/shared", "--ttl", "0", "--key", str(owner_file), env=env)
    assert rc == 2 and "--ttl" in err


async def test_cat_and_replay_as_json(relay: Running, tmp_path: Path) -> None:
    _, kf = key_file(tmp_path, "a.key")
    env = {"COLONY_RELAY": relay.url, "COLONY_KEY": str(kf)}
    assert (await colony("doc", "append", "doc/j", "one", env=env))[0] == 0
    assert (await colony("doc", "append", "doc/j", " two", env=env))[0] == 0
    rc, out, _ = await colony("doc", "cat", "doc/j", "--json", env=env)
    cat = json.loads(out)
    assert rc == 0 and cat["feed"] == "doc/j" and cat["seq"] == 2 and cat["roots"] == {"text": "one two"}
    rc, out, _ = await colony("replay", "doc/j", "--json", "--verify", env=env)
    rep = json.loads(out)
    assert rc == 0 and rep["verified"] is True and rep["anomalies"] == [] and rep["seq"] == 2
    assert rep["state"] == {"text": "one two"} and rep["head"] == cat["head"]


async def test_signing_commands_need_a_readable_key(relay: Running, tmp_path: Path) -> None:
    bad = tmp_path / "nope.key"
    rc, _, err = await colony("grant", "doc/x", "--key", str(bad), env={"COLONY_RELAY": relay.url})
    assert rc != 0 and "cannot load key" in err and os.fspath(bad) in err


async def test_replay_reads_a_private_feed_as_its_reader(relay: Running, tmp_path: Path) -> None:
    """`colony replay --key`: the reads are signed (docs/protocol.md 15.1), so the owner (or a
    granted reader) of a members feed replays it; anonymously, the relay refuses the records."""
    owner, kf = key_file(tmp_path, "owner.key")
    env = {"COLONY_RELAY": relay.url, "COLONY_KEY": str(kf)}
    async with Client(relay.url, owner, reconnect=False) as client:
        await client.publish("chat/private", "feed.policy", {"policy": "members"})
        await client.publish("chat/private", "msg", {"text": "only for members"})
    rc, _, err = await colony("replay", "chat/private", "--json", env={"COLONY_RELAY": relay.url})
    assert rc != 0 and "unauthorized" in err
    rc, out, _ = await colony("replay", "chat/private", "--json", "--verify", "--key", str(kf), env=env)
    rep = json.loads(out)
    assert rc == 0 and rep["verified"] is True and rep["seq"] == 2
