"""Mirror verification (docs/federation.md, Mirrors and Equivocation) on a real relay.

The relay, its storage (both backends), its hub and a real WebSocket subscriber are real; only
the link to the home is a test double (``FakeLink``: the real link is tested with its own
module), so each test can hand the mirror exactly the records a home, honest or not, would send.
Records are sealed with a "home" relay key, as a home relay seals them. Waiting is always on
real state with a deadline, never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from relay.federation.alarms import ALARM_FEED, Alarms
from relay.federation.mirror import Mirrors
from relay.core.routing import Member, Routing
from relay.core.hub import Hub
from relay.ops.runner import Running
from tests.rawclient import Raw

pytestmark = pytest.mark.timeout(60)

FEED = "notes/mirrored"


class FakeLink:
    """Stands in for ``relay.federation.link.Link``: records calls, lets a test push records."""

    def __init__(self, peer: Member) -> None:
        self.peer = peer
        self.connected = True
        self.on_connect: list[Callable[..., Any]] = []
        self.on_heads: list[Callable[..., Any]] = []
        self.subs: dict[str, tuple[Callable[[], int], Callable[[dict[str, Any]], Any]]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.heads_sent: list[list[dict[str, Any]]] = []
        self.drops: list[str] = []
        self.unsub_gate = asyncio.Event()  # cleared by a test to hold an unsubscribe back
        self.unsub_gate.set()
        self._cond = asyncio.Condition()

    def add_on_connect(self, callback: Callable[..., Any]) -> None:
        self.on_connect.append(callback)

    def add_on_heads(self, callback: Callable[..., Any]) -> None:
        self.on_heads.append(callback)

    def add_on_refused(self, callback: Callable[..., Any]) -> None:
        self.on_refused = callback

    async def _note(self, call: tuple[str, Any]) -> None:
        async with self._cond:
            self.calls.append(call)
            self._cond.notify_all()

    async def subscribe(self, feed: str, since: Callable[[], int], on_record: Callable[[dict[str, Any]], Any]) -> None:
        self.subs[feed] = (since, on_record)
        await self._note(("subscribe", feed))

    async def unsubscribe(self, feed: str) -> None:
        await self.unsub_gate.wait()
        await self._note(("unsubscribe", feed))

    async def drop(self, reason: str) -> None:
        self.drops.append(reason)
        await self._note(("drop", None))

    async def send_heads(self, heads: list[dict[str, Any]]) -> None:
        self.heads_sent.append(heads)
        await self._note(("heads", len(heads)))

    async def push(self, feed: str, record: dict[str, Any]) -> None:
        """Deliver one record as the link would (awaiting what the callback returns)."""
        result = self.subs[feed][1](record)
        if result is not None:
            await result

    def since(self, feed: str) -> int:
        return self.subs[feed][0]()

    async def wait_call(self, call: tuple[str, Any], count: int = 1) -> None:
        async def until() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: self.calls.count(call) >= count)

        await asyncio.wait_for(until(), 10)


class Home:
    """A home relay's sequencer for one feed: seals records with its key."""

    def __init__(self, key: Keypair, feed: str = FEED) -> None:
        self.key, self.feed = key, feed
        self.seq, self.head = 0, GENESIS
        self.author = Keypair.generate()

    def event(self, n: int) -> Event:
        return Event.create(self.author, self.feed, "note", {"n": n})

    def next(self) -> dict[str, Any]:
        rec = Record.seal(self.key, self.event(self.seq + 1), self.seq + 1, self.head)
        self.seq, self.head = rec.seq, rec.hash
        return rec.to_wire()

    def forge(self, seq: int, prev: str, key: Keypair | None = None, n: int = 999) -> dict[str, Any]:
        """A properly signed record that does not extend the chain (a fork, a gap, another relay)."""
        return Record.seal(key or self.key, self.event(n), seq, prev).to_wire()


@dataclass
class Env:
    running: Running
    hub: Hub
    home: Home
    link: FakeLink
    alarms: Alarms
    mirrors: Mirrors

    async def stored(self, feed: str = FEED) -> list[dict[str, Any]]:
        return [json.loads(r.data) for r in await self.hub.storage.read(feed, 0, 1000)]

    async def alarm_events(self) -> list[dict[str, Any]]:
        return [d["event"] for d in await self.stored(ALARM_FEED)]

    async def push_all(self, *records: dict[str, Any]) -> None:
        for r in records:
            await self.link.push(FEED, r)
        await self.mirrors.settled(FEED)


@pytest.fixture
async def env(start_relay: Callable[..., Any]) -> Any:
    running: Running = await start_relay("mirror")
    hub = running.relay.hub
    home_key = Keypair.generate()
    peer = Member(home_key.public_hex, "http://127.0.0.1:9")  # never dialled: the link is fake
    routing = Routing(Member(hub.relay_key.public_hex, running.url), (peer,), (), (("*", peer.key),))
    link = FakeLink(peer)
    alarms = Alarms(hub)
    mirrors = Mirrors(hub, routing, {peer.key: link}, alarms, 3600.0)
    env = Env(running, hub, Home(home_key), link, alarms, mirrors)
    await mirrors.ensure(FEED)
    yield env
    await mirrors.close()


async def test_good_records_are_stored_as_received_and_fanned_out(env: Env) -> None:
    assert env.link.calls == [("subscribe", FEED)] and env.link.since(FEED) == 0
    await env.mirrors.ensure(FEED)  # idempotent
    assert env.link.calls == [("subscribe", FEED)]
    sub = await Raw.connect(env.running.ws_url)
    try:
        await sub.send({"t": "sub", "feed": FEED, "since": 0})
        await sub.wait(lambda f: f["t"] == "synced")
        records = [env.home.next() for _ in range(40)]
        # handed over without waiting for each other: the runtime stores them in batches
        await asyncio.gather(*(env.link.push(FEED, r) for r in records))
        await env.mirrors.settled(FEED)
        assert await env.stored() == records  # the home's seq, prev and receipt, verbatim
        await sub.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 40)
        got = [f["rec"] for f in sub.frames if f["t"] == "rec"]
        assert got == records and all(r["relay"] == env.home.key.public_hex for r in got)
    finally:
        await sub.close()
    assert env.link.since(FEED) == 40
    rt = env.hub.feeds[FEED]
    assert (rt.seq, rt.head) == (40, env.home.head)
    assert env.alarms.count == 0 and await env.alarm_events() == []


async def test_a_duplicate_is_skipped_silently(env: Env) -> None:
    first, second = env.home.next(), env.home.next()
    await env.push_all(first, second, first, second)  # resent after a reconnect
    assert await env.stored() == [first, second]
    assert env.alarms.count == 0 and ("unsubscribe", FEED) not in env.link.calls and not env.link.drops


def _flip(hexstr: str) -> str:
    return ("1" if hexstr[0] != "1" else "2") + hexstr[1:]


def bad_author_sig(home: Home) -> dict[str, Any]:
    d = home.forge(2, home.head)
    d["event"]["sig"] = _flip(d["event"]["sig"])
    return d


def bad_receipt_sig(home: Home) -> dict[str, Any]:
    d = home.forge(2, home.head)
    d["rsig"] = _flip(d["rsig"])
    return d


def other_relay(home: Home) -> dict[str, Any]:
    return home.forge(2, home.head, key=Keypair.generate())  # valid, but not the home's receipt


def gap(home: Home) -> dict[str, Any]:
    return home.forge(3, "ab" * 32)


def fork(home: Home) -> dict[str, Any]:
    return home.forge(2, "cd" * 32)  # the home's signature, but #1 was another record


def wrong_feed(home: Home) -> dict[str, Any]:
    return Record.seal(home.key, Event.create(home.author, "notes/other", "note", {}), 2, home.head).to_wire()


@pytest.mark.parametrize(("make", "kind", "with_ours", "why"), [
    (bad_author_sig, "invalid", False, "signature does not verify for author"),
    (bad_receipt_sig, "invalid", False, "receipt signature does not verify"),
    (other_relay, "invalid", False, "not by the home"),
    (wrong_feed, "invalid", False, "record of notes/other"),
    (gap, "gap", False, "#3 after our head #1"),
    (fork, "equivocation", True, "does not link to our record #1"),
])
async def test_a_bad_record_is_refused_with_an_alarm(env: Env, make: Callable[[Home], dict[str, Any]],
                                                     kind: str, with_ours: bool, why: str) -> None:
    good = env.home.next()
    await env.push_all(good)
    bad = make(env.home)
    follower = env.home.next()  # queued behind the bad one on the same subscription: dropped too
    await env.link.push(FEED, bad)
    await env.link.push(FEED, follower)
    await env.mirrors.settled(FEED)

    assert await env.stored() == [good]  # nothing stored
    assert env.alarms.count == 1
    [alarm] = await env.alarm_events()
    assert alarm["kind"] == "alarm." + kind and alarm["author"] == env.hub.relay_key.public_hex
    body = alarm["body"]
    assert (body["feed"], body["peer"], body["theirs"]) == (FEED, env.home.key.public_hex, bad)
    assert body["ours"] == (good if with_ours else None)
    assert why in body["reason"]
    await env.link.wait_call(("unsubscribe", FEED))  # that feed's subscription ends; the link goes on
    assert env.link.drops == []
    assert env.mirrors.feeds[FEED].retry_at > 0  # the sync tick waits before subscribing again

    # subscribed again (here by hand; the sync tick or on_connect does it) from the stored head
    env.home.seq, env.home.head = 1, Record.from_wire(good).hash
    await env.mirrors.ensure(FEED)
    assert env.link.calls.count(("subscribe", FEED)) == 2 and env.link.since(FEED) == 1
    nxt = env.home.next()
    await env.push_all(nxt)
    assert await env.stored() == [good, nxt]


async def test_subscribing_again_at_once_is_not_undone_by_the_refusal(env: Env) -> None:
    good = env.home.next()
    await env.push_all(good)
    env.link.unsub_gate.clear()
    await env.push_all(gap(env.home))  # refused; its unsub is still on the way
    again = asyncio.ensure_future(env.mirrors.ensure(FEED))  # e.g. the link's on_connect
    for _ in range(20):  # let it run as far as it can (no time passes)
        await asyncio.sleep(0)
    env.link.unsub_gate.set()
    await again
    calls = [c for c in env.link.calls if c[0] in ("subscribe", "unsubscribe")]
    assert calls == [("subscribe", FEED), ("unsubscribe", FEED), ("subscribe", FEED)]
    assert env.mirrors.feeds[FEED].active and env.link.since(FEED) == 1


async def test_another_record_at_a_stored_seq_is_equivocation(env: Env) -> None:
    r1, r2 = env.home.next(), env.home.next()
    await env.push_all(r1, r2)
    other = env.home.forge(2, Record.from_wire(r1).hash, n=7)  # the home signed a second #2
    await env.push_all(other)
    assert await env.stored() == [r1, r2]
    [alarm] = await env.alarm_events()
    assert alarm["kind"] == "alarm.equivocation"
    assert (alarm["body"]["seq"], alarm["body"]["ours"], alarm["body"]["theirs"]) == (2, r2, other)
    assert env.alarms.count == 1


async def test_heads_that_differ_from_a_stored_record_raise_equivocation(env: Env) -> None:
    r1, r2 = env.home.next(), env.home.next()
    await env.push_all(r1, r2)
    peer = env.home.key.public_hex
    same = {"feed": FEED, "seq": 2, "hash": env.home.head}
    ahead = {"feed": FEED, "seq": 9, "hash": "ef" * 32}  # the subscription will catch up
    unknown = {"feed": "notes/never-seen", "seq": 3, "hash": "ef" * 32}
    await env.mirrors.on_heads(peer, [same, ahead, unknown, {"junk": 1}, "junk"])
    assert env.alarms.count == 0 and await env.alarm_events() == []

    forked = {"feed": FEED, "seq": 1, "hash": "12" * 32}
    await env.mirrors.on_heads(peer, [forked])
    assert env.alarms.count == 1
    [alarm] = await env.alarm_events()
    assert alarm["kind"] == "alarm.equivocation"
    assert alarm["body"] == {"feed": FEED, "seq": 1, "ours": r1, "theirs": forked, "peer": peer,
                             "reason": alarm["body"]["reason"]}
    await env.link.wait_call(("unsubscribe", FEED))  # that feed is refused; the link goes on
    assert env.link.drops == []


async def test_a_repeated_alarm_is_counted_but_published_once(env: Env) -> None:
    await env.push_all(env.home.next())
    head = {"feed": FEED, "seq": 1, "hash": "12" * 32}
    peer = env.home.key.public_hex
    await env.mirrors.on_heads(peer, [head])
    await env.mirrors.on_heads(peer, [head])
    assert env.alarms.count == 2 and len(await env.alarm_events()) == 1


async def test_relay_feeds_are_always_local() -> None:
    a, b = Keypair.generate().public_hex, Keypair.generate().public_hex
    routing = Routing(Member(a, "http://a"), (Member(b, "http://b"),), (), (("*", b),))
    assert routing.home(ALARM_FEED).key == a and routing.home("notes/x").key == b


async def test_discovery_heads_and_reconnect(start_relay: Callable[..., Any]) -> None:
    """Two real relays: B homes ``gen/`` (a replicated prefix) and A mirrors what it lists."""
    a, b = await start_relay("a"), await start_relay("b")
    ha, hb = a.relay.hub, b.relay.hub
    author = Keypair.generate()
    for n in range(3):
        await hb.runtime_publish(Event.create(author, "gen/shared", "note", {"n": n}), author.public_hex)
    await ha.runtime_publish(Event.create(author, "notes/local", "note", {}), author.public_hex)
    me, peer = Member(ha.relay_key.public_hex, a.url), Member(hb.relay_key.public_hex, b.url)
    routing = Routing(me, (peer,), ("gen/",), (("gen/*", peer.key), ("*", me.key)))
    link = FakeLink(peer)
    mirrors = Mirrors(ha, routing, {peer.key: link}, Alarms(ha), 3600.0)
    await mirrors.start()
    try:
        await link.wait_call(("subscribe", "gen/shared"))  # found with GET /feeds?prefix=gen/
        await link.wait_call(("heads", 1))
        assert link.heads_sent[0] == [{"feed": "notes/local", "seq": 1, "hash": ha.feeds["notes/local"].head}]
        assert link.on_heads and link.on_connect
        [on_heads] = link.on_heads

        for row in await hb.storage.read("gen/shared", 0, 100):  # what B's /fed would send
            await link.push("gen/shared", json.loads(row.data))
        await mirrors.settled("gen/shared")
        assert [r.data for r in await ha.storage.read("gen/shared", 0, 100)] == \
               [r.data for r in await hb.storage.read("gen/shared", 0, 100)]
        assert {h["feed"] for h in mirrors.heads_for(peer.key)} == {"notes/local", "gen/shared"}

        await on_heads([{"feed": "gen/shared", "seq": 2, "hash": "00" * 32}])  # B forked #2
        await link.wait_call(("unsubscribe", "gen/shared"))
        for cb in link.on_connect:  # the link came back: mirrored feeds are subscribed again
            cb()
        await link.wait_call(("subscribe", "gen/shared"), 2)
        assert link.since("gen/shared") == 3
    finally:
        await mirrors.close()


async def _until(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll real state until ``pred()`` holds, with a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_mirror_job_checks_what_it_stores(start_relay: Callable[..., Any], backend: Any) -> None:
    """``FeedRuntime.mirror``: stores a chain verbatim, answers a stored record as done, refuses
    a different one or a gap with MirrorConflict; on Redis, two processes of one site mirroring
    the same feed store each record once, and a different record at a seq the other process
    stored is an equivocation alarm."""
    from relay.core.mirrorstore import MirrorConflict

    p1 = await start_relay("p1", site="s")
    hub1 = p1.relay.hub
    home = Home(Keypair.generate())
    r1, r2 = home.next(), home.next()
    rt1 = await hub1.runtime(FEED)
    recs = [(Record.from_wire(r), json.dumps(r, separators=(",", ":"))) for r in (r1, r2)]
    await asyncio.gather(*(rt1.mirror(rec, line) for rec, line in recs))
    assert [json.loads(r.data) for r in await hub1.storage.read(FEED, 0, 10)] == [r1, r2]
    await rt1.mirror(*recs[0])  # stored already: the same record
    other = Record.from_wire(home.forge(2, recs[0][0].hash))
    with pytest.raises(MirrorConflict) as conflict:
        await rt1.mirror(other, json.dumps(other.to_wire()))
    assert json.loads(conflict.value.stored or "") == r2
    gap_rec = Record.from_wire(home.forge(5, home.head))
    with pytest.raises(MirrorConflict):
        await rt1.mirror(gap_rec, json.dumps(gap_rec.to_wire()))
    assert rt1.seq == 2

    if backend.name != "redis":
        return
    p2 = await start_relay("p2", site="s")  # the same site: the same Redis keys
    hub2 = p2.relay.hub
    peer = Member(home.key.public_hex, "http://127.0.0.1:9")
    link = FakeLink(peer)
    routing = Routing(Member(hub2.relay_key.public_hex, p2.url), (peer,), (), (("*", peer.key),))
    alarms = Alarms(hub2)
    mirrors = Mirrors(hub2, routing, {peer.key: link}, alarms, 3600.0)
    try:
        await mirrors.ensure(FEED)
        await link.push(FEED, r1)  # p1 stored these: p2 finds them stored, the same
        await link.push(FEED, r2)
        await mirrors.settled(FEED)
        r3 = home.next()
        forked3 = home.forge(3, Record.from_wire(r2).hash, n=33)
        await rt1.mirror(Record.from_wire(forked3), json.dumps(forked3))  # p1 got another #3
        await link.push(FEED, r3)
        await mirrors.settled(FEED)

        async def alarmed() -> bool:
            return alarms.count == 1 and len(await hub2.storage.read(ALARM_FEED, 0, 10)) == 1

        await _until(alarmed)
        [row] = await hub2.storage.read(ALARM_FEED, 0, 10)
        body = json.loads(row.data)["event"]["body"]
        assert (body["seq"], body["ours"], body["theirs"]) == (3, forked3, r3)
        assert [json.loads(r.data) for r in await hub2.storage.read(FEED, 0, 10)] == [r1, r2, forked3]
        await link.wait_call(("unsubscribe", FEED))  # that feed is refused; the link goes on
        assert link.drops == []
    finally:
        await mirrors.close()


async def test_access_changes_bind_on_a_mirror(fed: Any) -> None:
    """A real two-relay federation (``fed``: B homes ``note/*``): readers on the mirror A. A
    stranger subscribed before the feed existed, and a reader revoked in the same message as a
    later record, get nothing from the change on (docs/protocol.md section 12)."""
    from tests.relay.federation.test_link import DEADLINE
    from tests.relay.test_access_binds import (OWNER, READER, STRANGER, dropped, grant, members, msg,
                                               publish_at_once, revoke, seqs, subscribe)

    ra, rb = await fed.start("a"), await fed.start("b")
    await ra.relay.federation.links[fed.sites["b"].hex].wait_connected(DEADLINE)
    early, revoked = "note/early", "note/revoked"
    owner = await Raw.connect(rb.ws_url, OWNER)
    stranger = await Raw.connect(ra.ws_url, STRANGER)
    reader = await Raw.connect(ra.ws_url, READER)
    watcher = await Raw.connect(ra.ws_url, OWNER)
    try:
        await subscribe(stranger, early)
        await subscribe(watcher, early)
        assert await publish_at_once(owner, [members(revoked), grant(revoked, READER)], "a") == [1, 2]
        await subscribe(watcher, revoked)  # the mirror has the grant before the reader subscribes
        await watcher.wait(lambda f: f["t"] == "rec" and f["feed"] == revoked and f["rec"]["seq"] == 2)
        await subscribe(reader, revoked)
        assert await publish_at_once(owner, [members(early), msg(early, "secret"), msg(revoked, "old"),
                                             revoke(revoked, READER), msg(revoked, "new")], "b") == [1, 2, 3, 4, 5]
        await dropped(stranger, early)
        await dropped(reader, revoked)
        await watcher.wait(lambda f: f["t"] == "rec" and f["feed"] == early and f["rec"]["seq"] == 2)
        await watcher.wait(lambda f: f["t"] == "rec" and f["feed"] == revoked and f["rec"]["seq"] == 5)
        assert seqs(stranger, early) == [] and seqs(watcher, early) == [1, 2]
        assert seqs(reader, revoked) == [1, 2, 3]
    finally:
        for raw in (owner, stranger, reader, watcher):
            await raw.close()
