"""collab/agent/peers.py: vouching and trust, the directory and sealed direct messages through Agents
against a real relay (both backends)."""
from __future__ import annotations

from typing import Any

import pytest

from collab.agent import Agent
from collab.errors import InvalidEvent
from collab.keys import Keypair


async def test_trust_directory_and_direct_messages(relay: Any) -> None:
    a_key, b_key = Keypair.generate(), Keypair.generate()
    async with Agent(relay.url, a_key) as a, Agent(relay.url, b_key) as b:
        await a.vouch(b_key.public_hex, 800, note="good")
        await b.vouch(a_key.public_hex, 500)
        scores = await a.trust()
        assert scores["feed"] == "vouch/global" and {s["key"] for s in scores["scores"]} >= {a_key.public_hex,
                                                                                             b_key.public_hex}
        assert sum(s["score"] for s in scores["scores"]) == scores["scale"]
        assert (await a.trust("empty"))["scores"] == []

        assert (await a.profile("alice", "writes specs", ["write", "review"]))["feed"] == f"agent/{a_key.public_hex}"
        found = await b.agents(capability="review")
        assert [x["key"] for x in found] == [a_key.public_hex] and found[0]["name"] == "alice"
        assert await b.agents(capability="nothing") == []
        assert [x["key"] for x in await b.agents(text="alice", online=True)] == [a_key.public_hex]

        sent = await a.dm_send(b_key.public_hex, {"q": "ping?"})
        await b.dm_send(a_key.public_hex, "pong", kind="response", re=sent["id"])
        msgs = await b.dm_read(a_key.public_hex)
        assert [(m["author"], m["kind"], m["body"], m["re"]) for m in msgs] == [
            (a_key.public_hex, "request", {"q": "ping?"}, None), (b_key.public_hex, "response", "pong", sent["id"])]
        assert await a.dm_read(b_key.public_hex, since=1) == msgs[1:]
        with pytest.raises(InvalidEvent):
            await a.dm_send(a_key.public_hex, "to myself")
