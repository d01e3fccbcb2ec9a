"""Lease tools: valid closed schemas matching their Agent methods, and campaign, status and resign
called through the MCP server's tool dispatch against a live relay (a standby is granted the lease
when the holder resigns; the server renews a lease it holds)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from collab.agent import Agent
from collab.keys import Keypair
from collab.mcpserver.server import ColonyMcp
from collab.mcpserver.spec import ToolSpec
from collab.mcpserver.tools_lease import TOOLS
from tests.collab.mcpserver.tools_check import check_tool


@pytest.mark.parametrize("spec", TOOLS, ids=[t.name for t in TOOLS])
def test_each_tool_has_a_valid_closed_schema_matching_its_agent_method(spec: ToolSpec) -> None:
    check_tool(spec)


def test_stale_epoch_is_explained_where_a_model_meets_it() -> None:
    assert "`stale_epoch`" in next(t for t in TOOLS if t.name == "lease_campaign").description


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_campaign_status_resign_through_the_tools(relay: Any) -> None:
    async with Agent(relay.url, Keypair.generate()) as a, Agent(relay.url, Keypair.generate()) as b:
        ma, mb = ColonyMcp(a, url=relay.url), ColonyMcp(b, url=relay.url)

        async def call(m: ColonyMcp, name: str, **args: Any) -> Any:
            res = await m.call(name, args)
            assert not res.is_error, res.content
            return json.loads(res.content[0].text)  # type: ignore[union-attr]

        st = await call(ma, "lease_campaign", feed="lease/mcp", ttl_ms=1000, wait_s=10)
        assert st["holding"] and st["fence"] == {"lease": "lease/mcp", "epoch": 1}
        st = await call(mb, "lease_campaign", feed="lease/mcp", priority=1)
        assert not st["holding"] and st["standby"][0]["key"] == b.me
        await call(ma, "feed_publish", feed="notes/mcp", kind="note",
                   body={"n": 1, "fence": {"lease": "lease/mcp", "epoch": 1}})
        res = await mb.call("feed_publish", {"feed": "notes/mcp", "kind": "note",
                                             "body": {"fence": {"lease": "lease/mcp", "epoch": 1}}})
        assert res.is_error and "stale_epoch" in res.content[0].text  # type: ignore[union-attr]
        await call(ma, "lease_resign", feed="lease/mcp")
        st = await call(mb, "lease_campaign", feed="lease/mcp", wait_s=10)
        assert st["holding"] and st["epoch"] == 2
        st = await call(ma, "lease_status", feed="lease/mcp")
        assert st["holder"] == b.me and not st["holding"] and st["fence"] is None
