"""Every kind of bad input gets its machine-readable error; nobody else is disturbed and
the stored log does not change."""
from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text

from collab.events import Event, b64
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running
from tests.rawclient import Raw

FEED = "doc/bad"
_rid = itertools.count()


def update_for(text: str) -> bytes:
    d = Doc()
    d.get("text", type=Text).insert(0, text)
    return d.get_update()


def doc_event(key: Keypair, text: str, feed: str = FEED) -> Event:
    return Event.create(key, feed, "doc.update", {"update": b64(update_for(text))})


async def publish(raw: Raw, event: Event | dict[str, Any]) -> dict[str, Any]:
    wire = event.to_wire() if isinstance(event, Event) else event
    return await raw.request({"t": "pub", "event": wire}, f"p{next(_rid)}")


async def records(r: Running, feed: str = FEED) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{r.url}/feeds/{feed}/events", params={"limit": 1000})
    return resp.json()["records"] if resp.status_code == 200 else []


class World:
    """A relay with one healthy bystander (writer + subscriber) and a known log."""

    def __init__(self, relay: Running, good: Raw, watcher: Raw, key: Keypair) -> None:
        self.relay, self.good, self.watcher, self.key = relay, good, watcher, key
        self.n = 0

    async def bystander_still_works(self) -> None:
        """The healthy client can still publish and its subscriber still receives it."""
        self.n += 1
        ev = doc_event(self.key, f"still-alive-{self.n}")
        ok = await publish(self.good, ev)
        assert ok["t"] == "ok", ok
        rec = await self.watcher.wait(lambda f: f["t"] == "rec" and f["rec"]["event"]["id"] == ev.id)
        assert rec["rec"]["seq"] == ok["seq"]


@pytest.fixture
async def world(start_relay: Any) -> AsyncIterator[World]:
    limits = Limits(max_frame_bytes=64 << 10, max_event_bytes=16 << 10, max_subscriptions=20,
                    events_per_sec_key=1000, burst_key=1000)
    relay: Running = await start_relay("bad", limits=limits)
    key = Keypair.generate()
    good = await Raw.connect(relay.ws_url, key)
    watcher = await Raw.connect(relay.ws_url, Keypair.generate())
    await watcher.send({"t": "sub", "feed": FEED, "since": 0})
    await watcher.wait(lambda f: f["t"] == "synced")
    w = World(relay, good, watcher, key)
    await w.bystander_still_works()
    yield w
    await good.close()
    await watcher.close()


async def assert_log_unchanged(w: World, before: list[dict[str, Any]]) -> None:
    assert await records(w.relay) == before


@pytest.mark.parametrize(("payload", "why"), [
    ("{not json", "not valid JSON"),
    ("[1,2,3]", "must be a JSON object"),
    ('{"t":"launch"}', "unknown frame type"),
    ('{"t":"pub","event":{"x":1.5}}', "floats"),
    ('{"t":"sub","feed":"doc/x","feed":"doc/y"}', "duplicate"),
    (b"\xff\xfe\x00garbage", "UTF-8"),
    ('{"t":"ping","rid":{"a":1}}', "rid"),
])
async def test_malformed_frames_get_malformed(world: World, payload: str | bytes, why: str) -> None:
    before = await records(world.relay)
    bad = await Raw.connect(world.relay.ws_url, Keypair.generate())
    await bad.send(payload)
    err = await bad.wait(lambda f: f["t"] == "error")
    assert err["code"] == "malformed"
    assert why in err["message"]
    # the offender's own connection keeps working too
    assert (await bad.request({"t": "ping"}, "after"))["t"] == "pong"
    await world.bystander_still_works()
    await assert_log_unchanged(world, before + (await records(world.relay))[len(before):])
    await bad.close()


async def test_wrong_signature_is_refused(world: World) -> None:
    before = await records(world.relay)
    bad = await Raw.connect(world.relay.ws_url, world.key)
    wire = doc_event(world.key, "forged").to_wire()
    wire["sig"] = ("0" if wire["sig"][0] != "0" else "1") + wire["sig"][1:]
    err = await publish(bad, wire)
    assert err["t"] == "error" and err["code"] == "bad_signature"
    assert await records(world.relay) == before
    await world.bystander_still_works()


async def test_someone_elses_key_signature_is_refused(world: World) -> None:
    before = await records(world.relay)
    mallory = Keypair.generate()
    bad = await Raw.connect(world.relay.ws_url, mallory)
    wire = doc_event(mallory, "impersonation").to_wire()
    wire["author"] = world.key.public_hex  # claim to be someone else, keep own signature
    err = await publish(bad, wire)
    assert err["code"] == "bad_signature"
    assert await records(world.relay) == before


async def test_mismatched_id_is_refused(world: World) -> None:
    before = await records(world.relay)
    wire = doc_event(world.key, "id").to_wire()
    wire["id"] = "ab" * 32
    err = await publish(world.good, wire)
    assert err["code"] == "bad_signature" and "id" in err["message"]
    assert await records(world.relay) == before
    await world.bystander_still_works()


async def test_tampered_body_is_refused(world: World) -> None:
    before = await records(world.relay)
    wire = doc_event(world.key, "honest").to_wire()
    wire["body"] = {"update": b64(update_for("tampered"))}
    err = await publish(world.good, wire)
    assert err["code"] == "bad_signature"
    assert await records(world.relay) == before


async def test_oversized_frame_is_refused_and_connection_survives(world: World) -> None:
    before = await records(world.relay)
    bad = await Raw.connect(world.relay.ws_url, world.key)
    await bad.send(json.dumps({"t": "ping", "pad": "x" * (70 << 10)}))
    err = await bad.wait(lambda f: f["t"] == "error")
    assert err["code"] == "too_large"
    assert (await bad.request({"t": "ping"}, "alive"))["t"] == "pong"
    await world.bystander_still_works()
    assert len(await records(world.relay)) == len(before) + 1


async def test_oversized_event_is_refused(world: World) -> None:
    before = await records(world.relay)
    big = Event.create(world.key, FEED, "doc.update", {"update": b64(update_for("y" * (20 << 10)))})
    err = await publish(world.good, big)
    assert err["code"] == "too_large"
    assert await records(world.relay) == before


async def test_message_beyond_hard_cap_closes_only_that_connection(world: World) -> None:
    bad = await Raw.connect(world.relay.ws_url, world.key)
    await bad.send("x" * (64 << 10) * 5)
    code, _ = await bad.closed
    assert code == 1009
    await world.bystander_still_works()


async def test_replayed_event_is_idempotent(world: World) -> None:
    ev = doc_event(world.key, "once")
    first = await publish(world.good, ev)
    assert first["t"] == "ok" and "dup" not in first
    before = await records(world.relay)
    other = await Raw.connect(world.relay.ws_url, world.key)
    for raw in (world.good, other):  # same connection and a fresh one
        again = await publish(raw, ev)
        assert again["t"] == "ok" and again["seq"] == first["seq"] and again["dup"] is True
    after = await records(world.relay)
    assert after == before
    assert [r["event"]["id"] for r in after].count(ev.id) == 1


async def test_publish_without_hello_is_refused(world: World) -> None:
    before = await records(world.relay)
    anon = await Raw.connect(world.relay.ws_url)
    err = await publish(anon, doc_event(Keypair.generate(), "anon"))
    assert err["code"] == "auth_required"
    assert await records(world.relay) == before
    await world.bystander_still_works()


async def test_publishing_another_authors_event_is_unauthorized(world: World) -> None:
    before = await records(world.relay)
    other = await Raw.connect(world.relay.ws_url, Keypair.generate())
    err = await publish(other, doc_event(world.key, "not mine to send"))
    assert err["code"] == "unauthorized"
    assert await records(world.relay) == before


async def test_bad_hello_signature(world: World) -> None:
    anon = await Raw.connect(world.relay.ws_url)
    k = Keypair.generate()
    await anon.send({"t": "hello", "key": k.public_hex, "sig": "00" * 64})
    err = await anon.wait(lambda f: f["t"] == "error")
    assert err["code"] == "bad_signature"
    err2 = await publish(anon, doc_event(k, "still anonymous"))
    assert err2["code"] == "auth_required"


@pytest.mark.parametrize("update", [
    b"\x01\x02garbage",
    b"\xff" * 12,
    update_for("truncated")[:-3],  # (a random client id: named ids keep the collection the same everywhere)
], ids=["garbage", "all-ff", "truncated"])
async def test_undecodable_yjs_update_is_invalid_and_never_poisons_the_doc(world: World, update: bytes) -> None:
    before = await records(world.relay)
    async with httpx.AsyncClient() as http:
        text_before = (await http.get(f"{world.relay.url}/feeds/{FEED}")).json()["state"]["text"]
    ev = Event.create(world.key, FEED, "doc.update", {"update": base64.b64encode(update).decode()})
    err = await publish(world.good, ev)
    assert err["code"] == "invalid"
    assert await records(world.relay) == before
    await world.bystander_still_works()
    async with httpx.AsyncClient() as http:
        text_after = (await http.get(f"{world.relay.url}/feeds/{FEED}")).json()["state"]["text"]
    assert text_after.startswith(text_before) or text_before in text_after
    assert "garbage" not in text_after


@pytest.mark.parametrize("body", [{"update": "not base64!"}, {"update": ""}, {"text": "hi"}, "plain string"])
async def test_doc_body_shape_is_checked(world: World, body: Any) -> None:
    before = await records(world.relay)
    err = await publish(world.good, Event.create(world.key, FEED, "doc.update", body))
    assert err["code"] == "invalid"
    assert await records(world.relay) == before


async def test_wrong_kind_on_doc_feed_is_invalid(world: World) -> None:
    err = await publish(world.good, Event.create(world.key, FEED, "chat.say", {"text": "hi"}))
    assert err["code"] == "invalid"


async def test_members_feed_refuses_outsiders(world: World) -> None:
    owner, friend, outsider = world.key, Keypair.generate(), Keypair.generate()
    feed = "doc/secret"
    ok = await publish(world.good, Event.create(owner, feed, "feed.policy", {"policy": "members"}))
    assert ok["t"] == "ok" and ok["seq"] == 1
    secret = doc_event(owner, "the plan", feed)
    assert (await publish(world.good, secret))["t"] == "ok"
    before = await records(world.relay, feed)  # members feeds are not readable over HTTP
    assert before == []

    out = await Raw.connect(world.relay.ws_url, outsider)
    err = await publish(out, doc_event(outsider, "let me in", feed))
    assert err["code"] == "unauthorized"
    err = await out.request({"t": "sub", "feed": feed, "since": 0}, "s1")
    assert err["t"] == "error" and err["code"] == "unauthorized"
    # nothing of the feed reached the outsider
    assert not [f for f in out.frames if f.get("feed") == feed and f["t"] != "error"]
    # granting the friend write lets it in; a grant by a non-owner is refused
    fr = await Raw.connect(world.relay.ws_url, friend)
    grant = {"key": friend.public_hex, "read": True, "write": True}
    err = await publish(fr, Event.create(friend, feed, "acl.grant", grant))
    assert err["code"] == "unauthorized"
    ok = await publish(world.good, Event.create(owner, feed, "acl.grant", grant))
    assert ok["t"] == "ok"
    await fr.send({"t": "sub", "feed": feed, "since": 0})
    snap = await fr.wait(lambda f: f["t"] == "snapshot" and f["feed"] == feed)
    assert snap["snap"]["seq"] == 3
    assert (await publish(fr, doc_event(friend, "friend edit", feed)))["t"] == "ok"
    # revoking cuts the friend's subscription and its writes
    ok = await publish(world.good, Event.create(owner, feed, "acl.revoke", {"key": friend.public_hex}))
    assert ok["t"] == "ok"
    gone = await fr.wait(lambda f: f["t"] == "unsubbed" and f["feed"] == feed)
    assert gone["reason"] == "unauthorized"
    err = await publish(fr, doc_event(friend, "after revoke", feed))
    assert err["code"] == "unauthorized"
    await world.bystander_still_works()


async def test_subscription_limit(world: World) -> None:
    raw = await Raw.connect(world.relay.ws_url, Keypair.generate())
    for i in range(300):
        await raw.send({"t": "sub", "feed": f"misc/f{i}", "since": 0, "rid": f"s{i}"})
    replies = [await raw.wait(lambda f, i=i: f.get("rid") == f"s{i}"
                              or (f["t"] == "synced" and f["feed"] == f"misc/f{i}"))
               for i in range(300)]
    ok = [r for r in replies if r["t"] == "synced"]
    errs = [r for r in replies if r["t"] == "error"]
    assert len(ok) == 20
    assert len(errs) == 280 and {e["code"] for e in errs} == {"limit_exceeded"}
    # unsubscribing frees a slot
    assert (await raw.request({"t": "unsub", "feed": "misc/f0"}, "u0"))["t"] == "unsubbed"
    await raw.send({"t": "sub", "feed": "misc/again", "since": 0})
    await raw.wait(lambda f: f["t"] == "synced" and f["feed"] == "misc/again")
    await world.bystander_still_works()


async def test_bad_feed_names_and_since(world: World) -> None:
    raw = await Raw.connect(world.relay.ws_url, Keypair.generate())
    for i, feed in enumerate(["nonamespace", "Doc/x", "doc/", "doc//x", "doc/a b", 5, "x" * 300]):
        err = await raw.request({"t": "sub", "feed": feed, "since": 0}, f"b{i}")
        assert err["t"] == "error" and err["code"] == "invalid", feed
    err = await raw.request({"t": "sub", "feed": "doc/ok", "since": -1}, "neg")
    assert err["code"] == "malformed"


async def test_rate_limit_per_key(start_relay: Any) -> None:
    relay: Running = await start_relay("rl", limits=Limits(events_per_sec_key=5, burst_key=5))
    key = Keypair.generate()
    raw = await Raw.connect(relay.ws_url, key)
    events = [Event.create(key, "misc/rate", "note", {"i": i}) for i in range(12)]
    for i, ev in enumerate(events):
        await raw.send({"t": "pub", "event": ev.to_wire(), "rid": f"r{i}"})
    replies = [await raw.wait(lambda f, i=i: f.get("rid") == f"r{i}") for i in range(12)]
    codes = [r["t"] if r["t"] == "ok" else r["code"] for r in replies]
    assert codes.count("ok") >= 5 and "rate_limited" in codes
    stored = await records(relay, "misc/rate")
    assert len(stored) == codes.count("ok")
    # another key on the same relay is not affected
    k2 = Keypair.generate()
    raw2 = await Raw.connect(relay.ws_url, k2)
    assert (await publish(raw2, Event.create(k2, "misc/rate", "note", {"i": "other"})))["t"] == "ok"


async def test_rate_limit_per_ip_comes_before_signature_checks(start_relay: Any) -> None:
    relay: Running = await start_relay("rlip", limits=Limits(events_per_sec_ip=3, burst_ip=3))
    raw = await Raw.connect(relay.ws_url, Keypair.generate())
    bogus = {"feed": "misc/x", "kind": "note", "author": "00" * 32, "ts": 0, "ctx": 0, "body": {},
             "sig": "00" * 64, "id": "00" * 32}
    codes = [(await publish(raw, bogus))["code"] for _ in range(6)]
    assert codes[:3] == ["bad_signature"] * 3
    assert set(codes[3:]) == {"rate_limited"}
