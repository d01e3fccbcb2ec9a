"""Rules of docs/protocol.md that the first implementation got wrong (regression tests).

Each test names the section of the spec it checks. Most run against a real relay on a free
port with a bare WebSocket client, so they see exactly the frames a foreign client would.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from collab import frames
from collab.canonical import parse_json
from collab.errors import ColonyError
from collab.events import (
    Event,
    Record,
    Snapshot,
    b64,
    check_feed,
    event_signing_bytes,
    hello_bytes,
    unb64,
)
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running

OWNER = Keypair.from_seed(b"o" * 32)
BOB = Keypair.from_seed(b"b" * 32)


class Client:
    """A bare client: every received frame is appended to ``frames`` in order."""

    def __init__(self, ws: ClientConnection, challenge: dict[str, Any]) -> None:
        self.ws, self.challenge = ws, challenge
        self.frames: list[dict[str, Any]] = []
        self._seen = 0

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else frames.encode(frame))

    async def next_match(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """The next not-yet-consumed frame matching ``pred`` (frames before it are consumed too)."""
        async def run() -> dict[str, Any]:
            while True:
                while self._seen < len(self.frames):
                    f = self.frames[self._seen]
                    self._seen += 1
                    if pred(f):
                        return f
                msg = await self.ws.recv()
                assert isinstance(msg, str)
                self.frames.extend(parse_json(p) for p in msg.split("\n"))

        return await asyncio.wait_for(run(), timeout)

    async def reply(self, frame: dict[str, Any] | str, rid: Any) -> dict[str, Any]:
        await self.send(frame)
        return await self.next_match(lambda f: f.get("rid") == rid)

    async def barrier(self) -> list[dict[str, Any]]:
        """Ping and wait for the pong; return the frames that arrived before it."""
        start = self._seen
        await self.send({"t": "ping", "rid": "barrier"})
        await self.next_match(lambda f: f == {"t": "pong", "rid": "barrier"})
        return self.frames[start:self._seen - 1]

    async def hello(self, key: Keypair) -> None:
        sig = key.sign(hello_bytes(key.public_hex, self.challenge["nonce"], self.challenge["relay"])).hex()
        assert (await self.reply({"t": "hello", "key": key.public_hex, "sig": sig, "rid": "h"}, "h"))["t"] == "welcome"


@contextlib.asynccontextmanager
async def client(relay: Running, key: Keypair | None = None) -> AsyncIterator[Client]:
    async with connect(relay.ws_url, max_size=None) as ws:
        c = Client(ws, json.loads(await ws.recv()))
        if key is not None:
            await c.hello(key)
        yield c


async def publish(c: Client, ev: Event, rid: str) -> dict[str, Any]:
    return await c.reply({"t": "pub", "event": ev.to_wire(), "rid": rid}, rid)


# -- section 12: access ----------------------------------------------------------------------------

async def test_anonymous_policy_event_with_a_non_object_body_is_auth_required(relay: Running) -> None:
    """It used to crash the sequencer and fail the whole batch with ``unavailable``."""
    async with client(relay) as anon:
        ev = Event.create(OWNER, "misc/p", "feed.policy", "open", ts=1)
        assert (await publish(anon, ev, "p"))["code"] == "auth_required"
        ok = Event.create(OWNER, "misc/p", "feed.policy", {"policy": "open"}, ts=2)
        assert (await publish(anon, ok, "q"))["t"] == "ok"


async def _members_feed(owner: Client, feed: str) -> None:
    for i, (kind, body) in enumerate([("feed.policy", {"policy": "members"}),
                                      ("acl.grant", {"key": BOB.public_hex})]):
        assert (await publish(owner, Event.create(OWNER, feed, kind, body, ts=i), f"m{i}"))["t"] == "ok"


@pytest.mark.parametrize(("kind", "body"), [("acl.revoke", {"key": BOB.public_hex}),
                                       ("acl.grant", {"key": BOB.public_hex, "read": False, "write": True})])
async def test_losing_read_access_ends_the_subscription_and_it_can_be_renewed(
        relay: Running, kind: str, body: dict[str, Any]) -> None:
    feed = "tasks/board"
    async with client(relay, OWNER) as owner, client(relay, BOB) as bob:
        await _members_feed(owner, feed)
        await bob.send({"t": "sub", "feed": feed, "since": 0})
        assert (await bob.next_match(lambda f: f["t"] == "synced"))["seq"] == 2
        assert (await publish(owner, Event.create(OWNER, feed, kind, body, ts=3), "cut"))["t"] == "ok"
        assert await bob.next_match(lambda f: f["t"] == "unsubbed") == {
            "t": "unsubbed", "feed": feed, "reason": "unauthorized"}
        err = await bob.reply({"t": "sub", "feed": feed, "since": 3, "rid": "again"}, "again")
        assert err["code"] == "unauthorized"
        grant = Event.create(OWNER, feed, "acl.grant", {"key": BOB.public_hex}, ts=4)
        assert (await publish(owner, grant, "back"))["t"] == "ok"
        await bob.send({"t": "sub", "feed": feed, "since": 3, "rid": "s"})
        rec = await bob.next_match(lambda f: f["t"] in ("rec", "error"))
        assert rec["t"] == "rec" and rec["rec"]["seq"] == 4


# -- section 10: presence --------------------------------------------------------------------------

async def test_hello_after_sub_does_not_invent_a_presence_leave(relay: Running) -> None:
    feed = "chat/room"
    async with client(relay, BOB) as watcher, client(relay) as late:
        await watcher.send({"t": "sub", "feed": feed, "since": 0})
        await watcher.next_match(lambda f: f["t"] == "presence" and f["op"] == "list")
        await late.send({"t": "sub", "feed": feed, "since": 0})
        await late.next_match(lambda f: f["t"] == "synced")
        await late.hello(OWNER)  # authenticates after subscribing anonymously
        assert (await late.reply({"t": "unsub", "feed": feed, "rid": "u"}, "u"))["t"] == "unsubbed"
        seen = await watcher.barrier()
        assert [f for f in seen if f["t"] == "presence"] == []


# -- section 8.4 and 13: replies never break the connection ---------------------------------------

async def test_lone_surrogates_in_echoed_fields_get_replies(relay: Running) -> None:
    async with client(relay) as c:
        await c.send(r'{"t":"ping","rid":"\ud800"}')
        assert (await c.next_match(lambda f: f["t"] == "error"))["code"] == "malformed"
        await c.send(r'{"t":"sub","feed":"doc/\ud800","since":0}')
        err = await c.next_match(lambda f: f["t"] == "error")
        assert err["code"] == "invalid" and "feed" not in err
        await c.send(r'{"t":"pub","event":{"id":"\udc00"}}')
        err = await c.next_match(lambda f: f["t"] == "error")
        assert err["code"] == "invalid" and "id" not in err
        assert await c.barrier() == []


async def test_too_large_counts_utf8_bytes(start_relay: Callable[..., Any]) -> None:
    relay: Running = await start_relay(limits=Limits(max_frame_bytes=1000))
    async with client(relay) as c:
        text = '{"t":"ping","rid":1,"pad":"' + "\u00e9" * 600 + '"}'  # 630 characters, 1230 bytes
        assert len(text) < 1000 < len(text.encode())
        await c.send(text)
        err = await c.next_match(lambda f: f["t"] == "error")
        assert err["code"] == "too_large" and "rid" not in err
        await c.send('{"t":"ping","rid":2,"pad":"' + "\u00e9" * 400 + '"}')  # 830 bytes: fine
        assert await c.next_match(lambda f: f["t"] == "pong") == {"t": "pong", "rid": 2}


async def test_only_json_whitespace_lines_are_skipped(relay: Running) -> None:
    async with client(relay) as c:
        await c.send('{"t":"ping","rid":1}\n\u00a0\n{"t":"ping","rid":2}')
        got = [await c.next_match(lambda f: True) for _ in range(3)]
        assert [f["t"] for f in got] == ["pong", "error", "pong"] and got[1]["code"] == "malformed"


# -- section 15: HTTP ------------------------------------------------------------------------------

async def test_http_feed_routes_are_unambiguous(relay: Running) -> None:
    async with client(relay, OWNER) as c:
        ev = Event.create(OWNER, "doc2/a", "x", None, ts=1)
        assert (await publish(c, ev, "p"))["t"] == "ok"
    async with httpx.AsyncClient(base_url=relay.url) as http:
        r = await http.get("/feeds/doc2/a/events")
        assert r.status_code == 200 and r.json()["seq"] == 1
        assert (await http.get("/feeds/doc2/a/events/events")).status_code == 400  # feed "doc2/a/events"
        assert (await http.get("/feeds/doc2/a/state/state")).status_code == 400  # feed "doc2/a/state"
        assert (await http.get("/feeds/doc2/a/state")).json()["at"] == 1
        assert (await http.get("/feeds/doc2/a")).json()["seq"] == 1
        for bad in ("1_0", "+1", " 1", "\u0661", "1.0", ""):
            r = await http.get("/feeds/doc2/a/events", params={"since": bad})
            assert r.status_code == 400 and r.json()["error"] == "invalid", bad
        assert (await http.get("/feeds/doc2/a/events", params={"since": "0"})).status_code == 200


# -- sections 2, 4, 6, 7: strict parsing of signed objects -----------------------------------------

def code_of(fn: Callable[..., Any], *args: Any) -> str:
    try:
        fn(*args)
    except ColonyError as exc:
        return exc.code
    return ""


@pytest.mark.parametrize("feed", ["doc/a\n", "doc/a/events", "doc/a/state", "doc/..", "doc/a/./b"])
def test_feed_rules(feed: str) -> None:
    assert code_of(check_feed, feed) == "invalid"


def test_trailing_newline_in_hex_fields_is_refused() -> None:
    author = OWNER.public_hex + "\n"  # bytes.fromhex() would happily skip the newline
    sb = event_signing_bytes("misc/n", "k", author, 1, 0, None)
    wire = {"feed": "misc/n", "kind": "k", "author": author, "ts": 1, "ctx": 0, "body": None,
            "sig": OWNER.sign(sb).hex(), "id": hashlib.sha256(sb).hexdigest()}
    assert code_of(Event.from_wire, wire) == "invalid"


def test_only_canonical_base64() -> None:
    assert unb64("QQ==") == b"A"
    for bad in ("QR==", "QQ", "QQ==\n", " QQ=="):
        assert code_of(unb64, bad) == "invalid"


def test_record_numbers_out_of_range_are_invalid() -> None:
    relay = Keypair.from_seed(b"r" * 32)
    rec = Record.seal(relay, Event.create(OWNER, "misc/r", "k", None, ts=0), 1, "0" * 64, rtime=5).to_wire()
    for field in ("seq", "rtime"):
        assert code_of(Record.from_wire, dict(rec, **{field: 2**60})) == "invalid"


def test_snapshot_fields_are_typed() -> None:
    relay = Keypair.from_seed(b"r" * 32)
    snap = Snapshot.seal(relay, "doc/s", 3, "ab" * 32, b"state").to_wire()
    assert Snapshot.from_wire(snap).state == b"state"
    for field, value in (("seq", "3"), ("seq", 3.0), ("seq", True), ("head", "AB" * 32),
                         ("relay", relay.public_hex + "\n"),
                         ("state", b64(b"state") + "\n"), ("feed", "doc/events")):
        assert code_of(Snapshot.from_wire, dict(snap, **{field: value})) == "invalid", (field, value)
    assert code_of(Snapshot.from_wire, {**snap, "extra": 1}) == "invalid"
