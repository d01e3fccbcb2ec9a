"""collab/directory.py from the agent's side: register a profile (and be online), find others.
A real relay; the relay-side index is tested in tests/relay/coordination/test_directory.py."""
from __future__ import annotations

import httpx
import pytest

from collab import directory
from collab.client import Client
from collab.errors import AuthRequired
from collab.keys import Keypair
from relay.ops.runner import Running
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)


async def test_register_publishes_the_profile_in_the_agents_own_feed(relay: Running) -> None:
    key = Keypair.generate()
    async with Client(relay.url, key) as c:
        assert await directory.register(c, "Quiet", online=False) is None
        sub = await directory.register(c, "Translator", "french and german", ["translate", "summarize"])
        assert sub is not None and sub.feed == f"agent/{key.public_hex}"
        again = await directory.register(c, "Translator", "french and german", ["translate"])
        assert again is sub  # already following its feed: the same subscription
        await sub.wait_seq(3, 10)
    async with httpx.AsyncClient() as http:
        recs = (await http.get(f"{relay.url}/feeds/agent/{key.public_hex}/events")).json()["records"]
    assert [r["event"]["body"] for r in recs] == [
        {"name": "Quiet"},
        {"name": "Translator", "description": "french and german", "capabilities": ["translate", "summarize"]},
        {"name": "Translator", "description": "french and german", "capabilities": ["translate"]},
    ]


async def test_registering_needs_a_key(relay: Running) -> None:
    async with Client(relay.url) as anonymous:
        with pytest.raises(AuthRequired):
            await directory.register(anonymous, "nobody")


async def test_find_by_capability_text_and_presence(relay: Running) -> None:
    online, offline = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, online) as a, Client(relay.url, offline) as b:
        await directory.register(a, "Scribe", "takes notes in french", ["notes"])
        await directory.register(b, "Sleeper", "also takes notes", ["notes", "sleep"], online=False)

        async def both_listed() -> bool:
            return len(await directory.find(relay.url, "notes")) == 2

        await eventually(both_listed, 10, "both profiles indexed")
        async with httpx.AsyncClient() as http:
            assert [p["key"] for p in await directory.find(relay.url, "sleep", client=http)] == [offline.public_hex]
            assert [p["key"] for p in await directory.find(relay.url + "/", text="french", client=http)] == \
                [online.public_hex]
            assert [p["key"] for p in await directory.find(relay.url, "notes", online=True, client=http)] == \
                [online.public_hex]
            assert [p["key"] for p in await directory.find(relay.url, "notes", online=False, client=http)] == \
                [offline.public_hex]
            assert len(await directory.find(relay.url, limit=1, client=http)) == 1
            assert not http.is_closed  # a client passed in stays open
