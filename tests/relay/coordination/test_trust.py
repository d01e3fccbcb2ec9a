"""Vouching and trust end to end: real relays (both backends), real sockets, no mocks.

Agents vouch through the relay (``vouch/global``); ``GET /trust/{topic}`` must equal what any
agent computes from the feed's records with ``collab.trust.compute``, whatever order the
events arrived in (docs/coordination.md, "Vouching and trust").
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from collab import trust
from collab.client import Client
from collab.errors import RelayError
from collab.events import Event, Record, event_signing_bytes, now_ms
from collab.keys import Keypair
from collab.replay import fetch_records
from relay.ops.runner import Running
from tests.rawclient import Raw

pytestmark = pytest.mark.timeout(60)

FEED = "vouch/global"
SCALE = 1_000_000_000


async def http_scores(http: httpx.AsyncClient, url: str, topic: str = "global") -> dict[str, Any]:
    r = await http.get(f"{url}/trust/{topic}")
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["feed"] == f"vouch/{topic}" and body["scale"] == SCALE
    rows = body["scores"]
    assert rows == sorted(rows, key=lambda row: (-row["score"], row["key"])), "scores are not sorted"
    assert sum(row["score"] for row in rows) == (SCALE if rows else 0)
    return body  # type: ignore[no-any-return]


def as_table(body: dict[str, Any]) -> dict[str, int]:
    return {row["key"]: row["score"] for row in body["scores"]}


async def replayed(url: str, relay_key: str, topic: str = "global") -> tuple[list[Record], dict[str, int]]:
    """What an agent computes on its own: the feed's records over HTTP, verified, then scored."""
    records = [Record.from_wire(d) for d in await fetch_records(url, f"vouch/{topic}")]
    return records, trust.compute(records, relay=relay_key)


async def relay_key(http: httpx.AsyncClient, url: str) -> str:
    return (await http.get(f"{url}/relay")).json()["key"]  # type: ignore[no-any-return]


# -- vouching through one relay ------------------------------------------------------------

async def test_http_scores_equal_a_replay_of_the_feed(relay: Running) -> None:
    keys = [Keypair.generate() for _ in range(6)]
    hexes = [k.public_hex for k in keys]
    clients = [Client(relay.url, k) for k in keys]
    for c in clients:
        await c.__aenter__()
    try:
        a, b, c, d, e, f = clients
        await trust.vouch(a, hexes[1], 900, note="reliable")
        await trust.vouch(a, hexes[2], 300)
        await trust.vouch(b, hexes[2], 1000)
        await trust.vouch(c, hexes[0], 500)
        await trust.vouch(d, hexes[0], 700)
        await trust.vouch(d, hexes[4], -800)           # distrust weighs nothing
        await trust.vouch(e, hexes[3], 1000)
        await trust.vouch(f, hexes[1], 200)
        await trust.vouch(f, hexes[1], 1000)           # replaces f's earlier vouch for b
        await trust.revoke(a, hexes[2])                # a withdraws its vouch for c
        await trust.vouch(b, hexes[5], 50)

        # refusals: for oneself, out of range, an unknown field
        for body in ({"subject": hexes[0], "weight": 10}, {"subject": hexes[1], "weight": 1001},
                     {"subject": hexes[1], "weight": 5, "extra": 1}):
            with pytest.raises(RelayError) as info:
                await a.publish(FEED, "vouch.set", body)
            assert info.value.code == "invalid", body
        # a ts far ahead of the relay's clock would never decay: refused
        future = Event.create(a.key, FEED, "vouch.set", {"subject": hexes[1], "weight": 1000},  # type: ignore[arg-type]
                              ts=now_ms() + 10 * 60_000)
        with pytest.raises(RelayError) as info:
            await a.publish_event(future)
        assert info.value.code == "invalid"

        async with httpx.AsyncClient(timeout=10.0) as http:
            rkey = await relay_key(http, relay.url)
            assert rkey == relay.relay.hub.relay_key.public_hex
            body = await http_scores(http, relay.url)
            records, mine = await replayed(relay.url, rkey)
            assert len(records) == 12 and body["seq"] == 12  # the relay's opening, then the 11 vouches
            assert (records[0].event.kind, records[0].event.author) == ("feed.policy", rkey)
            assert as_table(body) == mine  # exactly, integer for integer
            assert set(mine) == set(hexes)
            assert trust.compute(reversed(records), relay=rkey) == mine  # order never matters
            assert await trust.fetch_scores(relay.url) == mine

            # the shape of the trust: a (vouched by c and d) and b (by a and f) lead; e's
            # subject d has only e's vouch; distrust and a revoke give nothing
            table = as_table(body)
            assert table[hexes[0]] > table[hexes[4]] and table[hexes[1]] > table[hexes[4]]

            for i, key in enumerate(hexes):
                r = await http.get(f"{relay.url}/trust/global/{key}")
                assert r.status_code == 200
                one = r.json()
                assert one == {"feed": FEED, "seq": 12, "key": key, "score": mine[key], "scale": SCALE}, i
            stranger = Keypair.generate().public_hex
            r = await http.get(f"{relay.url}/trust/global/{stranger}")
            assert r.status_code == 200 and r.json()["score"] == 0
            r = await http.get(f"{relay.url}/trust/global/NOT-A-KEY")
            assert r.status_code == 400 and r.json()["error"] == "invalid"
            for bad in ("Bad!", "events", "%20x"):
                r = await http.get(f"{relay.url}/trust/{bad}")
                assert r.status_code == 400 and r.json()["error"] == "invalid", bad
                r = await http.get(f"{relay.url}/trust/{bad}/{key}")
                assert r.status_code == 400 and r.json()["error"] == "invalid", bad

            # a later vouch moves the scores; the relay's answer follows (no stale cache)
            await trust.vouch(e, hexes[2], 1000)
            body2 = await http_scores(http, relay.url)
            _, mine2 = await replayed(relay.url, rkey)
            assert body2["seq"] == 13 and as_table(body2) == mine2 != mine

            # another topic is another feed, empty until someone vouches there
            empty = await http_scores(http, relay.url, "research")
            assert empty["scores"] == [] and empty["seq"] == 0
            assert "vouch/research" not in relay.relay.hub.feeds  # asking does not load a feed
            await trust.vouch(a, hexes[1], 400, topic="research")
            research = await http_scores(http, relay.url, "research")
            _, mine3 = await replayed(relay.url, rkey, "research")
            assert as_table(research) == mine3 and set(mine3) == {hexes[0], hexes[1]}
    finally:
        for cl in clients:
            await cl.aclose()


# -- two relays, one set of events, two orders ---------------------------------------------

def vouch_events(keys: Sequence[Keypair], rng: random.Random) -> list[Event]:
    """A set of signed vouch events with distinct timestamps, supersessions and revokes."""
    base = now_ms() - 3 * 86_400_000  # three days ago: decay matters, nothing is in the future
    events: list[Event] = []
    ts = base
    for author in keys:
        for subject in rng.sample([k for k in keys if k is not author], 3):
            ts += rng.randrange(1, 3_600_000)
            events.append(Event.create(author, FEED, "vouch.set",
                                       {"subject": subject.public_hex, "weight": rng.randrange(-300, 1001)}, ts=ts))
    for ev in list(events[::4]):  # some pairs are changed later: a newer weight or a revoke
        author = next(k for k in keys if k.public_hex == ev.author)
        ts += rng.randrange(1, 3_600_000)
        if rng.random() < 0.5:
            events.append(Event.create(author, FEED, "vouch.revoke", {"subject": ev.body["subject"]}, ts=ts))
        else:
            events.append(Event.create(author, FEED, "vouch.set",
                                       {"subject": ev.body["subject"], "weight": rng.randrange(1, 1001)}, ts=ts))
    # one stale event: older than the vouch it "replaces", so it must lose whatever its arrival
    first = events[0]
    author = next(k for k in keys if k.public_hex == first.author)
    events.append(Event.create(author, FEED, "vouch.set", {"subject": first.body["subject"], "weight": 1000},
                               ts=first.ts - 1))
    return events


async def publish_in_order(url: str, keys: Sequence[Keypair], events: Sequence[Event]) -> None:
    """Publish ``events`` one at a time in this order, each from its author's connection."""
    clients = {k.public_hex: Client(url, k) for k in keys}
    for c in clients.values():
        await c.__aenter__()
    try:
        for ev in events:
            ack = await clients[ev.author].publish_event(ev)
            assert not ack.dup
    finally:
        for c in clients.values():
            await c.aclose()


async def test_two_relays_same_events_different_orders_same_scores(
        start_relay: Callable[..., Awaitable[Running]]) -> None:
    rng = random.Random(99)
    keys = [Keypair.generate() for _ in range(7)]
    events = vouch_events(keys, rng)
    order_a, order_b = events[:], events[:]
    rng.shuffle(order_a)
    rng.shuffle(order_b)
    order_b.reverse()
    assert order_a != order_b

    ra = await start_relay("a")
    rb = await start_relay("b")
    assert ra.relay.hub.relay_key.public_hex != rb.relay.hub.relay_key.public_hex
    await publish_in_order(ra.url, keys, order_a)
    await publish_in_order(rb.url, keys, order_b)

    async with httpx.AsyncClient(timeout=10.0) as http:
        body_a = await http_scores(http, ra.url)
        body_b = await http_scores(http, rb.url)
        assert body_a["seq"] == body_b["seq"] == len(events) + 1  # each relay opened the feed first
        assert body_a["scores"] == body_b["scores"]  # same keys, same order, same integers
        assert set(as_table(body_a)) == {k.public_hex for k in keys}

        recs_a, mine_a = await replayed(ra.url, await relay_key(http, ra.url))
        recs_b, mine_b = await replayed(rb.url, await relay_key(http, rb.url))
        # the relays really did sequence different orders of the very same events
        assert [r.event.id for r in recs_a[1:]] == [e.id for e in order_a]
        assert [r.event.id for r in recs_b[1:]] == [e.id for e in order_b]
        assert mine_a == mine_b == as_table(body_a)
        # and so does an agent folding the events in yet another order (or with either relay key)
        shuffled = recs_a + recs_b
        rng.shuffle(shuffled)
        assert trust.compute(shuffled, relay=ra.relay.hub.relay_key.public_hex) == mine_a
        for key in keys:
            one_a = (await http.get(f"{ra.url}/trust/global/{key.public_hex}")).json()
            one_b = (await http.get(f"{rb.url}/trust/global/{key.public_hex}")).json()
            assert one_a["score"] == one_b["score"] == mine_a[key.public_hex]


# -- refusals ------------------------------------------------------------------------------

def forged_vouch(author: Keypair, signer: Keypair, subject: str, weight: int = 1000) -> dict[str, Any]:
    """A vouch claiming ``author`` but signed with ``signer``'s key (the id is honest)."""
    ts = now_ms()
    body = {"subject": subject, "weight": weight}
    signing = event_signing_bytes(FEED, "vouch.set", author.public_hex, ts, 0, body)
    return {"feed": FEED, "kind": "vouch.set", "author": author.public_hex, "ts": ts, "ctx": 0, "body": body,
            "sig": signer.sign(signing).hex(), "id": hashlib.sha256(signing).hexdigest()}


async def test_a_vouch_signed_by_another_key_is_refused(relay: Running) -> None:
    x, y, subject = Keypair.generate(), Keypair.generate(), Keypair.generate()
    async with Client(relay.url, subject) as honest:  # the feed exists: the relay's opening and one vouch
        await trust.vouch(honest, x.public_hex, 100)
    before = await relay.relay.storage.head(FEED)
    assert before is not None and before.seq == 2

    for conn_key in (y, x):  # authenticated as the signer, then as the claimed author
        raw = await Raw.connect(relay.ws_url, conn_key)
        try:
            reply = await raw.request({"t": "pub", "event": forged_vouch(x, y, subject.public_hex)}, "f1")
            assert reply["t"] == "error" and reply["code"] == "bad_signature", reply
            # a signature over other bytes (the id no longer matches the signed content)
            wire = forged_vouch(x, x, subject.public_hex)
            wire["body"] = {"subject": subject.public_hex, "weight": -1000}
            reply = await raw.request({"t": "pub", "event": wire}, "f2")
            assert reply["t"] == "error" and reply["code"] == "bad_signature", reply
        finally:
            await raw.close()

    after = await relay.relay.storage.head(FEED)
    assert after is not None and (after.seq, after.hash) == (before.seq, before.hash)
    async with httpx.AsyncClient(timeout=10.0) as http:
        records, mine = await replayed(relay.url, relay.relay.hub.relay_key.public_hex)
        assert [r.event.author for r in records] == [relay.relay.hub.relay_key.public_hex, subject.public_hex]
        assert as_table(await http_scores(http, relay.url)) == mine
        assert y.public_hex not in mine


async def test_an_agent_cannot_publish_an_outcome(relay: Running) -> None:
    agent, other = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, agent) as c:
        for outcome in ("delivered", "slashed"):
            with pytest.raises(RelayError) as info:
                await c.publish(FEED, "vouch.outcome", {"subject": other.public_hex, "outcome": outcome,
                                                        "ref": "auction/x"})
            assert info.value.code == "unauthorized"
        # not even one claiming to be about the relay's own key, nor in another topic
        with pytest.raises(RelayError) as info:
            await c.publish("vouch/other", "vouch.outcome", {"subject": relay.relay.hub.relay_key.public_hex,
                                                             "outcome": "delivered", "ref": "r"})
        assert info.value.code == "unauthorized"
        await trust.vouch(c, other.public_hex, 500)  # the connection is still fine
    head = await relay.relay.storage.head(FEED)
    assert head is not None and head.seq == 2  # the relay's opening and the one vouch
    assert await relay.relay.storage.head("vouch/other") is None  # a refused event opens nothing
    async with httpx.AsyncClient(timeout=10.0) as http:
        body = await http_scores(http, relay.url)
        assert {row["key"] for row in body["scores"]} == {agent.public_hex, other.public_hex}
