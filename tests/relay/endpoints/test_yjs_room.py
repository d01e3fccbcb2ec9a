"""relay/endpoints/yjs_room.py: the pure helpers that turn an agent into an awareness state
(client id, colour, state JSON, a cleaned display name), and a Room seen through real /yjs
clients (tests/yclient.py) on a real relay: one room's clients all get a native agent's edits
and each other's awareness, a client that leaves is removed from the others' awareness, and
an agent in the doc's feed shows up as its state."""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from collab.client import Client
from collab.doc import Doc
from collab.keys import Keypair
from relay.endpoints.yjs_room import MAX_NAME, agent_client_id, agent_color, agent_state, clean_name
from relay.ops.runner import Running
from tests.yclient import YClient

FAST: dict[str, Any] = {"backoff_base": 0.02, "backoff_max": 0.2}


def test_agent_client_id_is_a_stable_uint32_of_the_key() -> None:
    key = "ab" * 32
    expected = int.from_bytes(hashlib.sha256(b"colony/awareness\n" + key.encode()).digest()[:4], "big")
    assert agent_client_id(key) == expected and 0 <= expected < 2**32
    assert agent_client_id(key) == agent_client_id(key) != agent_client_id("cd" * 32)


def test_agent_color_is_a_css_hex_colour_from_the_keys_hue() -> None:
    colours = {agent_color(Keypair.generate().public_hex) for _ in range(20)}
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours) and len(colours) > 1
    assert agent_color("00000000" + "0" * 56) == agent_color("00000168" + "0" * 56)  # hue 0 == hue 360
    assert agent_color("ff" * 32) == agent_color("ff" * 32)


def test_agent_state_names_the_agent_or_its_short_key() -> None:
    key = Keypair.generate().public_hex
    named = json.loads(agent_state(key, "Ada 🧮"))
    assert named == {"user": {"name": "Ada 🧮", "color": agent_color(key), "colorLight": agent_color(key) + "33"},
                     "agent": key}
    assert "🧮" in agent_state(key, "Ada 🧮")  # not ASCII-escaped
    assert json.loads(agent_state(key, None))["user"]["name"] == key[:8]


def test_clean_name_drops_control_characters_and_bounds_the_length() -> None:
    assert clean_name("  Ada\u0000\u202e L.\n ") == "Ada L."
    assert clean_name("x" * 100) == "x" * MAX_NAME
    assert clean_name("\u0007\t ") is None and clean_name("") is None
    assert clean_name(42) is None and clean_name(None) is None and clean_name(["Ada"]) is None


async def test_a_room_shares_edits_awareness_and_departures(relay: Running) -> None:
    name, agent = "room-test", Keypair.generate()
    ys: list[YClient] = []
    try:
        async with Client(relay.url, agent, **FAST) as client, Doc(client, f"doc/{name}") as doc:
            await doc.synced(10)
            doc.text += "one"
            await doc.flushed(10)
            ys = [await YClient.connect(relay.yjs_url, name) for _ in range(2)]
            first, second = ys
            for y in ys:
                await y.wait_text("one")  # the room's diff on joining
            doc.text += " two"
            for y in ys:
                await y.wait_text("one two")  # live, to every client of the room
            # the agent in the doc's feed is an awareness state of every client
            cid = agent_client_id(agent.public_hex)
            await first.wait(lambda: cid in first.states())
            await second.wait(lambda: cid in second.states())
            assert first.states()[cid]["agent"] == agent.public_hex
            # a client's own state reaches the other; leaving removes it
            await first.set_state({"user": {"name": "first"}})
            await second.wait(lambda: second.states().get(first.client_id) == {"user": {"name": "first"}})
            ys.remove(first)
            await first.close()
            await second.wait(lambda: first.client_id not in second.states())
            assert cid in second.states()
        await second.wait(lambda: cid not in second.states())  # the agent left the doc
        await asyncio.wait_for(second.synced, 10)
    finally:
        for y in ys:
            await y.close()
