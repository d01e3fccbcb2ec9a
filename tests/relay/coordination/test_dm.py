"""Direct messages end to end: real relays (both backends), real sockets, no mocks.

Two agents talk over ``dm/<A>.<B>`` with :class:`collab.dm.DirectChannel`; the relay stores and
orders NaCl boxes it cannot open, and a third key can neither read, write nor open them
(docs/coordination.md, "Direct messages"). Waiting is on futures and real state with
deadlines, never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import nacl.exceptions
import pytest
from nacl.public import Box

from collab.canonical import canonical
from collab.client import Client
from collab.dm import DirectChannel, dm_feed, open_message, seal_message
from collab.errors import InvalidEvent, RelayError
from collab.events import Event, Record
from collab.keys import Keypair
from relay.ops.runner import Running
from tests.rawclient import Raw
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)

SECRET = "launch-code 7f3a-hunter2-ZEBRA"


async def stored(relay: Running, feed: str) -> list[Record]:
    rows = await relay.relay.storage.read(feed, 0, 1000)
    return [Record.from_wire(json.loads(r.data)) for r in rows]


async def stored_raw(relay: Running, feed: str) -> list[str]:
    return [r.data for r in await relay.relay.storage.read(feed, 0, 1000)]


def b64_variants(text: str) -> list[str]:
    """The base64 of ``text`` at each of the three byte alignments (so it is found anywhere
    inside a larger base64 string), trimmed of the characters that depend on neighbours."""
    out = []
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + text.encode()).decode()
        skip = (pad * 4 + 2) // 3
        out.append(enc[skip:len(enc) - 4])
    return out


def assert_no_plaintext(raw: str, *texts: str) -> None:
    for text in texts:
        assert text not in raw, f"plaintext {text!r} is stored"
        for variant in b64_variants(text):
            assert variant not in raw, f"the base64 of {text!r} is stored"


# -- A and B -------------------------------------------------------------------------------

async def test_request_response_through_the_relay_is_sealed(relay: Running) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    feed = dm_feed(a.public_hex, b.public_hex)
    seen_by_b: list[Any] = []

    async def handler(body: Any) -> Any:
        seen_by_b.append(body)
        return {"answer": body["question"].upper(), "for": "A"}

    async with Client(relay.url, a) as ca, Client(relay.url, b) as cb:
        async with DirectChannel(ca, b.public_hex) as ch_a, DirectChannel(cb, a.public_hex) as ch_b:
            assert ch_a.feed == ch_b.feed == feed
            ch_b.serve(handler)
            reply = await ch_a.request({"question": SECRET}, timeout=15)
            assert reply == {"answer": SECRET.upper(), "for": "A"}
            assert seen_by_b == [{"question": SECRET}]

            # a plain (sync) handler on A's side, requests the other way round
            ch_a.serve(lambda body: {"echo": body})
            assert await ch_b.request([1, 2, "three"], timeout=15) == {"echo": [1, 2, "three"]}

            # both sides saw the whole conversation, their own messages included
            async def both_have_four() -> bool:
                return len(ch_a.received) == 4 and len(ch_b.received) == 4

            await eventually(both_have_four, 10, "every message at both ends")
            assert ch_a.received == ch_b.received
            assert [(who, kind) for who, kind, _ in ch_a.received] == [
                (a.public_hex, "request"), (b.public_hex, "response"),
                (b.public_hex, "request"), (a.public_hex, "response")]

    # what the relay stored: four boxes, in order, responses linked to their requests
    recs = await stored(relay, feed)
    assert [r.seq for r in recs] == [1, 2, 3, 4]
    assert [r.event.author for r in recs] == [a.public_hex, b.public_hex, b.public_hex, a.public_hex]
    assert all(r.event.kind == "dm.msg" and set(r.event.body) <= {"nonce", "box", "re"} for r in recs)
    assert recs[1].event.body["re"] == recs[0].event.id and recs[3].event.body["re"] == recs[2].event.id
    assert "re" not in recs[0].event.body and "re" not in recs[2].event.body
    for r in recs:  # both members open every stored box
        assert open_message(a, r.event) == open_message(b, r.event)
    assert open_message(b, recs[0].event) == ("request", {"question": SECRET})

    # ... but the stored bytes hold neither the plaintext nor its base64
    raw = "\n".join(await stored_raw(relay, feed))
    plain = canonical({"kind": "request", "body": {"question": SECRET}}).decode()
    assert_no_plaintext(raw, SECRET, SECRET.upper(), "hunter2", plain, '"question"', '"answer"')

    # the relay's view of the feed is metadata only, and not served over HTTP at all: a stranger
    # (an unsigned request) cannot even tell the conversation exists (docs/protocol.md 15)
    async with httpx.AsyncClient(timeout=10.0) as http:
        for path in ("", "/events", "/state"):
            r = await http.get(f"{relay.url}/feeds/{feed}{path}")
            assert r.status_code == 403, (path, r.status_code, r.text)
            assert r.json()["error"] == "unauthorized"
            assert SECRET not in r.text
    view = relay.relay.hub.feeds[feed].ns.view(relay.relay.hub.feeds[feed].state)
    assert view["count"] == 4 and SECRET not in json.dumps(view)


async def test_concurrent_requests_both_ways_are_matched(relay: Running) -> None:
    a, b = Keypair.generate(), Keypair.generate()

    async def slow_double(body: Any) -> Any:
        await asyncio.sleep(0)  # yield, so answers interleave
        return body * 2

    async with Client(relay.url, a) as ca, Client(relay.url, b) as cb:
        async with DirectChannel(ca, b.public_hex) as ch_a, DirectChannel(cb, a.public_hex) as ch_b:
            ch_a.serve(slow_double)
            ch_b.serve(lambda body: -body)
            from_a = [ch_a.request(i, timeout=20) for i in range(1, 21)]
            from_b = [ch_b.request(i, timeout=20) for i in range(1, 21)]
            results = await asyncio.gather(*from_a, *from_b)
            assert results[:20] == [-i for i in range(1, 21)]
            assert results[20:] == [2 * i for i in range(1, 21)]


async def test_requests_sent_while_the_peer_is_away_are_answered_exactly_once(relay: Running) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    feed = dm_feed(a.public_hex, b.public_hex)
    calls: list[Any] = []

    def handler(body: Any) -> Any:
        calls.append(body)
        return f"done {body}"

    async with Client(relay.url, a) as ca, Client(relay.url, b) as cb:
        async with DirectChannel(ca, b.public_hex) as ch_a:
            pending = asyncio.ensure_future(ch_a.request("job-1", timeout=20))

            async def request_stored() -> bool:
                return len(await stored(relay, feed)) == 1

            await eventually(request_stored, 10, "A's request to be stored")
            assert not pending.done()

            # B comes online later and starts serving after entering: the waiting request is answered
            async with DirectChannel(cb, a.public_hex) as ch_b:
                ch_b.serve(handler)
                assert await pending == "done job-1"
            assert calls == ["job-1"]

            # B again, serving before it enters: the old request already has its answer in the
            # feed (a later record than the request), so it is not answered a second time
            ch_b = DirectChannel(cb, a.public_hex)
            ch_b.serve(handler)
            async with ch_b:
                assert await ch_a.request("job-2", timeout=20) == "done job-2"
            assert calls == ["job-1", "job-2"]

    recs = await stored(relay, feed)
    kinds = [open_message(a, r.event)[0] for r in recs]
    assert kinds == ["request", "response", "request", "response"], kinds
    assert recs[1].event.body["re"] == recs[0].event.id and recs[3].event.body["re"] == recs[2].event.id


async def test_a_channel_survives_a_dropped_connection(relay: Running) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    feed = dm_feed(a.public_hex, b.public_hex)
    calls: list[Any] = []

    def handler(body: Any) -> Any:
        calls.append(body)
        return body + 1

    async with Client(relay.url, a) as ca, Client(relay.url, b, backoff_base=0.05) as cb:
        async with DirectChannel(ca, b.public_hex) as ch_a, DirectChannel(cb, a.public_hex) as ch_b:
            ch_b.serve(handler)
            assert await ch_a.request(1, timeout=15) == 2
            for n in (10, 20, 30):
                ws = cb.websocket
                assert ws is not None
                ws.transport.abort()  # B's connection drops; the client reconnects and resubscribes
                await cb.wait_disconnected(10)
                assert await ch_a.request(n, timeout=20) == n + 1  # answered after B is back
                await cb.wait_connected(20)
            assert calls == [1, 10, 20, 30]
            assert cb.reconnects >= 3

    recs = await stored(relay, feed)
    kinds = [open_message(a, r.event)[0] for r in recs]
    assert kinds == ["request", "response"] * 4, kinds  # each request answered exactly once


# -- a third key ---------------------------------------------------------------------------

async def test_a_third_agent_can_neither_read_write_nor_open(relay: Running) -> None:
    a, b, c = Keypair.generate(), Keypair.generate(), Keypair.generate()
    feed = dm_feed(a.public_hex, b.public_hex)

    async with Client(relay.url, a) as ca, Client(relay.url, b) as cb, Client(relay.url, c) as cc:
        async with DirectChannel(ca, b.public_hex) as ch_a, DirectChannel(cb, a.public_hex) as ch_b:
            ch_b.serve(lambda body: "ok " + body)
            assert await ch_a.request(SECRET, timeout=15) == "ok " + SECRET

            # C subscribes: refused with unauthorized, nothing delivered
            sub = await cc.subscribe(feed)
            with pytest.raises(RelayError) as info:
                await sub.wait_synced(10)
            assert info.value.code == "unauthorized"
            assert sub.closed and sub.queued == 0 and sub.seq == 0

            # C publishes: a well-formed box (for A, from C) in A and B's feed -> unauthorized
            body = seal_message(c, a.public_hex, "request", "let me in")
            with pytest.raises(RelayError) as info:
                await cc.publish(feed, "dm.msg", body)
            assert info.value.code == "unauthorized"
            # ... also as the very first event of a feed (no access checks run before its seq 1)
            fresh = dm_feed(a.public_hex, Keypair.generate().public_hex)
            with pytest.raises(RelayError) as info:
                await cc.publish(fresh, "dm.msg", body)
            assert info.value.code == "unauthorized"
            assert await relay.relay.storage.head(fresh) is None

        # the same over raw frames: authenticated as C, and not authenticated at all
        raw = await Raw.connect(relay.ws_url, c)
        try:
            reply = await raw.request({"t": "sub", "feed": feed}, "s1")
            assert reply["t"] == "error" and reply["code"] == "unauthorized", reply
            ev = Event.create(c, feed, "dm.msg", seal_message(c, b.public_hex, "response", "x"))
            reply = await raw.request({"t": "pub", "event": ev.to_wire()}, "p1")
            assert reply["t"] == "error" and reply["code"] == "unauthorized", reply
        finally:
            await raw.close()
        anon = await Raw.connect(relay.ws_url)
        try:
            reply = await anon.request({"t": "sub", "feed": feed}, "s2")
            assert reply["t"] == "error" and reply["code"] in ("unauthorized", "auth_required"), reply
            assert not any(f.get("t") == "rec" for f in anon.frames)
        finally:
            await anon.close()

    recs = await stored(relay, feed)
    assert [r.event.author for r in recs] == [a.public_hex, b.public_hex]  # nothing of C's

    # HTTP does not serve the feed's records
    async with httpx.AsyncClient(timeout=10.0) as http:
        r = await http.get(f"{relay.url}/feeds/{feed}/events")
        assert r.status_code == 403 and r.json()["error"] == "unauthorized"
        assert "box" not in r.text

    # C holds a stored box and cannot open it: not a member, and not by force either
    for rec in recs:
        with pytest.raises(InvalidEvent):
            open_message(c, rec.event)
        nonce = base64.b64decode(rec.event.body["nonce"])
        box = base64.b64decode(rec.event.body["box"])
        for member in (a, b):
            with pytest.raises(nacl.exceptions.CryptoError):
                Box(c.box_private_key(), member.box_private_key().public_key).decrypt(box, nonce)
    assert open_message(b, recs[0].event) == ("request", SECRET)
