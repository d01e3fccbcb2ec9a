"""``POST /feeds/{feed}/events`` (relay/endpoints/http_publish.py, docs/protocol.md 15.2).

One signed event per request, answered after the durable append. Every bad input of the ``/ws``
catalogue (tests/relay/test_bad_input.py) sent over HTTP gets its code with the status of the
one table (relay/endpoints/http_errors.py) and leaves the log unchanged; the same event over
HTTP and over ``/ws`` is stored once; limits are the ``/ws`` limits (per IP before the signature,
per key after, duplicates never charged to their author). The federation case (a non-home relay
acks with the home's seq) is in tests/relay/federation/test_http_publish_fed.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.auctions import balances, grant
from collab.capability import Capability
from collab.client import Client
from collab.events import Event, b64, now_ms
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.conftest import make_config
from tests.rawclient import Raw
from tests.wait import eventually
from tests.relay.test_bad_input import doc_event, publish, records, update_for

FEED = "doc/bad"
LIMITS = Limits(max_frame_bytes=64 << 10, max_event_bytes=16 << 10, events_per_sec_key=1000, burst_key=1000)


async def post(relay: Running, feed: str, body: Event | dict[str, Any] | bytes | str,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """POST one body to ``/feeds/{feed}/events`` (an Event or a dict goes as JSON)."""
    if isinstance(body, Event):
        body = body.to_wire()
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    # plain http:// to a local relay, no certificate involved: skip loading the CA bundle (~0.1 s a client)
    async with httpx.AsyncClient(timeout=30, verify=False) as http:  # noqa: S501
        return await http.post(f"{relay.url}/feeds/{feed}/events", content=content,
                               headers={"content-type": "application/json", **(headers or {})})


def refused(resp: httpx.Response, status: int, code: str, why: str = "") -> dict[str, Any]:
    """Check a refusal's status, code, body shape and ``Retry-After``; return its body."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["error"] == code, body
    assert set(body) <= {"error", "message", "feed", "id"} and isinstance(body["message"], str)
    assert why in body["message"], body
    assert ("retry-after" in resp.headers) == (status in (429, 503)), resp.headers
    return dict(body)


@dataclass
class World:
    relay: Running
    key: Keypair
    good: Raw     # a /ws writer (key) and a subscriber of FEED, to see nothing else arrives
    watcher: Raw


@pytest.fixture
async def world(start_relay: Any) -> AsyncIterator[World]:
    relay: Running = await start_relay("hp", limits=LIMITS)
    key = Keypair.generate()
    good = await Raw.connect(relay.ws_url, key)
    watcher = await Raw.connect(relay.ws_url, Keypair.generate())
    await watcher.send({"t": "sub", "feed": FEED, "since": 0})
    await watcher.wait(lambda f: f["t"] == "synced")
    yield World(relay, key, good, watcher)
    await good.close()
    await watcher.close()


async def test_publish_is_acked_after_storing_and_reaches_subscribers(world: World) -> None:
    ev = doc_event(world.key, "over http")
    resp = await post(world.relay, FEED, ev)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": ev.id, "seq": 1, "dup": False}
    stored = await records(world.relay)
    assert [(r["seq"], r["event"]) for r in stored] == [(1, ev.to_wire())]
    rec = await world.watcher.wait(lambda f: f["t"] == "rec")
    assert rec["rec"]["event"]["id"] == ev.id and rec["rec"]["seq"] == 1
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{world.relay.url}/feeds/{FEED}")).json()["state"]["text"] == "over http"


async def test_the_same_event_over_http_and_ws_is_stored_once(world: World) -> None:
    first, second = doc_event(world.key, "a"), doc_event(world.key, "b")
    assert (await post(world.relay, FEED, first)).json() == {"id": first.id, "seq": 1, "dup": False}
    again = await publish(world.good, first)  # over /ws: a duplicate of the HTTP one
    assert again["t"] == "ok" and again["seq"] == 1 and again["dup"] is True
    ok = await publish(world.good, second)  # over /ws first, then over HTTP
    assert ok["t"] == "ok" and ok["seq"] == 2 and "dup" not in ok
    assert (await post(world.relay, FEED, second)).json() == {"id": second.id, "seq": 2, "dup": True}
    assert (await post(world.relay, FEED, first)).json() == {"id": first.id, "seq": 1, "dup": True}
    assert [r["event"]["id"] for r in await records(world.relay)] == [first.id, second.id]


def _resign_wrong(ev: Event) -> dict[str, Any]:
    wire = ev.to_wire()
    wire["sig"] = ("0" if wire["sig"][0] != "0" else "1") + wire["sig"][1:]
    return wire


#: a bad request: the feed of its path and its body, made for a world
Maker = Callable[[World], tuple[str, Any]]


def case(name: str, make: Maker, status: int, code: str, why: str = "") -> tuple[str, Maker, int, str, str]:
    return name, make, status, code, why


def _impersonation(w: World) -> tuple[str, Any]:
    mallory = Keypair.generate()
    wire = doc_event(mallory, "impersonation").to_wire()
    wire["author"] = w.key.public_hex
    return FEED, wire


def _bad_id(w: World) -> tuple[str, Any]:
    wire = doc_event(w.key, "id").to_wire()
    wire["id"] = "ab" * 32
    return FEED, wire


def _tampered(w: World) -> tuple[str, Any]:
    wire = doc_event(w.key, "honest").to_wire()
    wire["body"] = {"update": b64(update_for("tampered"))}
    return FEED, wire


def _with_cap(w: World, cap: Capability) -> tuple[str, Any]:
    """A stranger's doc.update to FEED written under ``cap`` (FEED's owner is ``w.key``)."""
    return FEED, Event.create(Keypair.generate(), FEED, "doc.update",
                              {"update": b64(update_for("capped")), "cap": cap.to_wire()})


CATALOGUE = [
    case("not-json", lambda w: (FEED, b"{not json"), 400, "malformed", "not valid JSON"),
    case("float", lambda w: (FEED, b'{"feed":"doc/bad","x":1.5}'), 400, "malformed", "floats"),
    case("duplicate-key", lambda w: (FEED, b'{"feed":"doc/bad","feed":"doc/x"}'), 400, "malformed", "duplicate"),
    case("not-utf8", lambda w: (FEED, b"\xff\xfe\x00garbage"), 400, "malformed", "UTF-8"),
    case("empty-body", lambda w: (FEED, b""), 400, "malformed", "not valid JSON"),
    case("deep-nesting", lambda w: (FEED, b"[" * 20_000 + b"]" * 20_000), 400, "malformed"),
    case("not-an-object", lambda w: (FEED, b"[1,2,3]"), 400, "invalid", "object"),
    case("missing-members", lambda w: (FEED, {"feed": FEED}), 400, "invalid", "fields"),
    case("bad-feed-in-event", lambda w: (FEED, {**doc_event(w.key, "x").to_wire(), "feed": "Doc/x"}), 400, "invalid"),
    case("wrong-signature", lambda w: (FEED, _resign_wrong(doc_event(w.key, "forged"))), 400, "bad_signature"),
    case("someone-elses-key", _impersonation, 400, "bad_signature"),
    case("mismatched-id", _bad_id, 400, "bad_signature", "id"),
    case("tampered-body", _tampered, 400, "bad_signature"),
    case("path-feed-differs", lambda w: ("doc/other", doc_event(w.key, "elsewhere")), 400, "invalid", "path"),
    case("path-feed-invalid", lambda w: ("Doc/x", doc_event(w.key, "elsewhere")), 400, "invalid", "path"),
    case("body-over-max-frame-bytes", lambda w: (FEED, json.dumps({"pad": "x" * (70 << 10)}).encode()),
         413, "too_large", "max_frame_bytes"),
    case("event-over-max-event-bytes", lambda w: (FEED, Event.create(w.key, FEED, "doc.update", {
        "update": b64(update_for("y" * (20 << 10)))})), 413, "too_large", "limit"),
    case("undecodable-yjs-update", lambda w: (FEED, Event.create(w.key, FEED, "doc.update", {
        "update": b64(b"\x01\x02garbage")})), 400, "invalid"),
    case("truncated-yjs-update", lambda w: (FEED, Event.create(w.key, FEED, "doc.update", {
        "update": b64(update_for("truncated")[:-3])})), 400, "invalid"),
    case("doc-body-shape", lambda w: (FEED, Event.create(w.key, FEED, "doc.update", {"update": "not base64!"})),
         400, "invalid"),
    case("doc-body-not-object", lambda w: (FEED, Event.create(w.key, FEED, "doc.update", "plain string")),
         400, "invalid"),
    case("wrong-kind-on-doc-feed", lambda w: (FEED, Event.create(w.key, FEED, "chat.say", {"text": "hi"})),
         400, "invalid"),
    case("policy-after-seq-1", lambda w: (FEED, Event.create(w.key, FEED, "feed.policy", {"policy": "open"})),
         400, "invalid"),
    case("acl-by-non-owner", lambda w: (FEED, Event.create(Keypair.generate(), FEED, "acl.grant",
                                                           {"key": w.key.public_hex, "read": True})),
         403, "unauthorized"),
    case("relay-owned-feed", lambda w: ("ledger/mine", Event.create(w.key, "ledger/mine", "feed.policy",
                                                                     {"policy": "open"})), 403, "unauthorized"),
    case("expired-capability", lambda w: _with_cap(w, Capability.issue(w.key, FEED, write=True, ttl_ms=1000,
                                                                         now=now_ms() - 60_000)),
         403, "unauthorized", "expired"),
    case("read-only-capability", lambda w: _with_cap(w, Capability.issue(w.key, FEED)), 403, "unauthorized"),
    case("capability-of-a-stranger", lambda w: _with_cap(w, Capability.issue(Keypair.generate(), FEED, write=True)),
         403, "unauthorized", "owner"),
    case("bogus-capability", lambda w: (FEED, Event.create(w.key, FEED, "doc.update",
                                                           {"update": b64(update_for("c")), "cap": "nope"})),
         400, "invalid"),
    case("task-opened-twice", lambda w: ("task/t1", Event.create(w.key, "task/t1", "task.open", {"title": "again"})),
         409, "conflict", "already open"),
]


async def test_every_bad_input_gets_its_code_and_status_and_stores_nothing(world: World) -> None:
    """The relay holds a members doc (FEED, owned by ``world.key``, one edit) and an open task;
    each bad request of the catalogue is refused with its code and status, and no feed changes.
    (One relay for the whole catalogue: the cases do not depend on each other.)"""
    w = world
    assert (await publish(w.good, Event.create(w.key, FEED, "feed.policy", {"policy": "members"})))["t"] == "ok"
    assert (await post(w.relay, FEED, doc_event(w.key, "base"))).status_code == 200
    task = Event.create(w.key, "task/t1", "task.open", {"title": "t"})
    assert (await post(w.relay, "task/t1", task)).status_code == 200
    before = {f: await _log(w.relay, f) for f in (FEED, "doc/other", "task/t1", "ledger/mine", "Doc/x")}
    for name, make, status, code, why in CATALOGUE:
        feed, body = make(w)
        resp = await post(w.relay, feed, body)
        try:
            err = refused(resp, status, code, why)
        except AssertionError as exc:
            raise AssertionError(f"case {name}: {exc}") from exc
        if isinstance(body, Event):  # the error names the event (docs/protocol.md 13.3)
            assert err.get("id") == body.id and err.get("feed") in (None, body.feed), (name, err)
        assert {f: await _log(w.relay, f) for f in before} == before, name
    # the relay goes on serving: an honest publish over HTTP still lands
    ok = await post(w.relay, FEED, doc_event(w.key, "still fine"))
    assert ok.status_code == 200 and ok.json()["seq"] == len(before[FEED]) + 1


async def _log(relay: Running, feed: str) -> list[str]:
    """The ids stored in ``feed`` (read from the relay process: members feeds are private)."""
    rows = await relay.relay.storage.read(feed, 0, 1000)
    return [json.loads(r.data)["event"]["id"] for r in rows]


@pytest.fixture
async def sqlite_relay(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory of relays on SQLite only, for what does not depend on the backend."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(name: str, limits: Limits | None = None, **kw: Any) -> Running:
            return await stack.enter_async_context(serving(make_config(tmp_path / name, limits=limits, **kw)))
        yield start


async def test_a_body_over_the_limit_is_refused_before_it_is_read(sqlite_relay: Any) -> None:
    """A Content-Length over ``max_frame_bytes`` is refused at once; a chunked body (no length)
    is counted as it streams and refused once it passes the limit."""
    relay: Running = await sqlite_relay("big", LIMITS)
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{relay.url}/feeds/{FEED}/events"
        resp = await http.post(url, content=b"{" + b" " * (LIMITS.max_frame_bytes + 10) + b"}")
        refused(resp, 413, "too_large", "max_frame_bytes")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * (16 << 10)

        resp = await http.post(url, content=chunks())
        refused(resp, 413, "too_large", "max_frame_bytes")
        # just within the limit: read and judged as an event
        resp = await http.post(url, content=b"{" + b" " * (LIMITS.max_frame_bytes - 2) + b"}")
        refused(resp, 400, "invalid")
    assert await records(relay) == []


async def test_statuses_of_unauthorized_and_rate_limited_publishes(sqlite_relay: Any) -> None:
    """Per IP before the signature check (429 with Retry-After), per key after; the members
    feed refuses an outsider with 403; a second feed over ``max_feeds_per_key`` is 403."""
    relay: Running = await sqlite_relay("lim", Limits(events_per_sec_ip=0.001, burst_ip=6,
                                                            events_per_sec_key=0.001, burst_key=3,
                                                            max_feeds_per_key=1))
    bogus = {"feed": "misc/x", "kind": "note", "author": "00" * 32, "ts": 0, "ctx": 0, "body": {},
             "sig": "00" * 64, "id": "00" * 32}
    author = Keypair.generate()
    assert (await post(relay, "misc/a", Event.create(author, "misc/a", "note", {"n": 0}))).status_code == 200
    refused(await post(relay, "misc/b", Event.create(author, "misc/b", "note", {})), 403, "limit_exceeded")
    ok = await post(relay, "misc/a", Event.create(author, "misc/a", "note", {"n": 1}))
    assert ok.status_code == 200 and ok.json()["seq"] == 2
    # the author's bucket (3) is spent: misc/a n=0, misc/b (refused by the quota, after the key
    # check), n=1; the next new event of this key is refused
    refused(await post(relay, "misc/a", Event.create(author, "misc/a", "note", {"n": 2})), 429, "rate_limited", "key")
    # the address's bucket (6) had 4 taken: two bogus events get their signature checked, then 429
    codes = [(await post(relay, "misc/x", bogus)).json()["error"] for _ in range(3)]
    assert codes == ["bad_signature", "bad_signature", "rate_limited"]
    resp = await post(relay, "misc/x", bogus)
    refused(resp, 429, "rate_limited", "address")
    assert [json.loads(r.data)["event"]["body"]["n"] for r in await relay.relay.storage.read("misc/a", 0, 10)] == [0, 1]


async def test_replays_over_http_never_spend_the_authors_budget(start_relay: Any) -> None:
    """issue 13 item 4 over HTTP: replaying an author's stored events costs the replayer's
    address, not the author's key (a duplicate answers 200 with ``dup`` and the same seq)."""
    relay: Running = await start_relay("replay", limits=Limits(events_per_sec_key=0.001, burst_key=3))
    author = Keypair.generate()
    raw = await Raw.connect(relay.ws_url, author)
    events = [Event.create(author, "misc/r", "note", {"n": n}) for n in range(2)]
    for ev in events:
        assert (await publish(raw, ev))["t"] == "ok"
    for _ in range(10):  # someone replays them over HTTP
        for seq, ev in enumerate(events, 1):
            assert (await post(relay, "misc/r", ev)).json() == {"id": ev.id, "seq": seq, "dup": True}
    third = Event.create(author, "misc/r", "note", {"n": 2})
    assert (await post(relay, "misc/r", third)).json() == {"id": third.id, "seq": 3, "dup": False}
    refused(await post(relay, "misc/r", Event.create(author, "misc/r", "note", {"n": 3})), 429, "rate_limited")
    await raw.close()


async def test_busy_and_shutting_down_are_503_with_retry_after(sqlite_relay: Any) -> None:
    relay: Running = await sqlite_relay("busy", Limits(max_loaded_feeds=1))
    key = Keypair.generate()
    sub = await Raw.connect(relay.ws_url, key)
    await sub.send({"t": "sub", "feed": "misc/held", "since": 0})
    await sub.wait(lambda f: f["t"] == "synced")  # misc/held is loaded and not idle
    err = refused(await post(relay, "misc/other", Event.create(key, "misc/other", "note", {})), 503, "busy")
    assert err["message"] == "the relay holds as many feeds as it may and none is idle; retry later"
    await sub.close()
    await relay.relay.drain(timeout=2)
    ev = Event.create(key, "misc/held", "note", {})
    refused(await post(relay, "misc/held", ev), 503, "unavailable")
    assert await relay.relay.storage.read("misc/held", 0, 10) == []
    assert await relay.relay.storage.read("misc/other", 0, 10) == []


async def test_members_feed_over_http(sqlite_relay: Any) -> None:
    """The access policy applies unchanged: an outsider is refused, a granted writer gets in
    (its signature is its authentication), a write capability lets a stranger write."""
    relay: Running = await sqlite_relay("members")
    owner, friend, outsider = Keypair.generate(), Keypair.generate(), Keypair.generate()
    feed = "doc/secret"
    assert (await post(relay, feed, Event.create(owner, feed, "feed.policy", {"policy": "members"}))).json()["seq"] == 1
    refused(await post(relay, feed, doc_event(outsider, "let me in", feed)), 403, "unauthorized", "writer")
    grant = {"key": friend.public_hex, "read": True, "write": True}
    assert (await post(relay, feed, Event.create(owner, feed, "acl.grant", grant))).json()["seq"] == 2
    assert (await post(relay, feed, doc_event(friend, "friend edit", feed))).json()["seq"] == 3
    cap = Capability.issue(owner, feed, write=True)
    capped = Event.create(outsider, feed, "doc.update", {"update": b64(update_for("capped")), "cap": cap.to_wire()})
    assert (await post(relay, feed, capped)).json()["seq"] == 4
    assert len(await relay.relay.storage.read(feed, 0, 10)) == 4


async def test_a_body_that_does_not_arrive_in_time_is_malformed(sqlite_relay: Any) -> None:
    """A publish whose body stalls after its headers is answered ``malformed`` once
    ``header_timeout`` has passed (a slow body holds nothing for longer)."""
    relay: Running = await sqlite_relay("slow", Limits(header_timeout=0.5))
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    writer.write(f"POST /feeds/{FEED}/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{\"feed\":".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)  # the answer comes without more bytes from us
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert json.loads(body)["error"] == "malformed" and "did not arrive" in json.loads(body)["message"]
    writer.close()
    assert await records(relay) == []


async def test_gated_kinds_pass_the_coordinators_ledger_gate(sqlite_relay: Any) -> None:
    """A bid over HTTP locks its stake in the ledger first (the coordinator's gate, as over
    ``/ws``): an unfunded bidder gets 409 ``insufficient_funds`` and nothing is stored."""
    op, requester, rich, poor = (Keypair.generate() for _ in range(4))
    relay: Running = await sqlite_relay("gate", operators=(op.public_hex,))
    async with Client(relay.url, op) as operator:
        await grant(operator, rich.public_hex, 50)
    feed = "auction/over-http"
    opening = Event.create(requester, feed, "auction.open", {
        "task": "t", "bid_deadline": now_ms() + 600_000, "result_window": 60_000, "min_stake": 1, "reward": 0,
        "standby": 1, "scoring": "stake_trust", "ledger": "ledger/main", "trust": "vouch/global"})
    assert (await post(relay, feed, opening)).json()["seq"] == 1
    refused(await post(relay, feed, Event.create(poor, feed, "auction.bid", {"stake": 5})), 409, "insufficient_funds")
    bid = Event.create(rich, feed, "auction.bid", {"stake": 30})
    assert (await post(relay, feed, bid)).json() == {"id": bid.id, "seq": 2, "dup": False}
    refused(await post(relay, feed, Event.create(rich, feed, "auction.bid", {"stake": 31})), 409, "conflict")
    assert (await balances(relay.url))[rich.public_hex] == {"available": 20, "locked": 30}
    assert len(await relay.relay.storage.read(feed, 0, 10)) == 2


async def test_a_waiting_publish_holds_one_of_its_addresss_connection_slots(sqlite_relay: Any) -> None:
    """An HTTP publish counts against ``max_connections_per_ip`` with the address's WebSockets
    while it waits for its answer: an address cannot pile up unanswered publishes without bound."""
    relay: Running = await sqlite_relay("slots", Limits(max_connections_per_ip=1))
    author = Keypair.generate()
    raw = await Raw.connect(relay.ws_url, author)  # the address's one slot
    body = refused(await post(relay, "misc/s", Event.create(author, "misc/s", "note", {"n": 0})), 429,
                   "too_many_connections")
    assert "1 connections per address" in body["message"]
    await raw.close()
    await eventually(lambda: not relay.relay.per_ip, 10, "the relay to count the WebSocket's end")
    ok = Event.create(author, "misc/s", "note", {"n": 1})
    resp = await post(relay, "misc/s", ok)
    assert resp.json() == {"id": ok.id, "seq": 1, "dup": False}
    assert relay.relay.per_ip == {}  # the publish gave its slot back
