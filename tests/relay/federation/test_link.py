"""Relay-to-relay links (docs/federation.md, "Links"): the /fed handshake both ways, forwarding
to a feed's home, mirror subscriptions (backlog, live, no snapshot) and reconnects.

Relays run in-process on real ports; they must know each other's URL before they start, so
ports are reserved first. Feeds ``note/*`` and ``doc/*`` are pinned to relay B.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from collab.client import Client
from collab.errors import HomeUnreachable, RelayError
from collab.events import Event
from collab.keys import Keypair
from relay.federation.link import CLOSE_REFUSED, Link, fed_url, peer_bytes
from relay.core.routing import Member
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.rawclient import Raw
from tests.wait import eventually

DEADLINE = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Site:
    name: str
    key: Keypair
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hex(self) -> str:
        return self.key.public_hex

    @property
    def member(self) -> Member:
        return Member(self.hex, self.url)


class Federation:
    """Sites with fixed keys and ports; ``start(name)`` serves one until the test ends."""

    def __init__(self, tmp: Path, backend: Backend, names: tuple[str, ...]) -> None:
        self.tmp, self.backend = tmp, backend
        self.sites: dict[str, Site] = {}
        for name in names:
            key = Keypair.generate()
            key.save(tmp / name / "relay.key")
            self.sites[name] = Site(name, key, free_port())
        self.pins = (f"note/*={self.sites['b'].hex}", f"doc/*={self.sites['b'].hex}")
        self.stack = contextlib.AsyncExitStack()
        self.running: dict[str, contextlib.AbstractAsyncContextManager[Running]] = {}

    def config(self, name: str) -> Any:
        site = self.sites[name]
        peers = tuple(f"{s.url}#{s.hex}" for s in self.sites.values() if s is not site)
        cfg = make_config(self.tmp / name, self.backend, name, public_url=site.url, peers=peers, pins=self.pins)
        return dataclasses.replace(cfg, port=site.port)  # make_config always asks for port 0

    async def start(self, name: str) -> Running:
        cm = serving(self.config(name))
        self.running[name] = cm
        return await cm.__aenter__()

    async def stop(self, name: str) -> None:
        await self.running.pop(name).__aexit__(None, None, None)

    async def close(self) -> None:
        for name in list(self.running):
            await self.stop(name)




@pytest.fixture
async def links() -> AsyncIterator[Callable[..., Link]]:
    """Factory of started Links, closed at teardown."""
    made: list[Link] = []

    def make(key: Keypair, peer: Member) -> Link:
        link = Link(key, peer, backoff_base=0.05, backoff_max=0.5)
        made.append(link)
        return link

    yield make
    for link in made:
        await link.close()


async def raw_peer(url: str, key: Keypair, process: str | None = None) -> tuple[Raw, str]:
    """A hand-driven /fed client: challenge, our proof (naming ``process`` if given); returns the
    frame collector and our nonce."""
    ws = await websockets.connect(fed_url(url))
    challenge = json.loads(await ws.recv())
    assert challenge["t"] == "challenge"
    nonce = os.urandom(16).hex()
    sig = key.sign(peer_bytes(challenge["nonce"], challenge["relay"], key.public_hex)).hex()
    frame = {"t": "peer", "key": key.public_hex, "nonce": nonce, "sig": sig}
    await ws.send(json.dumps(frame if process is None else {**frame, "process": process}))
    return Raw(ws, challenge), nonce


def doc_event(key: Keypair, feed: str, n: int) -> Event:
    # a real edit (an empty update is invalid, docs/protocol.md 16.1); ts: distinct ids
    return Event.create(key, feed, "doc.update", {"update": "AQEBAAQBBHRleHQFaGVsbG8A"}, ts=1_700_000_000_000 + n)


async def http_events(site: Site, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{site.url}/feeds/{feed}/events")
        r.raise_for_status()
        return r.json()["records"]


# -- handshake -------------------------------------------------------------------------------

async def test_links_come_up_both_ways(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    ra, rb = await fed.start("a"), await fed.start("b")
    await ra.relay.federation.links[b.hex].wait_connected(DEADLINE)
    await rb.relay.federation.links[a.hex].wait_connected(DEADLINE)
    # the server's proof, checked by hand: KEY_S signs our nonce, our key and its own
    raw, nonce = await raw_peer(b.url, a.key)
    try:
        ok = await raw.wait(lambda f: True)
        assert ok["t"] == "peer_ok"
        from collab.keys import verify
        assert verify(b.key.public, peer_bytes(nonce, a.hex, b.hex), bytes.fromhex(ok["sig"]))
    finally:
        await raw.close()


async def test_unknown_key_is_refused_with_4403(fed: Federation, links: Callable[..., Link]) -> None:
    b = fed.sites["b"]
    await fed.start("b")
    stranger = Keypair.generate()
    raw, _ = await raw_peer(b.url, stranger)
    err = await raw.wait(lambda f: True)
    assert err["t"] == "error" and "not a peer" in err["message"]
    code, _ = await asyncio.wait_for(raw.closed, DEADLINE)
    assert code == CLOSE_REFUSED
    link = links(stranger, b.member)
    await link.start()
    await eventually(lambda: (link.last_error or "").startswith("refused"), DEADLINE, "the link to be refused")
    assert not link.connected


async def test_client_refuses_a_server_with_the_wrong_key(fed: Federation, links: Callable[..., Link]) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    await fed.start("b")
    link = links(a.key, Member(Keypair.generate().public_hex, b.url))  # B is not who we expect there
    await link.start()
    await eventually(lambda: (link.last_error or "").startswith("refused"), DEADLINE, "the wrong key to be refused")
    assert "not the configured" in (link.last_error or "") and not link.connected


async def test_client_refuses_a_bad_peer_ok_signature(links: Callable[..., Link]) -> None:
    """A server that claims the configured key but cannot sign for it."""
    claimed, me = Keypair.generate(), Keypair.generate()
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def impostor(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"t": "challenge", "nonce": "ab" * 16, "relay": claimed.public_hex}))
        peer = json.loads(await ws.recv())
        forged = Keypair.generate().sign(peer_bytes(peer["nonce"], peer["key"], claimed.public_hex)).hex()
        await ws.send(json.dumps({"t": "peer_ok", "sig": forged}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.recv()
        await closes.put(ws.close_code)

    async with serve(impostor, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        link = links(me, Member(claimed.public_hex, f"http://127.0.0.1:{port}"))
        await link.start()
        assert await asyncio.wait_for(closes.get(), DEADLINE) == CLOSE_REFUSED
        assert "does not verify" in (link.last_error or "") and not link.connected


# -- forwarding ------------------------------------------------------------------------------

async def test_forward_stores_at_the_home_and_passes_answers_through(
        fed: Federation, links: Callable[..., Link]) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    await fed.start("b")
    link = links(a.key, b.member)
    await link.start()
    await link.wait_connected(DEADLINE)
    agent, other = Keypair.generate(), Keypair.generate()
    first, second = (Event.create(agent, "note/fwd", "note.text", {"n": n}) for n in (1, 2))
    assert await link.forward(first, agent.public_hex) == (1, False)
    assert await link.forward(second, agent.public_hex) == (2, False)
    assert await link.forward(first, agent.public_hex) == (1, True)  # resent: the home dedupes
    stored = await http_events(b, "note/fwd")
    assert [r["event"]["id"] for r in stored] == [first.id, second.id]
    assert all(r["relay"] == b.hex for r in stored)  # sealed by the home

    forged = dataclasses.replace(Event.create(agent, "note/bad", "note.text", {}), sig="00" * 64)
    with pytest.raises(RelayError) as bad:
        await link.forward(forged, agent.public_hex)
    assert bad.value.code == "bad_signature"
    with pytest.raises(RelayError) as unauth:
        await link.forward(Event.create(agent, "note/other", "note.text", {}), other.public_hex)
    assert unauth.value.code == "unauthorized"
    assert link.connected  # refusals are answers, not link failures


async def test_agent_publish_on_a_gets_the_home_seq(fed: Federation) -> None:
    """The lead's glue end to end: an agent on A publishes to a feed B homes."""
    b = fed.sites["b"]
    ra, rb = await fed.start("a"), await fed.start("b")
    await ra.relay.federation.links[b.hex].wait_connected(DEADLINE)
    agent = Keypair.generate()
    await rb.relay.hub.publish(Event.create(agent, "note/e2e", "note.text", {"n": 0}), agent.public_hex)
    async with Client(ra.url, agent) as client:
        ack = await client.publish("note/e2e", "note.text", {"n": 1})
    assert ack.seq == 2
    assert [r["seq"] for r in await http_events(b, "note/e2e")] == [1, 2]


async def test_home_unreachable_when_the_peer_is_down(fed: Federation, links: Callable[..., Link]) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    link = links(a.key, b.member)  # B is not running
    await link.start()
    with pytest.raises(TimeoutError):
        await link.wait_connected(0.3)
    closing = links(a.key, b.member)
    await closing.start()
    waiter = asyncio.ensure_future(closing.wait_connected(None))
    await closing.close()
    with pytest.raises(HomeUnreachable):  # a waiter is not left hanging by close()
        await asyncio.wait_for(waiter, DEADLINE)
    with pytest.raises(HomeUnreachable):
        await link.forward(Event.create(a.key, "note/x", "note.text", {}), a.hex)
    await fed.start("b")
    await link.wait_connected(DEADLINE)
    await fed.stop("b")
    await eventually(lambda: not link.connected, DEADLINE, "the link to notice B is gone")
    with pytest.raises(HomeUnreachable):
        await link.forward(Event.create(a.key, "note/x", "note.text", {}), a.hex)


async def test_a_drop_before_the_answer_is_home_unreachable(links: Callable[..., Link]) -> None:
    home, me = Keypair.generate(), Keypair.generate()

    async def silent_home(ws: ServerConnection) -> None:
        nonce = "cd" * 16
        await ws.send(json.dumps({"t": "challenge", "nonce": nonce, "relay": home.public_hex}))
        peer = json.loads(await ws.recv())
        sig = home.sign(peer_bytes(peer["nonce"], peer["key"], home.public_hex)).hex()
        await ws.send(json.dumps({"t": "peer_ok", "sig": sig}))
        await ws.send(json.dumps({"t": "heads", "heads": [{"feed": "note/h", "seq": 3, "hash": "0" * 64}]}))
        frame = json.loads(await ws.recv())
        assert frame["t"] == "fwd" and frame["key"] == me.public_hex and "rid" in frame
        await ws.close()  # no answer

    async with serve(silent_home, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        link = links(me, Member(home.public_hex, f"http://127.0.0.1:{port}"))
        heads: list[list[dict[str, Any]]] = []
        link.add_on_heads(heads.append)
        await link.start()
        await link.wait_connected(DEADLINE)
        await eventually(lambda: bool(heads), DEADLINE, "the peer's heads")
        assert heads[0][0]["seq"] == 3
        with pytest.raises(HomeUnreachable):
            await link.forward(Event.create(me, "note/x", "note.text", {}), me.public_hex)


# -- mirror subscriptions --------------------------------------------------------------------

async def test_sub_sends_backlog_then_live_and_never_a_snapshot(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    author = Keypair.generate()
    for n in range(3):
        await rb.relay.hub.publish(doc_event(author, "doc/mirror", n), author.public_hex)
    raw, _ = await raw_peer(b.url, a.key)
    try:
        assert (await raw.wait(lambda f: True))["t"] == "peer_ok"
        await raw.send({"t": "sub", "feed": "doc/mirror", "since": 0, "rid": "s1"})
        synced = await raw.wait(lambda f: f["t"] == "synced")
        assert synced["seq"] == 3
        for n in range(3, 5):
            await rb.relay.hub.publish(doc_event(author, "doc/mirror", n), author.public_hex)
        await raw.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 5)
        assert [f["rec"]["seq"] for f in raw.frames if f["t"] == "rec"] == [1, 2, 3, 4, 5]
        assert not [f for f in raw.frames if f["t"] in ("snapshot", "presence", "error")]
        await raw.send({"t": "hello", "key": a.hex, "sig": "00" * 64, "rid": "h"})  # not a /fed frame
        err = await raw.wait(lambda f: f.get("rid") == "h")
        assert err["t"] == "error" and err["code"] == "malformed"
    finally:
        await raw.close()
    await eventually(lambda: not rb.relay.hub.feeds["doc/mirror"].subs, DEADLINE,
                     "the subscription to end with the link")
    agent = await Raw.connect(rb.ws_url, author)  # the contrast: an agent catching up gets a snapshot
    try:
        await agent.send({"t": "sub", "feed": "doc/mirror", "since": 0})
        assert (await agent.wait(lambda f: f["t"] in ("snapshot", "rec")))["t"] == "snapshot"
    finally:
        await agent.close()


async def test_peers_read_members_only_feeds(fed: Federation, links: Callable[..., Link]) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    owner = Keypair.generate()
    await rb.relay.hub.publish(Event.create(owner, "note/secret", "feed.policy", {"policy": "members"}),
                               owner.public_hex)
    await rb.relay.hub.publish(Event.create(owner, "note/secret", "note.text", {"s": 1}), owner.public_hex)
    link = links(a.key, b.member)
    got: list[dict[str, Any]] = []
    link.subscribe("note/secret", lambda: 0, got.append)
    await link.start()
    await eventually(lambda: len(got) == 2, DEADLINE, "the members-only records")
    assert got[1]["event"]["body"] == {"s": 1}


async def test_link_subscription_resumes_after_the_home_restarts(
        fed: Federation, links: Callable[..., Link]) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    author = Keypair.generate()
    for n in range(3):
        await rb.relay.hub.publish(doc_event(author, "doc/resume", n), author.public_hex)
    link = links(a.key, b.member)
    got: list[dict[str, Any]] = []
    sinces: list[int] = []
    connects: list[int] = []
    link.on_connect.append(lambda: connects.append(len(connects) + 1))

    def since() -> int:
        sinces.append(got[-1]["seq"] if got else 0)
        return sinces[-1]

    link.subscribe("doc/resume", since, got.append)  # before start: sent on connect
    await link.start()
    await eventually(lambda: len(got) == 3, DEADLINE, "the backlog")
    await rb.relay.hub.publish(doc_event(author, "doc/resume", 3), author.public_hex)
    await eventually(lambda: len(got) == 4, DEADLINE, "a live record")

    await fed.stop("b")
    await eventually(lambda: not link.connected, DEADLINE, "the link to drop")
    rb = await fed.start("b")  # same port, same store
    await link.wait_connected(DEADLINE)
    for n in range(4, 6):
        await rb.relay.hub.publish(doc_event(author, "doc/resume", n), author.public_hex)
    await eventually(lambda: len(got) == 6, DEADLINE, "records after the restart")
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert sinces == [0, 4] and connects == [1, 2]

    link.unsubscribe("doc/resume")
    await eventually(lambda: not rb.relay.hub.feeds["doc/resume"].subs, DEADLINE, "the unsub to reach the home")
    await rb.relay.hub.publish(doc_event(author, "doc/resume", 6), author.public_hex)
    rt = rb.relay.hub.feeds["doc/resume"]
    link.send_heads([{"feed": "doc/resume", "seq": rt.seq, "hash": rt.head}])  # best effort, no answer
    assert await link.forward(doc_event(author, "doc/resume", 7), author.public_hex) == (8, False)
    assert len(got) == 6
