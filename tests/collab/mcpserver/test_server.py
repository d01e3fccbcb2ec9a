"""ColonyMcp in process: the official client connected to the server object directly (no
subprocess), in both protocol eras, against a real relay: tool errors never escape, resources
list and read, subscriptions notify (``resources/subscribe`` and ``subscriptions/listen``)."""
from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from collab.agent import Agent
from collab.keys import Keypair
from collab.mcpserver.server import ColonyMcp
from relay.ops.runner import Running, serving
from tests.conftest import make_config


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(make_config(tmp_path / "relay")) as running:
        yield running


def text_of(res: types.CallToolResult) -> str:
    block = res.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_tools_resources_and_subscriptions_in_both_eras(relay: Running) -> None:
    updates: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.put_nowait(str(message.params.uri))

    async with Agent(relay.url, Keypair.generate()) as agent, Agent(relay.url, Keypair.generate()) as other:
        app = ColonyMcp(agent, url=relay.url, key=agent.me)
        assert agent.me in (app.server.instructions or "")
        async with mcp.Client(app.server, mode="legacy", message_handler=on_message) as legacy:
            res = await legacy.call_tool("feed_publish", {"feed": "chat/x", "kind": "note.added", "body": "hi"})
            assert not res.is_error and json.loads(text_of(res))["seq"] == 1
            assert res.structured_content is not None and res.structured_content["seq"] == 1
            listed = await legacy.call_tool("feed_list", {"prefix": "chat/"})
            assert listed.structured_content == {"result": json.loads(text_of(listed))}  # lists are wrapped
            bad = await legacy.call_tool("feed_publish", {"feed": "chat/x", "kind": "Bad Kind", "body": 1})
            assert bad.is_error and text_of(bad).startswith("bad argument `kind` for feed_publish")
            refused = await legacy.call_tool("feed_publish", {"feed": "ledger/main", "kind": "ledger.grant",
                                                              "body": {"to": agent.me, "amount": 5}})
            assert refused.is_error and text_of(refused).startswith("refused (unauthorized): ")

            templates = await legacy.list_resource_templates()
            assert [t.uri_template for t in templates.resource_templates] == ["colony://feed/{feed}"]
            assert [r.uri for r in (await legacy.list_resources()).resources] == ["colony://feed/chat/x"]
            read = await legacy.read_resource("colony://feed/chat/x")
            assert json.loads(read.contents[0].text)["seq"] == 1  # type: ignore[union-attr]
            with pytest.raises(MCPError, match="not a Colony feed resource"):
                await legacy.read_resource("file:///etc/passwd")

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await legacy.subscribe_resource("colony://feed/chat/x")
            await other.publish("chat/x", "note.added", "again")
            assert await asyncio.wait_for(updates.get(), 10) == "colony://feed/chat/x"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await legacy.unsubscribe_resource("colony://feed/chat/x")
            assert app.follower.feeds == []

        async with mcp.Client(app.server) as modern:  # 2026-07-28, in process
            assert modern.protocol_version == "2026-07-28"
            async with modern.listen(resource_subscriptions=["colony://feed/chat/y"]) as sub:
                assert app.follower.feeds == ["chat/y"]
                await other.publish("chat/y", "note.added", 1)
                async with asyncio.timeout(10):
                    event = await anext(aiter(sub))
                assert str(event.uri) == "colony://feed/chat/y"  # type: ignore[union-attr]
            unknown = await modern.call_tool("fly", {})
            assert unknown.is_error and "unknown tool 'fly'" in text_of(unknown)
        await app.aclose()
