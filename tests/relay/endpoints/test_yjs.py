"""The y-websocket endpoint /yjs/{name} over real sockets: sync, live updates, read-only by
default, capability writers recorded in the log, awareness (clients and agents), keepalive,
and bad input that is refused without disturbing anyone or reaching the log."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pycrdt import Doc as YDoc
from pycrdt import Text

from collab.capability import Capability
from collab.errors import RelayError
from collab.client import Client
from collab.doc import Doc
from collab.events import Event, b64, unb64
from collab.keys import Keypair
from collab.replay import replay_feed
from relay.core.limits import Limits, YjsLimits
from relay.ops.runner import Running
from relay.endpoints.yjs_room import agent_client_id, agent_color
from tests.rawclient import Raw
from tests.yclient import YClient, msg_awareness, msg_step1, msg_update, varbytes, varuint

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
_names = itertools.count()


def fresh(prefix: str = "y") -> str:
    return f"{prefix}{next(_names)}"


async def records(r: Running, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{r.url}/feeds/{feed}/events", params={"limit": 1000})
    return resp.json()["records"] if resp.status_code == 200 else []


async def closed_with(y: YClient, timeout: float = 10.0) -> tuple[int | None, str]:
    return await asyncio.wait_for(asyncio.shield(y.closed), timeout)


class Agents:
    """Native agents (collab Client + Doc) editing documents on a relay."""

    def __init__(self, relay: Running, stack: contextlib.AsyncExitStack) -> None:
        self.relay, self.stack = relay, stack

    async def doc(self, name: str, key: Keypair | None = None, text: str | None = None) -> Doc:
        client = await self.stack.enter_async_context(Client(self.relay.url, key or Keypair.generate(), **FAST))
        doc = await self.stack.enter_async_context(Doc(client, f"doc/{name}"))
        await doc.synced(10)
        if text is not None:
            doc.text += text
            await doc.flushed(10)
        return doc


@pytest.fixture
async def agents(relay: Running) -> AsyncIterator[Agents]:
    async with contextlib.AsyncExitStack() as stack:
        yield Agents(relay, stack)


@pytest.fixture
async def yclients() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for y in made:
        with contextlib.suppress(Exception):
            await y.close()


async def connect(made: list[YClient], relay: Running, name: str, token: str | None = None, **kw: Any) -> YClient:
    y = await YClient.connect(relay.yjs_url, name, token, **kw)
    made.append(y)
    return y


# -- sync and live updates -------------------------------------------------------------------
async def test_sync_step1_first_then_step2_answer(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    doc = await agents.doc(name, text="héllo 🌍")
    y = await connect(yclients, relay, name, hello=False)
    await y.wait(lambda: len(y.received) >= 1)
    kind, sv = y.received[0]
    assert kind == "step1"  # y-websocket's server sends sync step 1 on connect
    assert sv == doc.ydoc.get_state()
    await y.send(msg_step1(y.doc.get_state()))
    await asyncio.wait_for(y.synced, 10)
    assert str(y.text) == "héllo 🌍"
    # the client's own step 2 (answering the relay's step 1) was empty: nothing recorded, nothing denied
    assert len(await records(relay, f"doc/{name}")) == 1 and y.denied == []


async def test_native_edits_reach_every_yjs_client(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    doc = await agents.doc(name, text="a")
    ys = [await connect(yclients, relay, name) for _ in range(2)]
    for y in ys:
        await y.wait_text("a")
    for i in range(3):
        doc.text += str(i)
        for y in ys:
            await y.wait_text("a" + "012"[: i + 1])
    # a doc that did not exist yet: clients join first, the first edit arrives live
    empty = fresh()
    y = await connect(yclients, relay, empty)
    await asyncio.wait_for(y.synced, 10)
    d2 = await agents.doc(empty, text="late")
    await y.wait_text("late")
    assert str(d2.text) == "late"


async def test_updates_of_one_batch_are_coalesced(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    key = Keypair.generate()
    await agents.doc(name, key, text="")
    y = await connect(yclients, relay, name)
    await asyncio.wait_for(y.synced, 10)
    raw = await Raw.connect(relay.ws_url, key)
    base = YDoc()
    text = base.get("text", type=Text)
    events = []
    for i in range(20):
        before = base.get_state()
        text.insert(len(text), f"<{i}>")
        events.append(Event.create(key, f"doc/{name}", "doc.update", {"update": b64(base.get_update(before))}))
    # one WebSocket message: the relay sequences them as one batch, committed in one turn
    await raw.send("\n".join(json.dumps({"t": "pub", "event": ev.to_wire(), "rid": i}) for i, ev in enumerate(events)))
    want = "".join(f"<{i}>" for i in range(20))
    await y.wait_text(want)
    updates = [k for k, _ in y.received if k == "update"]
    assert len(updates) < 20, f"{len(updates)} update messages for 20 records"
    await raw.close()


# -- read-only by default --------------------------------------------------------------------
async def test_read_only_client_writes_are_dropped_and_denied(relay: Running, agents: Agents,
                                                              yclients: list[YClient]) -> None:
    name = fresh()
    await agents.doc(name, text="keep")
    ro = await connect(yclients, relay, name)
    other = await connect(yclients, relay, name)
    await ro.wait_text("keep")
    await other.wait_text("keep")
    before = await records(relay, f"doc/{name}")
    ro.edit(" not mine")
    await ro.wait(lambda: bool(ro.denied))
    assert ro.denied[0].startswith("read-only")
    assert await records(relay, f"doc/{name}") == before
    assert str(other.text) == "keep"


# -- capability writers ----------------------------------------------------------------------
async def test_capability_writer_is_recorded_with_author_and_cap(relay: Running, agents: Agents,
                                                                 yclients: list[YClient]) -> None:
    name, owner = fresh(), Keypair.generate()
    doc = await agents.doc(name, owner, text="owner;")
    cap = Capability.issue(owner, f"doc/{name}", write=True)
    w = await connect(yclients, relay, name, cap.token())
    watcher = await connect(yclients, relay, name)
    await w.wait_text("owner;")
    w.edit("yjs-é;")
    await watcher.wait_text("owner;yjs-é;")
    await doc.wait_seq(2, 10)
    assert str(doc.text) == "owner;yjs-é;"
    recs = await records(relay, f"doc/{name}")
    assert len(recs) == 2
    ev = recs[1]["event"]
    relay_key = relay.relay.hub.relay_key.public_hex
    assert ev["author"] == relay_key and recs[1]["relay"] == relay_key
    assert set(ev["body"]) == {"update", "cap"}
    assert ev["body"]["cap"] == cap.to_wire() and ev["body"]["cap"]["issuer"] == owner.public_hex
    probe = YDoc()
    probe.apply_update(unb64(recs[0]["event"]["body"]["update"]))
    probe.apply_update(unb64(ev["body"]["update"]))
    assert str(probe.get("text", type=Text)) == "owner;yjs-é;"
    result = await replay_feed(relay.url, f"doc/{name}")
    assert result.verified, result.anomalies
    assert result.view() == {"text": "owner;yjs-é;"}
    # a reconnecting writer's sync step 2 holds nothing new: no event for it
    w2 = await connect(yclients, relay, name, cap.token(), initial=w.doc.get_update())
    await asyncio.wait_for(w2.synced, 10)
    w2.edit("+")
    await watcher.wait_text("owner;yjs-é;+")
    assert len(await records(relay, f"doc/{name}")) == 3


async def test_a_burst_of_edits_is_recorded_in_order_queued_runs_as_one_event(relay: Running, agents: Agents,
                                                                               yclients: list[YClient]) -> None:
    """Edits queued while one is recorded are one writer's run: joined into one event (21.4).
    None is lost or reordered, each record continues the text of the ones before, and the log
    replays."""
    name, owner = fresh(), Keypair.generate()
    await agents.doc(name, owner, text="<")
    cap = Capability.issue(owner, f"doc/{name}", write=True)
    w = await connect(yclients, relay, name, cap.token())
    watcher = await connect(yclients, relay, name)
    await w.wait_text("<")
    for i in range(20):
        w.edit(f"{i};")
    want = "<" + "".join(f"{i};" for i in range(20))
    await watcher.wait_text(want)
    recs = await records(relay, f"doc/{name}")
    assert 1 < len(recs) < 21, "the queued edits were not joined"
    probe = YDoc()
    texts = []
    assert {rec["event"]["author"] for rec in recs[1:]} == {relay.relay.hub.relay_key.public_hex}
    for rec in recs:
        probe.apply_update(unb64(rec["event"]["body"]["update"]))
        texts.append(str(probe.get("text", type=Text)))
    assert texts[-1] == want
    assert all(want.startswith(t) and len(t) > len(p) for p, t in itertools.pairwise(texts))
    result = await replay_feed(relay.url, f"doc/{name}")
    assert result.verified, result.anomalies


async def test_writer_reconnect_with_deletions_records_nothing(relay: Running, agents: Agents,
                                                               yclients: list[YClient]) -> None:
    name, owner = fresh(), Keypair.generate()
    await agents.doc(name, owner, text="abcdef")
    cap = Capability.issue(owner, f"doc/{name}", write=True)
    w = await connect(yclients, relay, name, cap.token())
    await w.wait_text("abcdef")
    del w.text[1:3]
    watcher = await connect(yclients, relay, name)
    await watcher.wait_text("adef")
    n = len(await records(relay, f"doc/{name}"))
    # same content, deletions included: their sync step 2 replies hold nothing new
    again = await connect(yclients, relay, name, cap.token(), initial=w.doc.get_update())
    ro = await connect(yclients, relay, name, initial=w.doc.get_update())
    await asyncio.wait_for(again.synced, 10)
    await asyncio.wait_for(ro.synced, 10)
    await again.wait(lambda: any(k == "step1" for k, _ in again.received))
    await ro.wait(lambda: any(k == "step1" for k, _ in ro.received))
    # an edit after them proves their step 2 replies were handled (messages are in order)
    w.edit("!")
    await watcher.wait_text("adef!")
    assert len(await records(relay, f"doc/{name}")) == n + 1
    assert ro.denied == [] and again.denied == []


@pytest.mark.parametrize("case", ["expired", "forged", "wrong_feed", "not_owner", "garbage", "no_records"])
async def test_bad_tokens_are_refused(relay: Running, agents: Agents, yclients: list[YClient], case: str) -> None:
    name, owner = fresh(), Keypair.generate()
    feed = f"doc/{name}"
    if case != "no_records":
        await agents.doc(name, owner, text="x")
    if case == "expired":
        token = Capability.issue(owner, feed, write=True, ttl_ms=1, now=1_000).token()
    elif case == "forged":
        wire = Capability.issue(owner, feed).to_wire()
        wire["rights"] = ["read", "write"]  # upgraded after signing
        raw = json.dumps(wire, separators=(",", ":"), sort_keys=True).encode()
        token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    elif case == "wrong_feed":
        token = Capability.issue(owner, f"doc/{fresh()}", write=True).token()
    elif case == "not_owner":
        token = Capability.issue(Keypair.generate(), feed, write=True).token()
    elif case == "garbage":
        token = "not-a-token"
    else:
        token = Capability.issue(owner, feed, write=True).token()
    y = await connect(yclients, relay, name, token)
    code, reason = await closed_with(y)
    assert code == 4401 and reason.startswith("capability refused"), (code, reason)
    assert len(await records(relay, feed)) == (0 if case == "no_records" else 1)


async def test_capability_expiry_during_a_connection(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name, owner = fresh(), Keypair.generate()
    await agents.doc(name, owner, text="t")
    cap = Capability.issue(owner, f"doc/{name}", write=True, ttl_ms=400)
    w = await connect(yclients, relay, name, cap.token())
    watcher = await connect(yclients, relay, name)
    w.edit("1")
    await watcher.wait_text("t1")
    await asyncio.sleep(max(0.0, cap.exp / 1000 - __import__("time").time()) + 0.05)
    w.edit("2")
    await w.wait(lambda: bool(w.denied))
    assert "expired" in w.denied[0]
    assert len(await records(relay, f"doc/{name}")) == 2


async def test_members_feed_needs_a_capability(relay: Running, yclients: list[YClient]) -> None:
    owner = Keypair.generate()
    name = fresh()
    feed = f"doc/{name}"
    raw = await Raw.connect(relay.ws_url, owner)
    policy = Event.create(owner, feed, "feed.policy", {"policy": "members"})
    ok = await raw.request({"t": "pub", "event": policy.to_wire()}, "p")
    assert ok["t"] == "ok"
    d = YDoc()
    d.get("text", type=Text).insert(0, "secret")
    update = Event.create(owner, feed, "doc.update", {"update": b64(d.get_update())})
    ok = await raw.request({"t": "pub", "event": update.to_wire()}, "u")
    assert ok["t"] == "ok"
    anon = await connect(yclients, relay, name)
    assert (await closed_with(anon))[0] == 4403
    reader = await connect(yclients, relay, name, Capability.issue(owner, feed).token())
    await reader.wait_text("secret")
    reader.edit("!")
    await reader.wait(lambda: bool(reader.denied))
    writer = await connect(yclients, relay, name, Capability.issue(owner, feed, write=True).token())
    await writer.wait_text("secret")
    writer.edit(" shared")
    await reader.wait(lambda: " shared" in str(reader.text))  # beside its own (unrecorded) "!"
    recs = await records_ws(raw, feed)
    assert [r["seq"] for r in recs] == [2, 3] and recs[1]["event"]["body"]["cap"]["rights"] == ["read", "write"]
    await raw.close()


async def records_ws(raw: Raw, feed: str) -> list[dict[str, Any]]:
    """Records 2.. of a members feed, read over an authenticated WebSocket (HTTP refuses it;
    since=0 would give a snapshot)."""
    start = len(raw.frames)
    await raw.send({"t": "sub", "feed": feed, "since": 1})
    await raw.wait(lambda f: f["t"] == "synced" and f["feed"] == feed, start=start)
    return [f["rec"] for f in raw.frames[start:] if f["t"] == "rec" and f["feed"] == feed]


# -- awareness -------------------------------------------------------------------------------
async def test_awareness_snapshot_relay_and_removal(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    await agents.doc(name, text="")
    a = await connect(yclients, relay, name, state={"user": {"name": "Ana", "color": "#123456"}})
    await a.wait(lambda: a.client_id in a.states())  # relayed back to its sender too, as y-websocket does
    b = await connect(yclients, relay, name)
    await b.wait(lambda: b.states().get(a.client_id) == {"user": {"name": "Ana", "color": "#123456"}})
    assert any(k == "awareness" for k, _ in b.received[:2])  # the snapshot right after step 1
    await b.set_state({"user": {"name": "Bo"}})
    await a.wait(lambda: a.states().get(b.client_id) == {"user": {"name": "Bo"}})
    await b.wait(lambda: len(b.states()) >= 3)  # Ana, Bo and the agent (its state is added from presence)
    seen = len(b.received)
    await b.send(b"\x03")  # query-awareness: every state, in one reply
    await b.wait(lambda: any(k == "awareness" and len(v) >= 3 for k, v in b.received[seen:]))
    await a.close()
    await b.wait(lambda: a.client_id not in b.states())


async def test_agents_appear_as_awareness_states(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    ada, anon = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, ada, **FAST) as c:  # ada's profile in her agent/<key> feed
        await c.publish(f"agent/{ada.public_hex}", "agent.profile", {"name": "Ada 🧮"})
    y = await connect(yclients, relay, name)
    await asyncio.wait_for(y.synced, 10)
    cid = agent_client_id(ada.public_hex)
    async with Client(relay.url, ada, **FAST) as client, Doc(client, f"doc/{name}") as doc:
        await doc.synced(10)
        await y.wait(lambda: y.states().get(cid, {}).get("user", {}).get("name") == "Ada 🧮")
        state = y.states()[cid]
        assert state == {"user": {"name": "Ada 🧮", "color": agent_color(ada.public_hex),
                                  "colorLight": agent_color(ada.public_hex) + "33"}, "agent": ada.public_hex}
        assert re.fullmatch(r"#[0-9a-f]{6}", state["user"]["color"])
        # an agent without a profile shows a short key; a joining client gets both in its snapshot
        await agents.doc(name, anon)
        late = await connect(yclients, relay, name)
        acid = agent_client_id(anon.public_hex)
        await late.wait(lambda: cid in late.states() and acid in late.states())
        assert late.states()[acid]["user"]["name"] == anon.public_hex[:8]
        # a new profile renames her live; someone else cannot write into her feed at all
        async with Client(relay.url, anon, **FAST) as c:
            with pytest.raises(RelayError) as refused:
                await c.publish(f"agent/{ada.public_hex}", "agent.profile", {"name": "Mallory"})
            assert refused.value.code == "unauthorized"
        await client.publish(f"agent/{ada.public_hex}", "agent.profile", {"name": "Ada L."})
        await y.wait(lambda: y.states().get(cid, {}).get("user", {}).get("name") == "Ada L.")
    await y.wait(lambda: cid not in y.states())  # she left the doc
    assert acid in y.states()
    names = [k for k, v in y.received if k == "awareness" for _, _, s in v if s and s["user"]["name"] == "Mallory"]
    assert names == []


async def test_clients_cannot_take_agents_awareness(relay: Running, agents: Agents, yclients: list[YClient]) -> None:
    name = fresh()
    ada = Keypair.generate()
    await agents.doc(name, ada)
    cid = agent_client_id(ada.public_hex)
    y = await connect(yclients, relay, name)
    await y.wait(lambda: cid in y.states())
    clock = y.awareness[cid][0]
    await y.send(msg_awareness([(cid, clock + 10, {"user": {"name": "fake"}})]))
    await y.send(msg_awareness([(cid, clock + 10, None)]))
    await y.send(msg_awareness([(424242, 1, {"agent": ada.public_hex, "user": {"name": "fake"}})]))
    probe = await connect(yclients, relay, name)
    await probe.wait(lambda: cid in probe.states())
    assert probe.states()[cid]["user"]["name"] == ada.public_hex[:8] and 424242 not in probe.states()


async def test_stale_states_expire_and_agents_are_renewed(start_relay: Any, yclients: list[YClient]) -> None:
    relay: Running = await start_relay("aw", yjs=YjsLimits(awareness_timeout=0.6, agent_renew=0.2))
    name, ada = fresh(), Keypair.generate()
    async with Client(relay.url, ada, **FAST) as client, Doc(client, f"doc/{name}") as doc:
        await doc.synced(10)
        quiet = await connect(yclients, relay, name, state={"user": {"name": "quiet"}})
        watcher = await connect(yclients, relay, name)
        cid = agent_client_id(ada.public_hex)
        await watcher.wait(lambda: quiet.client_id in watcher.states() and cid in watcher.states())
        first = watcher.awareness[cid][0]
        # the agent's state is renewed (higher clock) and the client that stopped renewing is removed
        await watcher.wait(lambda: watcher.awareness[cid][0] > first and quiet.client_id not in watcher.states())
        assert cid in watcher.states() and not quiet.closed.done()


# -- keepalive -------------------------------------------------------------------------------
async def raw_socket(relay: Running, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake by hand, from a client that will never answer a ping."""
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {relay.host}:{relay.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return reader, writer


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_keepalive_drops_dead_connections(start_relay: Any, yclients: list[YClient]) -> None:
    relay: Running = await start_relay("ka", ws_ping_interval=0.2, ws_ping_timeout=0.2)
    name = fresh()
    live = await connect(yclients, relay, name, state={"user": {"name": "live"}})
    await asyncio.wait_for(live.synced, 10)
    reader, writer = await raw_socket(relay, f"/yjs/{name}")
    writer.write(client_frame(msg_awareness([(777, 1, {"user": {"name": "dead"}})])))
    await writer.drain()
    await live.wait(lambda: 777 in live.states())

    async def until_dropped() -> None:
        while await reader.read(65536):  # pings, messages, a close frame: never answered
            pass

    await asyncio.wait_for(until_dropped(), 10)  # a few ping intervals
    await live.wait(lambda: 777 not in live.states())  # its awareness left with it
    writer.close()
    assert not live.closed.done()  # answers pings: still connected and in sync
    agent = await Client(relay.url, Keypair.generate(), **FAST).__aenter__()
    try:
        async with Doc(agent, f"doc/{name}") as d:
            await d.synced(10)
            d.text += "still here"
            await d.flushed(10)
        await live.wait_text("still here")
    finally:
        await agent.__aexit__(None, None, None)


# -- bad input -------------------------------------------------------------------------------
YLIMITS = YjsLimits(awareness_per_sec=5.0, awareness_burst=5, max_awareness_bytes=4096,
                    max_awareness_state_bytes=1024, max_awareness_clients=2)


class World:
    """A relay with a doc, its owner editing natively, and a healthy Yjs bystander."""

    def __init__(self, relay: Running, name: str, doc: Doc, owner: Keypair, bystander: YClient,
                 made: list[YClient]) -> None:
        self.relay, self.name, self.doc = relay, name, doc
        self.owner, self.bystander, self.made = owner, bystander, made
        self.feed = f"doc/{name}"
        self.n = 0

    async def connect(self, token: str | None = None, **kw: Any) -> YClient:
        return await connect(self.made, self.relay, self.name, token, **kw)

    def token(self) -> str:
        return Capability.issue(self.owner, self.feed, write=True).token()

    async def bystander_still_works(self) -> None:
        self.n += 1
        self.doc.text += f"[{self.n}]"
        await self.doc.flushed(10)
        await self.bystander.wait(lambda: f"[{self.n}]" in str(self.bystander.text))
        assert not self.bystander.closed.done()


@pytest.fixture
async def world(start_relay: Any, yclients: list[YClient]) -> AsyncIterator[World]:
    limits = Limits(max_frame_bytes=64 << 10, max_event_bytes=8 << 10)
    relay: Running = await start_relay("bad", limits=limits, yjs=YLIMITS)
    owner = Keypair.generate()
    async with Client(relay.url, owner, **FAST) as client:
        async with Doc(client, "doc/bad") as doc:
            await doc.synced(10)
            doc.text += "base"
            await doc.flushed(10)
            bystander = await connect(yclients, relay, "bad", state={"user": {"name": "bystander"}})
            await bystander.wait_text("base")
            yield World(relay, "bad", doc, owner, bystander, yclients)


async def assert_refused(w: World, y: YClient, code: int, before: list[dict[str, Any]]) -> str:
    got, reason = await closed_with(y)
    assert got == code, (got, reason)
    await w.bystander_still_works()
    after = await records(w.relay, w.feed)
    assert after[: len(before)] == before and len(after) == len(before) + 1  # only the bystander check's edit
    return reason


@pytest.mark.parametrize(("case", "code"), [
    ("garbage", 4400), ("truncated_varuint", 4400), ("truncated_payload", 4400), ("trailing_bytes", 4400),
    ("bad_sync_type", 4400), ("bad_state_vector", 4400), ("undecodable_update", 4400),
    ("bad_awareness_json", 4400), ("text_message", 1003), ("oversized_message", 1009), ("oversized_edit", 1009),
])
async def test_bad_messages_close_the_connection(world: World, case: str, code: int) -> None:
    before = await records(world.relay, world.feed)
    y = await world.connect(world.token())
    await asyncio.wait_for(y.synced, 10)
    msg: bytes | str = {
        "garbage": b"\xff\xfe\xfd\xfc",
        "truncated_varuint": b"\x00\x02\x85",
        "truncated_payload": b"\x00\x02\x10abc",
        "trailing_bytes": msg_update(b"\x00\x00") + b"\x00",
        "bad_sync_type": b"\x00\x07\x00",
        "bad_state_vector": b"\x00\x00" + varbytes(b"\x05\x01"),
        "undecodable_update": msg_update(b"\x01\x01\xff\xff\xff\x0f\x00garbage"),
        "bad_awareness_json": b"\x01" + varbytes(varuint(1) + varuint(5) + varuint(1) + varbytes(b"{nope")),
        "text_message": "hello",
        "oversized_message": msg_update(os.urandom(70 << 10)),
        "oversized_edit": b"",
    }[case]
    if case == "oversized_edit":  # a real edit, under the message limit but too big for one event
        y.edit("x" * (12 << 10))
    else:
        await y.send(msg)
    reason = await assert_refused(world, y, code, before)
    assert reason


async def test_bad_document_name(world: World) -> None:
    before = await records(world.relay, world.feed)
    for name in ("a//b", "../x", "x/events"):
        y = await connect(world.made, world.relay, name)
        assert (await closed_with(y))[0] == 4400
    await world.bystander_still_works()
    assert len(await records(world.relay, world.feed)) == len(before) + 1


async def test_awareness_floods_are_dropped(world: World) -> None:
    before = await records(world.relay, world.feed)
    y = await world.connect()
    await asyncio.wait_for(y.synced, 10)
    cid = y.client_id
    for clock in range(1, 41):  # way over 5/s (burst 5)
        await y.send(msg_awareness([(cid, clock, {"user": {"name": f"n{clock}"}})]))
    await y.send(msg_awareness([(cid, 100, {"big": "x" * 2000})]))  # state over 1 KiB
    await y.send(msg_awareness([(cid + i, 1, {}) for i in range(1, 4)]))  # more ids than allowed
    await y.send(b"\x09\x00")  # an unknown message type: ignored, as y-websocket's server does
    # the connection is still fine: it syncs, and so does the bystander
    await y.send(msg_step1(y.doc.get_state()))
    await y.wait(lambda: sum(1 for k, _ in y.received if k == "step2") >= 2)
    await world.bystander_still_works()
    seen = [s for k, v in world.bystander.received if k == "awareness" for c, _, s in v if c == cid]
    assert 1 <= len(seen) <= 8, seen  # the burst got through, the rest was dropped
    assert all("big" not in (s or {}) for s in seen)
    assert not y.closed.done()
    assert len(await records(world.relay, world.feed)) == len(before) + 1


async def test_read_only_flood_is_not_recorded(world: World) -> None:
    before = await records(world.relay, world.feed)
    y = await world.connect()
    await y.wait_text(str(world.doc.text))
    for i in range(50):
        y.edit(f"spam{i}")
    await y.wait(lambda: bool(y.denied))
    await world.bystander_still_works()
    assert len(await records(world.relay, world.feed)) == len(before) + 1
    assert "spam" not in str(world.bystander.text)


# -- scale-out: two processes, one site ------------------------------------------------------
@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # one site, several processes: Redis only
async def test_yjs_clients_on_two_processes(start_relay: Any, backend: Any, yclients: list[YClient]) -> None:
    a: Running = await start_relay("a", site="s")
    b: Running = await start_relay("b", site="s")
    owner, name = Keypair.generate(), fresh()
    async with Client(a.url, owner, **FAST) as client:
        async with Doc(client, f"doc/{name}") as doc:
            await doc.synced(10)
            doc.text += "x"
            await doc.flushed(10)
            on_b = await connect(yclients, b, name)
            await on_b.wait_text("x")
            await on_b.wait(lambda: agent_client_id(owner.public_hex) in on_b.states())  # presence across processes
            w = await connect(yclients, a, name, Capability.issue(owner, f"doc/{name}", write=True).token())
            await w.wait_text("x")
            w.edit("y")
            await on_b.wait_text("xy")
            await doc.wait_seq(2, 10)


# -- colony grant ----------------------------------------------------------------------------
def colony(*args: str, key: str | None = None, relay: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("COLONY_KEY", None)
    if key:
        env["COLONY_KEY"] = key
    if relay:
        env["COLONY_RELAY"] = relay
    return subprocess.run([sys.executable, "-m", "relay.ops.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


async def test_colony_grant(relay: Running, tmp_path: Any, yclients: list[YClient]) -> None:
    owner, other = Keypair.generate(), Keypair.generate()
    okey, xkey = tmp_path / "owner.key", tmp_path / "other.key"
    owner.save(okey)
    other.save(xkey)
    name = fresh("grant")
    feed = f"doc/{name}"
    # a feed without records: grant claims it first (seq 1 by the owner), then prints the token
    p = await asyncio.to_thread(colony, "grant", feed, "--write", "--ttl", "120", key=str(okey), relay=relay.url)
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip()
    cap = Capability.from_token(token)
    assert (cap.feed, cap.issuer, cap.rights, cap.grantee) == (feed, owner.public_hex, ("read", "write"), None)
    assert 119_000 <= cap.exp - cap.iat <= 120_000
    recs = await records(relay, feed)
    assert [r["event"]["kind"] for r in recs] == ["feed.policy"] and recs[0]["event"]["author"] == owner.public_hex
    w = await connect(yclients, relay, name, token)
    await asyncio.wait_for(w.synced, 10)
    w.edit("granted")
    watcher = await connect(yclients, relay, name)
    await watcher.wait_text("granted")
    p = await asyncio.to_thread(colony, "replay", feed, "--verify", relay=relay.url)  # capability writes verify
    assert p.returncode == 0 and p.stdout.strip() == "granted", p.stderr
    # read-only by default; someone else's grant is refused
    p = await asyncio.to_thread(colony, "grant", feed, "--relay", relay.url, "--key", str(okey))
    assert p.returncode == 0 and Capability.from_token(p.stdout.strip()).rights == ("read",)
    p = await asyncio.to_thread(colony, "grant", feed, key=str(xkey), relay=relay.url)
    assert p.returncode != 0 and "owner" in p.stderr and p.stdout == ""
    p = await asyncio.to_thread(colony, "grant", feed, "--ttl", "0", key=str(okey), relay=relay.url)
    assert p.returncode != 0


@pytest.mark.parametrize("feed", ["doc/edits", "doc/a/b-c.d_e"], ids=["plain", "nested"])
def test_edit_events_are_the_events_event_create_makes(feed: str) -> None:
    """The writer's event maker (canonical bytes prepared once per connection) signs exactly the
    bytes ``Event.create`` would: same id, signature and size."""
    from relay.endpoints.yjs import EditEvents

    relay, owner = Keypair.generate(), Keypair.generate()
    cap = Capability.issue(owner, feed, write=True, ttl_ms=60_000).to_wire()
    ydoc = YDoc()
    updates: list[bytes] = []
    ydoc.observe(lambda ev: updates.append(ev.update))
    ydoc.get("text", type=Text).insert(0, "hello, \"quoted\" \\ world\n")
    maker = EditEvents(relay, feed, cap)
    for ctx, ts in ((0, 0), (7, 1_700_000_000_123), (2**53 - 1, 2**53 - 1)):
        got = maker.create(updates[0], ctx, ts)
        want = Event.create(relay, feed, "doc.update", {"update": b64(updates[0]), "cap": cap}, ctx=ctx, ts=ts)
        assert got == want and got.size == want.size
        assert Event.from_wire(got.to_wire()) == want  # and it verifies
