"""Watching feed-id prefixes (docs/protocol.md 9.4) on one real relay, both backends: each new
record of a watched feed (a brand-new feed's first included) announced once per connection,
only to watchers that may read it (``members``: re-judged per record; ``dm/``: its two keys),
the frames' errors and bounds, the SDK's watch surviving a reconnect."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.dm import dm_feed, seal_message
from collab.errors import RelayError
from collab.events import Event, Record
from collab.keys import Keypair
from collab.protocol import Announce
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.rawclient import Raw

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}


class Heard:
    """Announcements one callback got, with a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[Announce] = []
        self._cond = asyncio.Condition()

    def __call__(self, ev: Announce) -> None:
        self.items.append(ev)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def until(self, feed: str, seq: int = 1, timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: any(a.feed == feed and a.seq >= seq for a in self.items))
        await asyncio.wait_for(wait(), timeout)

    def of(self, feed: str) -> list[tuple[int, str]]:
        return [(a.seq, a.kind) for a in self.items if a.feed == feed]


@pytest.fixture
async def clients(relay: Running) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:
        async def make(key: Keypair | None = None) -> Client:
            return await stack.enter_async_context(Client(relay.url, key or Keypair.generate(), **FAST))
        yield make


async def test_new_feeds_are_announced_once_per_record(relay: Running, clients: Any) -> None:
    pub = await clients()
    raw = await Raw.connect(relay.ws_url)  # anonymous: sees public feeds
    for i, prefix in enumerate(("note/", "note/a", "note/")):  # overlapping, and one twice (idempotent)
        assert await raw.request({"t": "watch", "prefix": prefix}, f"w{i}") == {
            "t": "watching", "prefix": prefix, "rid": f"w{i}"}
    a1 = await pub.publish("note/a1", "note.say", {"n": 1})
    await pub.publish("other/x", "note.say", {"n": 2})  # not watched
    await pub.publish("note/a1", "note.say", {"n": 3})
    await pub.publish("note/b", "note.say", {"n": 4})
    await raw.wait(lambda f: f["t"] == "announce" and f["feed"] == "note/b")
    got = [f for f in raw.frames if f["t"] == "announce"]
    assert [(f["feed"], f["seq"], f["kind"]) for f in got] == [
        ("note/a1", 1, "note.say"), ("note/a1", 2, "note.say"), ("note/b", 1, "note.say")]
    assert set(got[0]) == {"t", "feed", "seq", "head", "kind", "rtime"}
    assert a1.seq == 1
    async with httpx.AsyncClient() as http:  # head and rtime are the record's hash and receipt time
        stored = (await http.get(f"{relay.url}/feeds/note/a1/events")).json()["records"]
    recs = [Record.from_wire(r) for r in stored]
    assert [(f["head"], f["rtime"]) for f in got[:2]] == [(r.hash, r.rtime) for r in recs]
    # unwatch one prefix: the other still matches note/a1; unwatch both: nothing more
    assert (await raw.request({"t": "unwatch", "prefix": "note/a"}, "u1"))["t"] == "unwatched"
    await pub.publish("note/a1", "note.say", {"n": 6})
    await raw.wait(lambda f: f["t"] == "announce" and f["seq"] == 3)
    assert (await raw.request({"t": "unwatch", "prefix": "note/"}, "u2"))["t"] == "unwatched"
    await pub.publish("note/a1", "note.say", {"n": 7})
    mark = len(raw.frames)
    await raw.request({"t": "ping"}, "p")
    assert not [f for f in raw.frames[mark:] if f["t"] == "announce"]
    await raw.ws.close()


async def test_bad_prefixes_limits_and_errors(tmp_path: Any, backend: Backend) -> None:
    async with serving(make_config(tmp_path / "r", backend, limits=Limits(max_watches=2))) as run:
        raw = await Raw.connect(run.ws_url)
        for bad in ("Doc/", "/x", "a//b", 7, None, "a" * 33, "doc/" + "x" * 201):
            reply = await raw.request({"t": "watch", "prefix": bad}, "b")
            assert (reply["t"], reply["code"]) == ("error", "invalid"), bad
            assert "feed" not in reply
        assert (await raw.request({"t": "unwatch", "prefix": "Doc/"}, "b2"))["code"] == "invalid"
        assert (await raw.request({"t": "watch", "prefix": ""}, "1"))["t"] == "watching"  # everything
        assert (await raw.request({"t": "watch", "prefix": "doc/"}, "2"))["t"] == "watching"
        assert (await raw.request({"t": "watch", "prefix": "doc/"}, "3"))["t"] == "watching"  # idempotent
        over = await raw.request({"t": "watch", "prefix": "task/"}, "4")
        assert (over["t"], over["code"], over["rid"]) == ("error", "limit_exceeded", "4")
        assert (await raw.request({"t": "unwatch", "prefix": "task/"}, "5"))["t"] == "unwatched"  # not watched
        assert (await raw.request({"t": "unwatch", "prefix": "doc/"}, "6"))["t"] == "unwatched"
        assert (await raw.request({"t": "watch", "prefix": "task/"}, "7"))["t"] == "watching"
        await raw.ws.close()
        async with Client(run.url, Keypair.generate(), **FAST) as c:
            await c.watch("a/", print)
            await c.watch("b/", print)
            with pytest.raises(RelayError) as err:
                await c.watch("c/", print)
            assert err.value.code == "limit_exceeded"
            assert sorted(c._watches.handlers) == ["a/", "b/"]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{run.url}/limits")).json()["max_watches"] == 2


async def test_members_feed_is_announced_only_to_its_readers(relay: Running, clients: Any) -> None:
    owner, reader_key = await clients(), Keypair.generate()
    reader, outsider = await clients(reader_key), await clients()
    heard = {"owner": Heard(), "reader": Heard(), "outsider": Heard()}
    for name, c in (("owner", owner), ("reader", reader), ("outsider", outsider)):
        await c.watch("club/", heard[name])
    anon = await Raw.connect(relay.ws_url)
    assert (await anon.request({"t": "watch", "prefix": "club/"}, "w"))["t"] == "watching"
    feed = "club/secret"
    await owner.publish(feed, "feed.policy", {"policy": "members"})                    # 1
    await owner.publish(feed, "club.say", {"n": 1})                                     # 2
    await owner.publish(feed, "acl.grant", {"key": reader_key.public_hex, "read": True})  # 3
    await owner.publish(feed, "club.say", {"n": 2})                                     # 4
    await owner.publish(feed, "acl.revoke", {"key": reader_key.public_hex})             # 5
    await owner.publish(feed, "club.say", {"n": 3})                                     # 6
    await owner.publish("club/open", "club.say", {"n": 0})  # a public marker, after all of them
    for h in heard.values():
        await h.until("club/open")
    await anon.wait(lambda f: f.get("feed") == "club/open")
    assert [s for s, _ in heard["owner"].of(feed)] == [1, 2, 3, 4, 5, 6]
    # the grant binds from its own record, the revoke from its own record (as for subscriptions)
    assert heard["reader"].of(feed) == [(3, "acl.grant"), (4, "club.say")]
    assert heard["outsider"].of(feed) == []
    assert [f for f in anon.frames if f.get("feed") == feed] == []
    assert heard["outsider"].of("club/open") == [(1, "club.say")]
    await anon.ws.close()


async def test_dm_feeds_are_announced_to_their_two_keys_only(relay: Running, clients: Any) -> None:
    a_key, b_key = Keypair.generate(), Keypair.generate()
    a, b, c = await clients(a_key), await clients(b_key), await clients()
    heard = {"a": Heard(), "b": Heard(), "c": Heard()}
    await a.watch("dm/", heard["a"])
    await b.watch("", heard["b"])
    await c.watch("dm/", heard["c"])
    await c.watch("", heard["c"])  # two matching prefixes: the callback of each is called
    feed = dm_feed(a_key.public_hex, b_key.public_hex)
    body = seal_message(a_key, b_key.public_hex, "request", {"q": "hi"})
    await a.publish_event(Event.create(a_key, feed, "dm.msg", body))
    await c.publish("note/after", "note.say", {})
    await heard["b"].until("note/after")  # (a watches dm/ only)
    await heard["c"].until("note/after")
    await heard["a"].until(feed)
    assert heard["a"].of(feed) == heard["b"].of(feed) == [(1, "dm.msg")]
    assert heard["c"].of(feed) == [] and heard["c"].of("note/after") == [(1, "note.say")]


async def test_the_sdk_watches_again_after_a_reconnect(relay: Running, clients: Any) -> None:
    watcher, pub = await clients(), await clients()
    heard = Heard()
    await watcher.watch("job/", heard)
    await pub.publish("job/1", "job.new", {})
    await heard.until("job/1")
    ws = watcher.websocket
    assert ws is not None
    await ws.close()  # the relay forgets the watch with the connection
    await watcher.wait_disconnected(10)
    await watcher.wait_connected(10)
    await watcher.ping(10)  # the watch was sent again before this ping: it is on
    await pub.publish("job/2", "job.new", {})
    await heard.until("job/2")
    await watcher.unwatch("job/")
    # note/x's first record must be announced before the watcher watches note/: on a Redis site
    # the announcement comes back over the bus after the ok, and one still on its way when the
    # watch is on may be heard (docs/protocol.md 9.4 promises only the records after `watching`)
    before = Heard()
    await (await clients()).watch("note/", before)
    await pub.publish("job/3", "job.new", {})
    await pub.publish("note/x", "note.new", {})
    await before.until("note/x")
    await watcher.watch("note/", heard)
    await pub.publish("note/x", "note.new", {})
    await heard.until("note/x", 2)
    assert [a.feed for a in heard.items] == ["job/1", "job/2", "note/x"]
