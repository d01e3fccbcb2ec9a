"""Federation peers are bounded like clients (issue 12, item 5; docs/federation.md "Bounds"):
a hostile peer on a raw ``/fed`` WebSocket (tests/rawclient.py, as test_endpoint.py does) that
sends false heads for a feed the relay homes writes no alarm and is cut off (4409, then refused
at the handshake); subscriptions, frames and heads per peer are capped with their codes; and a
hostile home (a hand-written /fed server) whose record of one feed is bad does not hold up the
mirroring of its other feeds (the link stays up). Real relays on both backends."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.federation.alarms import ALARM_FEED
from relay.federation.endpoint import CLOSE_FALSE_EVIDENCE
from relay.federation.link import CLOSE_REFUSED, fed_url, peer_bytes
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.relay.federation.test_link import DEADLINE, Federation, raw_peer
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)

BOUNDS = Limits(peer_max_subscriptions=3, peer_frames_per_sec=1e-6, peer_frames_burst=40,
                peer_heads_per_sec=1e-6, peer_heads_burst=2000)




async def start_b(fed: Federation) -> Running:
    """B (the home of note/*) with small peer bounds; A is a raw peer, never started."""
    cm = serving(dataclasses.replace(fed.config("b"), limits=BOUNDS))
    fed.running["b"] = cm
    return await cm.__aenter__()


async def alarm_count(running: Running) -> int:
    head = await running.relay.hub.storage.head(ALARM_FEED)
    return head.seq if head is not None else 0


async def test_false_heads_about_our_feed_write_nothing_and_cut_the_peer_off(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await start_b(fed)
    author = Keypair.generate()
    for n in range(3):
        await rb.relay.hub.publish(Event.create(author, "note/own", "note", {"n": n}), author.public_hex)
    raw, _ = await raw_peer(b.url, a.key)
    assert (await raw.wait(lambda f: True))["t"] == "peer_ok"
    # 2,000 made-up hashes for a feed B homes (the attack of issue 12): one frame
    heads = [{"feed": "note/own", "seq": n, "hash": os.urandom(32).hex()} for n in range(1, 2001)]
    await raw.send({"t": "heads", "heads": heads, "rid": "h1"})
    err = await raw.wait(lambda f: f["t"] == "error")
    assert err["code"] == "false_evidence" and err["rid"] == "h1"
    code, _ = await asyncio.wait_for(raw.closed, DEADLINE)
    assert code == CLOSE_FALSE_EVIDENCE
    assert await alarm_count(rb) == 0  # checked against B's own log: nothing written
    fedb = rb.relay.federation
    assert fedb.mirrors.false_evidence == 1 and fedb.is_cut_off(a.hex)
    # cut off: the peer's next handshake is refused
    ws = await websockets.connect(fed_url(b.url))
    challenge = json.loads(await ws.recv())
    sig = a.key.sign(peer_bytes(challenge["nonce"], challenge["relay"], a.hex)).hex()
    await ws.send(json.dumps({"t": "peer", "key": a.hex, "nonce": os.urandom(16).hex(), "sig": sig}))
    refusal = json.loads(await ws.recv())
    assert refusal["code"] == "unauthorized" and "cut off" in refusal["message"]
    await asyncio.wait_for(ws.wait_closed(), DEADLINE)
    assert ws.close_code == CLOSE_REFUSED


async def test_subscriptions_frames_and_heads_per_peer_are_capped(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    rb = await start_b(fed)
    raw, _ = await raw_peer(b.url, a.key)
    try:
        assert (await raw.wait(lambda f: True))["t"] == "peer_ok"
        for n in range(3):
            await raw.send({"t": "sub", "feed": f"note/s{n}", "since": 0, "rid": f"s{n}"})
            await raw.wait(lambda f, n=n: f["t"] == "synced" and f["feed"] == f"note/s{n}")
        err = await raw.request({"t": "sub", "feed": "note/s3", "since": 0}, "s3")
        assert err["code"] == "limit_exceeded" and "peer_max_subscriptions" in err["message"]
        # heads: at most peer_heads_burst in one frame, and per second per peer
        routing = rb.relay.hub.routing
        elsewhere = next(f for f in (f"misc/h{n}" for n in range(100)) if not routing.is_home(f))
        unknown = [{"feed": elsewhere, "seq": n, "hash": "ab" * 32} for n in range(1, 2002)]  # not mirrored: ignored
        err = await raw.request({"t": "heads", "heads": unknown}, "h1")
        assert err["code"] == "too_large"
        await raw.send({"t": "heads", "heads": unknown[:1500], "rid": "h2"})  # within the burst: no answer
        err = await raw.request({"t": "heads", "heads": unknown[:1000]}, "h3")
        assert err["code"] == "rate_limited" and "peer_heads_per_sec" in err["message"]
        # frames: 40 per peer (7 spent), then rate_limited, answered in order
        for n in range(40):
            await raw.send({"t": "unsub", "feed": "note/none", "rid": f"u{n}"})
        last = await raw.wait(lambda f: f.get("rid") == "u39")
        answers = [f for f in raw.frames if str(f.get("rid", "")).startswith("u")]
        assert [f["t"] for f in answers] == ["unsubbed"] * 33 + ["error"] * 7
        assert last["code"] == "rate_limited" and "peer_frames_per_sec" in last["message"]
        assert await alarm_count(rb) == 0
    finally:
        await raw.ws.close()


class HostileHome:
    """A /fed server with the home's key: ``note/bad``'s first record has a broken receipt,
    ``note/good``'s three records are sound; counts connections."""

    def __init__(self, key: Keypair) -> None:
        self.key = key
        self.connections = 0
        self.author = Keypair.generate()

    def records(self, feed: str, n: int) -> list[dict[str, Any]]:
        out, head = [], GENESIS
        for seq in range(1, n + 1):
            rec = Record.seal(self.key, Event.create(self.author, feed, "note", {"n": seq}), seq, head)
            out.append(rec.to_wire())
            head = rec.hash
        return out

    async def serve(self, ws: ServerConnection) -> None:
        self.connections += 1
        nonce = os.urandom(32).hex()
        await ws.send(json.dumps({"t": "challenge", "nonce": nonce, "relay": self.key.public_hex}))
        hello = json.loads(await ws.recv())
        sig = self.key.sign(peer_bytes(hello["nonce"], hello["key"], self.key.public_hex)).hex()
        await ws.send(json.dumps({"t": "peer_ok", "sig": sig}))
        async for message in ws:
            for text in str(message).split("\n"):
                frame = json.loads(text)
                if frame["t"] != "sub":
                    continue
                feed = frame["feed"]
                recs = self.records(feed, 3)[frame["since"]:]
                if feed == "note/bad":
                    recs[0]["rsig"] = ("0" if recs[0]["rsig"][0] != "0" else "1") + recs[0]["rsig"][1:]
                for rec in recs:
                    await ws.send(json.dumps({"t": "rec", "feed": feed, "rec": rec}))


async def test_a_bad_record_refuses_its_feed_only(tmp_path: Path, backend: Backend) -> None:
    home_key = Keypair.generate()
    home = HostileHome(home_key)
    async with serve(home.serve, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        cfg = make_config(tmp_path / "m", backend, "m", public_url="http://127.0.0.1:1",
                          peers=(f"{url}#{home_key.public_hex}",), pins=(f"note/*={home_key.public_hex}",))
        async with serving(cfg) as rm:
            fed = rm.relay.federation
            link = fed.links[home_key.public_hex]
            await link.wait_connected(DEADLINE)
            await fed.mirrors.ensure("note/bad")  # first: its bad record is ahead of the good feed's
            await fed.mirrors.ensure("note/good")
            storage = rm.relay.hub.storage

            async def good_mirrored() -> bool:
                head = await storage.head("note/good")
                return head is not None and head.seq == 3

            await eventually(good_mirrored, 5, "note/good mirrored behind note/bad's bad record")
            assert await storage.head("note/bad") is None  # refused: nothing stored
            assert fed.alarms.count >= 1 and link.connected and link.connects == 1
            assert home.connections == 1  # the link was never dropped
            rows = await storage.read(ALARM_FEED, 0, 10)
            assert [json.loads(r.data)["event"]["body"]["feed"] for r in rows] == ["note/bad"]
