"""collab/agent/coord.py (and the ledger balance of peers.py): auctions and task trees through Agents
against a real relay, as the CLI and the MCP server use them."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from collab.agent import Agent
from collab.auctions import Auction, grant
from collab.client import Client
from collab.errors import ColonyError, RelayError, Unauthorized
from collab.keys import Keypair


async def until_available(agent: Agent, amount: int) -> None:
    """Wait for the ledger records until this agent's available balance is ``amount``."""
    seq = (await agent.get_json("/feeds/ledger/main"))["seq"]
    while (await agent.balance())["available"] != amount:
        got = await agent.wait_feed("ledger/main", since=seq, timeout=10)
        assert isinstance(got, list), f"the balance never reached {amount}"
        seq = got[-1]["seq"]


async def test_auctions_tasks_and_the_ledger(start_relay: Callable[..., Any]) -> None:
    op, req_key, w_key = (Keypair.generate() for _ in range(3))
    relay = await start_relay("a", operators=(op.public_hex,))
    async with contextlib.AsyncExitStack() as stack:
        opc = await stack.enter_async_context(Client(relay.url, op))
        req = await stack.enter_async_context(Agent(relay.url, req_key))
        w = await stack.enter_async_context(Agent(relay.url, w_key))
        assert await w.balance() == {"key": w_key.public_hex, "ledger": "ledger/main", "available": 0, "locked": 0}
        await grant(opc, req_key.public_hex, 10)
        await grant(opc, w_key.public_hex, 30)
        feed = "auction/a1"
        await req.auction_open(feed, {"do": "it"}, bid_window_ms=400, result_window_ms=30_000, reward=10)
        listed = await w.auction_list()
        assert [(x["feed"], x["status"], x["reward"], x["bids"]) for x in listed] == [(feed, "open", 10, 0)]
        assert (await w.auction_bid(feed, 20, note="me"))["seq"] == 2
        with pytest.raises(RelayError) as err:
            await w.auction_bid(feed, 5)
        assert err.value.code == "conflict"
        assert await w.balance() == {"key": w_key.public_hex, "ledger": "ledger/main", "available": 10, "locked": 20}
        assert (await req.balance(w_key.public_hex))["locked"] == 20
        async with Auction(opc, feed) as view:
            await view.wait_assigned(w_key.public_hex)
        status = await w.auction_status(feed)
        assert status["status"] == "awarded" and status["assignee"] == w_key.public_hex and status["seq"] == 3
        assert await w.auction_list() == []  # open ones only, by default
        assert [x["status"] for x in await w.auction_list(status=None)] == ["awarded"]
        await w.auction_deliver(feed, {"answer": 42})
        with pytest.raises(RelayError):
            await w.auction_accept(feed)  # only the requester decides
        await req.auction_accept(feed)
        assert (await req.auction_status(feed))["status"] == "completed"
        await until_available(w, 40)  # the relay pays out in a ledger record after the accept

        t = "task/t1"
        await req.task_open(t, "build it", {"spec": 1})
        await req.task_spawn(t, "s1", w_key.public_hex, "part one", input={"n": 1})
        assert [(x["feed"], x["sub"], x["title"]) for x in await w.task_assigned()] == [(t, "s1", "part one")]
        assert await req.task_assigned() == []
        resume = await w.task_resume(t, "s1")
        assert resume["checkpoint"] is None and resume["checkpoint_seq"] == 0 and resume["input"] == {"n": 1}
        with pytest.raises(Unauthorized):
            await req.task_resume(t, "s1")
        await w.task_progress(t, "s1", 1, 3, note="a third")
        await w.task_checkpoint(t, "s1", {"at": 1})
        assert (await w.task_resume(t, "s1"))["checkpoint"] == {"at": 1}
        st = await req.task_status(t)
        assert st["feed"] == t and st["leader"] == req_key.public_hex and st["subtasks"][0]["progress"]["done"] == 1
        await w.task_done(t, "s1", {"ok": True})
        assert await w.task_assigned() == []
        await req.task_spawn(t, "s2", w_key.public_hex, "part two")
        await w.task_fail(t, "s2", "cannot")
        with pytest.raises(ColonyError):
            await w.task_finish(t)  # only the leader closes
        await req.task_finish(t, result={"all": "done"})
        st = await req.task_status(t)
        assert st["status"] == "completed" and [s["status"] for s in st["subtasks"]] == ["completed", "failed"]
        json.dumps(st)


async def test_a_resumed_subtask_is_heartbeaten_until_done(relay: Any) -> None:
    """task_resume keeps the subtask alive while the Agent lives: the relay flags the subtask nobody
    resumed ``stalled`` at the end of its window, never the resumed one (it heartbeats at a third)."""
    lead_key, w_key = Keypair.generate(), Keypair.generate()
    async with Agent(relay.url, lead_key) as lead, Agent(relay.url, w_key) as w:
        t = "task/beat"
        await lead.task_open(t, "keep going")
        await lead.task_spawn(t, "kept", w_key.public_hex, "resumed", heartbeat_ms=1500)
        await w.task_resume(t, "kept")
        ack = await lead.task_spawn(t, "idle", w_key.public_hex, "never resumed", heartbeat_ms=1500)
        seq, stalled, beats = ack["seq"], [], 0
        while not stalled:  # the relay's task.stalled for "idle"; "kept" beats meanwhile
            got = await lead.wait_feed(t, since=seq, timeout=20)
            assert isinstance(got, list), "no stall was flagged"
            seq = got[-1]["seq"]
            stalled += [r["body"]["sub"] for r in got if r["kind"] == "task.stalled"]
            beats += sum(r["kind"] == "task.heartbeat" and r["body"]["sub"] == "kept" for r in got)
        assert stalled == ["idle"] and beats >= 2
        assert [(s["sub"], s["stalled"]) for s in (await lead.task_status(t))["subtasks"]] == [
            ("kept", False), ("idle", True)]
        await w.task_done(t, "kept", "finished")
        assert w._workers == {}  # the heartbeat stopped with it
