"""relay/federation/endpoint.py, the ``/fed`` WebSocket, driven by hand (tests/rawclient.py)
against a real relay B of a two-member federation (helpers of test_link.py; A need not run):
the handshake refuses anything but a proven member (4403), a ``fwd`` is published as its agent
or refused when B does not home its feed, ``sub`` is records only (no snapshot, no presence),
and frames that are not /fed's are refused with their rid."""
from __future__ import annotations

import asyncio
import json
import os

import websockets

from collab.events import Event
from collab.keys import Keypair
from relay.federation.endpoint import CLOSE_REPLACED
from relay.federation.link import CLOSE_REFUSED, fed_url, peer_bytes
from tests.rawclient import Raw
from tests.relay.federation.test_link import DEADLINE, Federation, doc_event, raw_peer



async def refused(url: str, frame: dict[str, object] | str) -> tuple[str, int | None]:
    """Answer B's challenge with ``frame``; the refusal's message and the close code."""
    ws = await websockets.connect(fed_url(url))
    challenge = json.loads(await ws.recv())
    raw = Raw(ws, challenge)
    await raw.send(frame if isinstance(frame, str) else json.dumps(frame))
    err = await raw.wait(lambda f: True)
    assert err["t"] == "error" and err["code"] == "unauthorized"
    code, _ = await asyncio.wait_for(raw.closed, DEADLINE)
    return err["message"], code


async def test_the_handshake_refuses_all_but_a_proven_member(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    await fed.start("b")
    nonce = os.urandom(16).hex()
    message, code = await refused(b.url, "{not json")
    assert code == CLOSE_REFUSED
    message, code = await refused(b.url, {"t": "hello", "key": a.hex, "sig": "00" * 64})
    assert code == CLOSE_REFUSED and "expected {t: peer" in message
    message, code = await refused(b.url, {"t": "peer", "key": a.hex, "nonce": "ab", "sig": "00" * 64})
    assert code == CLOSE_REFUSED and "expected {t: peer" in message  # a nonce of 16..128 chars
    # A's key, but not A's signature over B's challenge
    forged = Keypair.generate().sign(peer_bytes("00" * 32, b.hex, a.hex)).hex()
    message, code = await refused(b.url, {"t": "peer", "key": a.hex, "nonce": nonce, "sig": forged})
    assert code == CLOSE_REFUSED and "does not verify" in message
    # B itself is no peer of B
    message, code = await refused(b.url, {"t": "peer", "key": b.hex, "nonce": nonce, "sig": forged})
    assert code == CLOSE_REFUSED and "not a peer" in message
    proof = a.key.sign(peer_bytes("00" * 32, b.hex, a.hex)).hex()  # (refused for `process` before the proof)
    message, code = await refused(b.url, {"t": "peer", "key": a.hex, "nonce": nonce, "sig": proof, "process": "X"})
    assert code == CLOSE_REFUSED and "process?" in message


async def test_one_inbound_link_per_peer_process(fed: Federation) -> None:
    """The processes of one site share its key: each keeps its own link (the handshake's
    ``process``); a newer link from the same process replaces the old one (4412)."""
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    inbound = rb.relay.federation.inbound
    links = {}
    for process in ("11" * 8, "22" * 8):
        links[process], _ = await raw_peer(b.url, a.key, process)
        assert (await links[process].wait(lambda f: True))["t"] == "peer_ok"
    again, _ = await raw_peer(b.url, a.key, "11" * 8)
    assert (await again.wait(lambda f: True))["t"] == "peer_ok"
    code, _ = await asyncio.wait_for(links["11" * 8].closed, DEADLINE)
    assert code == CLOSE_REPLACED
    # the other process's link was never replaced: both processes are linked
    assert not links["22" * 8].closed.done() and set(inbound) == {(a.hex, "11" * 8), (a.hex, "22" * 8)}
    for raw in (again, links["22" * 8]):
        await raw.ws.close()


async def test_fwd_is_published_as_its_agent_and_refused_for_a_feed_homed_elsewhere(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    routing = rb.relay.hub.routing
    elsewhere = next(f for f in (f"misc/f{n}" for n in range(100)) if not routing.is_home(f))
    agent = Keypair.generate()
    raw, _ = await raw_peer(b.url, a.key)
    try:
        assert (await raw.wait(lambda f: True))["t"] == "peer_ok"
        ev = Event.create(agent, "note/fed", "note.text", {"n": 1})
        ok = await raw.request({"t": "fwd", "event": ev.to_wire(), "key": agent.public_hex}, "f1")
        assert ok == {"t": "ok", "feed": "note/fed", "id": ev.id, "seq": 1, "rid": "f1"}
        dup = await raw.request({"t": "fwd", "event": ev.to_wire(), "key": agent.public_hex}, "f2")
        assert dup["seq"] == 1 and dup["dup"] is True
        # a fwd of a feed B does not home: forwarding it on could loop, so it is refused
        away = Event.create(agent, elsewhere, "note.text", {})
        err = await raw.request({"t": "fwd", "event": away.to_wire(), "key": agent.public_hex}, "f3")
        assert err["code"] == "invalid" and "not the home" in err["message"]
        assert err["feed"] == elsewhere and err["id"] == away.id
        assert elsewhere not in rb.relay.hub.feeds  # never reached a worker
        err = await raw.request({"t": "fwd", "event": ev.to_wire(), "key": "nope"}, "f4")
        assert err["code"] == "malformed"
        err = await raw.request({"t": "heads", "heads": "all"}, "h1")
        assert err["code"] == "malformed" and err["rid"] == "h1"
        err = await raw.request({"t": "pub", "event": ev.to_wire()}, "p1")  # an agent's frame, not /fed's
        assert err["code"] == "malformed" and err["rid"] == "p1"
    finally:
        await raw.close()


async def test_sub_is_records_only_and_keeps_presence_to_itself(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await fed.start("b")
    author = Keypair.generate()
    for n in range(3):
        await rb.relay.hub.publish(doc_event(author, "doc/peer", n), author.public_hex)
    raw, _ = await raw_peer(b.url, a.key)
    agent = await Raw.connect(rb.ws_url, author)
    try:
        assert (await raw.wait(lambda f: True))["t"] == "peer_ok"
        await raw.send({"t": "sub", "feed": "doc/peer", "since": 1, "rid": "s1"})
        assert (await raw.wait(lambda f: f["t"] == "synced"))["seq"] == 3
        err = await raw.request({"t": "sub", "feed": "doc/peer", "since": 0}, "s2")
        assert err["code"] == "invalid" and "already subscribed" in err["message"]
        # an agent joins (presence) and writes: the peer gets the record, not the presence
        await agent.send({"t": "sub", "feed": "doc/peer", "since": 0})
        await agent.wait(lambda f: f["t"] == "presence")
        await rb.relay.hub.publish(doc_event(author, "doc/peer", 3), author.public_hex)
        await raw.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 4)
        assert [f["rec"]["seq"] for f in raw.frames if f["t"] == "rec"] == [2, 3, 4]
        assert not [f for f in raw.frames if f["t"] in ("snapshot", "presence")]
        gone = await raw.request({"t": "unsub", "feed": "doc/peer"}, "u1")
        assert gone == {"t": "unsubbed", "feed": "doc/peer", "rid": "u1"}
    finally:
        await raw.close()
        await agent.close()
