"""``colony mcp`` end to end: the official MCP client starts real ``colony mcp`` processes (over
stdio, and over streamable HTTP) against a live relay. Two MCP agents and two SDK agents
(:class:`collab.agent.Agent`): every tool listed with a valid schema and called; an auction with
three bids run to acceptance with the balances checked; a document co-edited concurrently; a
resource subscription notified; bad arguments, relay refusals and a relay gone come back as tool
errors while the servers keep serving.

One scenario per transport: starting ``colony mcp`` (importing the SDK) is most of the cost, so
each transport starts its two servers once.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from mcp.shared.exceptions import MCPDeprecationWarning

from collab.agent import Agent
from collab.auctions import balances, grant
from collab.client import Client
from collab.keys import Keypair
from collab.mcpserver.server import TOOLS
from relay.ops.runner import serving
from tests.collab.mcpserver.harness import McpAgent, mcp_agents
from tests.conftest import make_config
from tests.wait import eventually

ALL_TOOLS = {t.name for t in TOOLS} | {"whoami", "feed_wait_new"}


class Tracked:
    """An MCP agent whose successful tool calls are recorded (to check every tool was called)."""

    def __init__(self, agent: McpAgent, called: set[str]) -> None:
        self.agent, self.called, self.me = agent, called, agent.me

    async def call(self, tool: str, **args: Any) -> Any:
        out = await self.agent.call(tool, **args)
        self.called.add(tool)
        return out


async def wait_kind(agent: Tracked, feed: str, kind: str, since: int = 0) -> dict[str, Any]:
    """Follow ``feed`` with feed_wait until a record of ``kind`` arrives; that record."""
    while True:
        got = await agent.call("feed_wait", feed=feed, since=since, timeout=20)
        assert isinstance(got, list), f"no {kind} on {feed} in time: {got}"
        for rec in got:
            if rec["kind"] == kind:
                return dict(rec)
        since = got[-1]["seq"]


async def subscribed_update(agent: McpAgent, uri: str, publish: Any) -> str:
    """Subscribe to ``uri`` the way the agent's protocol era does, run ``publish``, and return the
    URI of the first resource-updated notification."""
    if agent.transport == "stdio":  # handshake era: resources/subscribe, notifications on the session
        with warnings.catch_warnings():  # deprecated as of 2026-07-28; hosts of the handshake era use it
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await agent.session.session.subscribe_resource(uri)
        await publish()
        return await asyncio.wait_for(agent.updates.get(), 20)
    async with agent.session.listen(resource_subscriptions=[uri]) as sub:  # 2026-07-28: a listen stream
        await publish()
        async with asyncio.timeout(20):
            async for event in sub:
                return str(event.uri)
    raise AssertionError("the listen stream ended without an update")


# -- the sections of the scenario ----------------------------------------------------------------
async def feeds(a: Tracked, b: Tracked) -> None:
    ack = await a.call("feed_publish", feed="chat/room", kind="note.added", body={"n": 1})
    assert ack["seq"] == 1
    assert [f["feed"] for f in await b.call("feed_list", prefix="chat/")] == ["chat/room"]
    assert [(r["seq"], r["author"], r["body"]) for r in await b.call("feed_read", feed="chat/room")] == \
        [(1, a.me, {"n": 1})]
    waiting = asyncio.ensure_future(b.call("feed_wait", feed="chat/room", since=1, timeout=20))
    watching: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if not watching.done():
            watching.set_result(message)

    new_feed = asyncio.ensure_future(b.agent.session.call_tool(
        "feed_wait_new", {"prefix": "news/", "timeout": 20}, progress_callback=on_progress))
    assert await asyncio.wait_for(watching, 20) == "watching news/ for new feeds"  # the watch is in place
    assert not waiting.done() and not new_feed.done()  # (feed_wait reads from since=1: nothing to miss)
    await a.call("feed_publish", feed="chat/room", kind="note.added", body={"n": 2})
    await a.call("feed_publish", feed="news/today", kind="story.posted", body="hello")
    assert [r["body"] for r in await waiting] == [{"n": 2}]
    got = await new_feed
    assert not got.is_error and [f["feed"] for f in (got.structured_content or {})["feeds"]] == ["news/today"]
    b.called.add("feed_wait_new")
    assert (await b.call("feed_wait", feed="chat/room", since=2, timeout=0.3))["timeout"] is True


async def documents(a: Tracked, b: Tracked, c: Agent) -> None:
    """Two MCP agents and an SDK agent edit one document at once; every edit is in the merged text."""
    doc = "doc/shared"
    await a.call("doc_append", feed=doc, text="[start]")
    pieces = {name: [f"<{name}{i}>" for i in range(3)] for name in ("a", "b", "sdk")}

    async def mcp_edits(agent: Tracked, mine: list[str]) -> None:
        for i, p in enumerate(mine):
            if i % 2:
                await agent.call("doc_insert", feed=doc, index=0, text=p)
            else:
                await agent.call("doc_append", feed=doc, text=p)

    async def sdk_edits() -> None:
        for p in pieces["sdk"]:
            await c.doc_append(doc, p)

    await asyncio.gather(mcp_edits(a, pieces["a"]), mcp_edits(b, pieces["b"]), sdk_edits())
    texts = [(await a.call("doc_read", feed=doc))["text"], (await b.call("doc_read", feed=doc))["text"],
             (await c.doc_read(doc))["text"]]
    assert texts[0] == texts[1] == texts[2]
    for p in ["[start]", *(p for ps in pieces.values() for p in ps)]:
        assert texts[0].count(p) == 1, f"{p} missing from {texts[0]!r}"
    assert (await b.call("doc_replace", feed=doc, old="[start]", new="[begin]"))["text"].count("[begin]") == 1
    assert "[begin]" in (await c.doc_read(doc))["text"]


async def peers(a: Tracked, b: Tracked) -> None:
    await a.call("agent_profile", name="alice", description="summarises logs", capabilities=["summarise"])
    assert [x["key"] for x in await b.call("agent_search", capability="summarise")] == [a.me]
    await a.call("trust_vouch", subject=b.me, weight=800, note="reliable")
    assert {s["key"] for s in (await b.call("trust_scores"))["scores"]} >= {a.me, b.me}
    await a.call("dm_send", peer=b.me, body={"q": "ready?"})
    assert [(m["author"], m["body"]) for m in await b.call("dm_read", peer=a.me)] == [(a.me, {"q": "ready?"})]
    assert await a.call("ledger_balance") == {"key": a.me, "ledger": "ledger/main", "available": 100, "locked": 0}


async def auctions(url: str, a: Tracked, b: Tracked, c: Agent, d: Agent) -> None:
    """auction/keep: three bids (b through MCP, c and d through the SDK), b wins, delivers, a accepts.
    auction/drop: b alone bids, delivers, a rejects (b's stake is slashed to a). a watches
    auction/keep as a subscribed resource and is notified of b's bid."""
    for feed in ("auction/keep", "auction/drop"):
        await a.call("auction_open", feed=feed, task={"title": feed}, bid_window_ms=1500, result_window_ms=20_000,
                     reward=10, min_stake=2)
    uri = "colony://feed/auction/keep"
    assert await subscribed_update(a.agent, uri, lambda: b.call("auction_bid", feed="auction/keep", stake=30)) == uri
    state = json.loads((await a.agent.session.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
    assert state["feed"] == "auction/keep" and state["seq"] == 2 and state["state"]["status"] == "open"
    await c.auction_bid("auction/keep", 20)
    await d.auction_bid("auction/keep", 10, "cheap")
    await b.call("auction_bid", feed="auction/drop", stake=5, note="on it")
    assert {x["feed"] for x in await b.call("auction_list")} == {"auction/keep", "auction/drop"}
    for feed in ("auction/keep", "auction/drop"):
        award = await wait_kind(b, feed, "auction.award")
        assert award["body"]["winner"] == b.me
        await b.call("auction_deliver", feed=feed, result={"summary": feed})
    assert award["body"]["standby"] == [] and (await a.call("auction_status", feed="auction/keep"))["standby"] == \
        [c.me, d.me]
    await a.call("auction_accept", feed="auction/keep")
    await a.call("auction_reject", feed="auction/drop", reason="off topic")
    keep = await c.auction_status("auction/keep")
    assert keep["status"] == "completed" and keep["result"]["result"] == {"summary": "auction/keep"}
    assert (await b.call("auction_status", feed="auction/drop"))["status"] == "failed"
    assert {x["feed"] for x in await a.call("auction_list", status="any")} == {"auction/keep", "auction/drop"}
    # a: 100 - 10 (reward paid) + 5 (b's stake on drop, slashed to a); b: 100 + 10 (reward) - 5 (slashed);
    # c and d were standbys: their stakes come back when the auction completes
    want = {a.me: {"available": 95, "locked": 0}, b.me: {"available": 105, "locked": 0},
            c.me: {"available": 100, "locked": 0}, d.me: {"available": 100, "locked": 0}}

    async def settled() -> bool:
        return {k: v for k, v in (await balances(url)).items() if k in want} == want

    await eventually(settled, 20, "the ledger settles both auctions")
    assert (await b.call("ledger_balance", key=b.me))["available"] == 105


async def tasks(a: Tracked, b: Tracked) -> None:
    await a.call("task_open", feed="task/build", title="build it", input={"repo": "x"})
    await a.call("task_spawn", feed="task/build", sub="compile", assignee=b.me, title="compile")
    await a.call("task_spawn", feed="task/build", sub="test", assignee=b.me, title="test", heartbeat_ms=60_000)
    assert {x["sub"] for x in await b.call("task_assigned")} == {"compile", "test"}
    await b.call("task_progress", feed="task/build", sub="compile", done=1, total=3, note="parsing")
    await b.call("task_checkpoint", feed="task/build", sub="compile", state={"files": 12})
    resumed = await b.call("task_resume", feed="task/build", sub="compile")
    assert resumed["checkpoint"] == {"files": 12} and resumed["status"] == "working"
    await b.call("task_done", feed="task/build", sub="compile", result={"binary": "a.out"})
    await b.call("task_fail", feed="task/build", sub="test", reason="no tests found")
    status = await a.call("task_status", feed="task/build")
    assert {s["sub"]: s["status"] for s in status["subtasks"]} == {"compile": "completed", "test": "failed"}
    await a.call("task_finish", feed="task/build", status="completed", result={"ok": True})
    assert (await b.call("task_status", feed="task/build"))["status"] == "completed"


async def leases(a: Tracked, b: Tracked) -> None:
    held = await a.call("lease_campaign", feed="lease/lead", ttl_ms=5000, wait_s=10)
    assert held["holding"] and held["fence"] == {"lease": "lease/lead", "epoch": 1}
    assert (await b.call("lease_status", feed="lease/lead"))["holder"] == a.me
    await a.call("lease_resign", feed="lease/lead")
    assert (await b.call("lease_status", feed="lease/lead"))["holder"] is None


async def errors(x: McpAgent, y: McpAgent) -> None:
    """Bad arguments and refusals are tool errors naming what is wrong; the server keeps serving."""
    assert "bad argument `stake`" in await x.fail("auction_bid", feed="auction/keep", stake="lots")
    assert "'feed' is a required property" in await x.fail("doc_read")
    assert "Additional properties" in await x.fail("whoami", extra=1)
    assert "unknown tool 'fly'" in await x.fail("fly")
    closed = await x.fail("task_done", feed="task/build", sub="compile")
    assert closed.startswith("refused (conflict): the task is closed")
    assert (await x.fail("auction_bid", feed="auction/keep", stake=5)).startswith("refused (")
    poor = await y.fail("auction_open", feed="auction/big", task="x", bid_window_ms=1000, result_window_ms=1000,
                        reward=10_000)
    assert poor.startswith("refused (insufficient_funds): ") and "ledger_balance" in poor
    assert "occurs 3 times" in await x.fail("doc_replace", feed="doc/shared", old="<a", new="<A")
    assert "occurs 0 times" in await x.fail("doc_replace", feed="doc/shared", old="nope", new="")
    assert (await x.call("whoami"))["key"] == x.me


async def test_mcp_agents_over_a_live_relay(tmp_path: Path, transport: str) -> None:
    op = Keypair.generate()
    called: set[str] = set()
    relay_cm = serving(make_config(tmp_path / "relay", operators=(op.public_hex,)))
    relay = await relay_cm.__aenter__()
    try:
        async with mcp_agents(relay.url, tmp_path, transport, "a", "b") as ag, contextlib.AsyncExitStack() as st:
            a, b = Tracked(ag["a"], called), Tracked(ag["b"], called)
            c, d = [await st.enter_async_context(Agent(relay.url, Keypair.generate())) for _ in range(2)]
            listed = (await ag["a"].session.list_tools()).tools
            assert {t.name for t in listed} == ALL_TOOLS
            for t in listed:
                Draft202012Validator.check_schema(t.input_schema)
                assert t.input_schema["additionalProperties"] is False and len(t.description or "") > 100
            assert [(await m.call("whoami"))["key"] for m in (a, b)] == [a.me, b.me]
            async with Client(relay.url, op) as operator:
                for k in (a.me, b.me, c.me, d.me):
                    await grant(operator, k, 100)

            await feeds(a, b)
            await documents(a, b, c)
            await peers(a, b)
            await auctions(relay.url, a, b, c, d)
            await tasks(a, b)
            await leases(a, b)
            assert called == ALL_TOOLS, f"not called: {sorted(ALL_TOOLS - called)}"
            await errors(ag["a"], ag["b"])

            # the relay goes away: a tool says so, and the server still answers
            await relay_cm.__aexit__(None, None, None)
            relay_cm = None
            gone = await ag["a"].fail("feed_list", prefix="")
            assert gone.startswith("unreachable: cannot reach ") and "retry" in gone.lower()
            assert (await ag["a"].call("whoami"))["key"] == a.me
    finally:
        if relay_cm is not None:
            await relay_cm.__aexit__(None, None, None)
