"""collab/agent/lease.py: campaign, status, resign and watch through Agents against a real relay,
as the CLI and the MCP server use them; a lease held by an Agent is renewed while it lives and
resigned when it closes."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from collab.agent import Agent
from collab.agent.lease import lease_line
from collab.errors import Conflict, InvalidEvent
from collab.keys import Keypair

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def test_campaign_status_resign_watch(relay: Any) -> None:
    ka, kb = Keypair.generate(), Keypair.generate()
    feed = "lease/agents"
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(Agent(relay.url, ka))
        b = await stack.enter_async_context(Agent(relay.url, kb))
        r = await stack.enter_async_context(Agent(relay.url))
        lines: list[str] = []
        watch = asyncio.ensure_future(b.lease_watch(feed, lambda rec: lines.append(lease_line(rec)),
                                                     renewals=True))
        st = await a.lease_campaign(feed, ttl_ms=600, wait_s=10)
        assert st["holding"] and st["epoch"] == 1 and st["fence"] == {"lease": feed, "epoch": 1}
        assert 0 < st["time_left_ms"] <= 600
        st = await b.lease_campaign(feed, priority=2, ttl_ms=5000)
        assert not st["holding"] and st["holder"] == ka.public_hex
        assert [c["key"] for c in st["standby"]] == [kb.public_hex]
        seq = st["seq"]
        await r.wait_feed(feed, since=seq, timeout=10)  # a's Agent renews in the background
        assert (await a.lease_status(feed))["holding"]
        ack = await a.lease_resign(feed)
        assert ack["feed"] == feed
        with pytest.raises(Conflict):
            await a.lease_resign(feed)
        st = await b.lease_campaign(feed, wait_s=10)  # already a candidate: waits for its grant
        assert st["holding"] and st["epoch"] == 2
        await r.wait_feed(feed, since=st["seq"] - 1, timeout=10)
        watch.cancel()
        kinds = [x.split(" ", 2)[1] for x in lines]
        assert "renew" in kinds
        assert [k for k in kinds if k not in ("renew", "feed.policy")] == [
            "campaign", "granted", "campaign", "resign", "granted"]
        with pytest.raises(InvalidEvent):
            await a.lease_status("task/x")
    async with Agent(relay.url) as reader:  # b's Agent resigned when it closed
        st = await reader.lease_status(feed)
        assert st["holder"] is None and [h["end"] for h in st["history"]] == ["resigned", "resigned"]
