"""relay/ops/cli_coord.py: ``colony auction ...`` and ``colony task ...`` run as the real ``colony``
subprocess against an in-process relay (with an operator that grants stake): a whole auction and a
task tree, ``--json``, and exit 1 with the relay's code on a real refusal."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.auctions import Auction, grant
from collab.client import Client
from collab.keys import Keypair
from relay.ops.runner import Running, serving
from tests.conftest import make_config
from tests.relay.ops.test_cli import colony

OPERATOR = Keypair.generate()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(make_config(tmp_path / "relay", operators=(OPERATOR.public_hex,))) as running:
        yield running


def agent_env(tmp_path: Path, relay: Running, name: str) -> tuple[Keypair, dict[str, str]]:
    key = Keypair.generate()
    key.save(tmp_path / name)
    return key, {"COLONY_RELAY": relay.url, "COLONY_KEY": str(tmp_path / name)}


async def test_an_auction_from_the_shell(relay: Running, tmp_path: Path) -> None:
    req, req_env = agent_env(tmp_path, relay, "req.key")
    bidder, bid_env = agent_env(tmp_path, relay, "bidder.key")
    feed, other = "auction/cli", "auction/long"
    async with Client(relay.url, OPERATOR) as op, Client(relay.url, req) as rc_, Client(relay.url, bidder) as bc:
        await grant(op, req.public_hex, 10)
        await grant(op, bidder.public_hex, 30)
        # `other` stays open (a long bid window): open, list and bid on it from the shell
        rc, out, err = await colony("auction", "open", other, '{"do": "later"}', "--bid-window", "600000", env=req_env)
        assert rc == 0 and out.startswith(f"{other}#1 "), err
        # `feed` is awarded soon: opened and bid on in-process (no race of a subprocess with its bid
        # window), then delivered and decided from the shell
        await Auction(rc_, feed).open("fix the parser", bid_window_ms=300, result_window_ms=600_000, reward=10)
        await Auction(bc, feed).bid(20)
        (rc1, out1, err1), (rc3, out3, _) = await asyncio.gather(
            colony("auction", "bid", other, "5", "--note", "mine", "--json", env=bid_env),
            colony("auction", "list", "auction/l", "--json", env=bid_env))
        assert rc1 == 0 and json.loads(out1)["seq"] == 2, err1
        assert rc3 == 0 and [(x["feed"], x["status"], x["reward"], x["task"]) for x in json.loads(out3)] == [
            (other, "open", 0, {"do": "later"})]
        rc, out, err = await colony("auction", "bid", other, "5", env=bid_env)
        assert rc == 1 and out == "" and err.startswith("error: conflict: ")  # a second bid: refused
        async with Auction(op, feed) as view:
            await view.wait_assigned(bidder.public_hex)  # the relay's award at the bid deadline
        rc, out, err = await colony("auction", "deliver", feed, '{"patch": "..."}', env=bid_env)
        assert rc == 0, err
        (rc1, out1, _), (rc2, _, err2) = await asyncio.gather(
            colony("auction", "status", feed, "--json", env=req_env),
            colony("auction", "accept", feed, env=bid_env))  # only the requester decides
        st = json.loads(out1)
        assert rc1 == 0 and st["status"] == "awarded" and st["assignee"] == bidder.public_hex
        assert st["result"]["result"] == {"patch": "..."}
        assert rc2 == 1 and err2.startswith("error: ")
        rc, _, err = await colony("auction", "reject", feed, "not good enough", env=req_env)
        assert rc == 0, err
        rc, out, _ = await colony("auction", "list", "--status", "any", env=req_env)
        assert rc == 0 and [line.split("  ")[:2] for line in out.splitlines()] == [[feed, "failed"],
                                                                                 [other, "open"]]


async def test_a_task_tree_from_the_shell(relay: Running, tmp_path: Path) -> None:
    _, lead_env = agent_env(tmp_path, relay, "lead.key")
    worker, work_env = agent_env(tmp_path, relay, "worker.key")
    t = "task/cli"
    assert (await colony("task", "open", t, "build it", "--input", '{"spec": 1}', env=lead_env))[0] == 0
    (rc1, _, err1), (rc2, _, err2), (rc3, _, err3) = await asyncio.gather(
        colony("task", "spawn", t, "s1", worker.public_hex, "part one", "--input", "[1, 2]", env=lead_env),
        colony("task", "spawn", t, "s2", worker.public_hex, "part two", env=lead_env),
        colony("task", "finish", t, env=work_env))  # only the leader closes
    assert rc1 == rc2 == 0, err1 + err2
    assert rc3 == 1 and err3.startswith("error: ")
    (rc1, out1, _), (rc2, out2, _), (rc3, _, err3) = await asyncio.gather(
        colony("task", "assigned", "--json", env=work_env),
        colony("task", "progress", t, "s1", "1", "2", "--note", "half", env=work_env),
        colony("task", "checkpoint", t, "s1", '{"at": 1}', env=work_env))
    assert rc1 == 0 and sorted((x["sub"], x["title"]) for x in json.loads(out1)) == [("s1", "part one"),
                                                                                  ("s2", "part two")]
    assert rc2 == 0 and out2.startswith(f"{t}#")
    assert rc3 == 0, err3
    (rc1, out1, _), (rc2, _, _), (rc3, _, _) = await asyncio.gather(
        colony("task", "resume", t, "s1", env=work_env),
        colony("task", "done", t, "s1", '{"ok": true}', env=work_env),  # resume shows the checkpoint either way
        colony("task", "fail", t, "s2", "no time", env=work_env))
    assert rc1 == 0 and "checkpoint at seq" in out1 and out1.splitlines()[-1] == '{"at":1}'
    assert rc2 == rc3 == 0
    assert (await colony("task", "finish", t, "--result", "shipped", env=lead_env))[0] == 0
    (rc1, out1, _), (rc2, out2, _), (rc3, out3, _) = await asyncio.gather(
        colony("task", "status", t, "--json", env=lead_env), colony("task", "status", t, env=lead_env),
        colony("task", "assigned", env=work_env))
    st = json.loads(out1)
    assert rc1 == 0 and st["status"] == "completed" and st["result"] == "shipped"
    assert sorted((s["sub"], s["status"]) for s in st["subtasks"]) == [("s1", "completed"), ("s2", "failed")]
    assert rc2 == 0 and out2.startswith(f"{t}: completed") and "  s2  failed" in out2
    assert rc3 == 0 and out3.strip() == "(nothing assigned to this key)"
