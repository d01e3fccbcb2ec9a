"""Access changes bind at once (docs/protocol.md section 12, "Access changes bind at once").

A change of policy or membership (``feed.policy``, ``acl.grant``, ``acl.revoke``) holds from the
record that makes it, for every existing subscription: the fan-out cuts a batch at the change
(``collab.feedcore.Committed.cuts``, ``relay.core.fanout.Fanout.send_committed``), on the process
that sequenced it and on every other process of a Redis site (records from the bus). End to end:
real relays, real WebSocket clients, both backends.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.events import Event
from collab.keys import Keypair
from relay.ops.runner import Running
from tests.rawclient import Raw
from tests.redis_server import RedisServer
from tests.relay.test_scaleout import in_process_site

pytestmark = pytest.mark.timeout(60)

OWNER, READER, STRANGER = Keypair.generate(), Keypair.generate(), Keypair.generate()


def pub(ev: Event, rid: str) -> str:
    return json.dumps({"t": "pub", "event": ev.to_wire(), "rid": rid})


def seqs(raw: Raw, feed: str) -> list[int]:
    return [f["rec"]["seq"] for f in raw.frames if f["t"] == "rec" and f["feed"] == feed]


async def subscribe(raw: Raw, feed: str) -> None:
    await raw.send({"t": "sub", "feed": feed, "since": 0})
    got = await raw.wait(lambda f: f.get("feed") == feed and f["t"] in ("synced", "error"))
    assert got["t"] == "synced", got


async def publish_at_once(raw: Raw, events: list[Event], tag: str) -> list[int]:
    """Publish ``events`` in ONE WebSocket message; their seqs, once all are acknowledged."""
    rids = [f"{tag}{i}" for i in range(len(events))]
    await raw.send("\n".join(pub(ev, rid) for ev, rid in zip(events, rids, strict=True)))
    out = []
    for rid in rids:
        ans = await raw.wait(lambda f, r=rid: f.get("rid") == r and f["t"] in ("ok", "error"))  # type: ignore[misc]
        assert ans["t"] == "ok", ans
        out.append(ans["seq"])
    return out


async def dropped(raw: Raw, feed: str) -> None:
    got = await raw.wait(lambda f: f["t"] == "unsubbed" and f["feed"] == feed)
    assert got.get("reason") == "unauthorized", got


def msg(feed: str, text: str) -> Event:
    return Event.create(OWNER, feed, "chat.msg", {"text": text})


def members(feed: str) -> Event:
    return Event.create(OWNER, feed, "feed.policy", {"policy": "members"})


def revoke(feed: str, key: Keypair) -> Event:
    return Event.create(OWNER, feed, "acl.revoke", {"key": key.public_hex})


def grant(feed: str, key: Keypair) -> Event:
    return Event.create(OWNER, feed, "acl.grant", {"key": key.public_hex, "read": True})


async def test_subscribed_before_create_then_members_gets_nothing(relay: Running) -> None:
    """A stranger subscribed to a name before its owner created it with ``feed.policy members``
    (and a record, in the same message) is dropped and gets no record, not even seq 1 (which
    names the owner); the owner, subscribed early too, gets both."""
    feed = "chat/early"
    stranger = await Raw.connect(relay.ws_url, STRANGER)
    owner = await Raw.connect(relay.ws_url, OWNER)
    watcher = await Raw.connect(relay.ws_url, OWNER)
    try:
        await subscribe(stranger, feed)
        await subscribe(watcher, feed)
        assert await publish_at_once(owner, [members(feed), msg(feed, "secret")], "p") == [1, 2]
        await dropped(stranger, feed)
        await watcher.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 2)
        assert seqs(stranger, feed) == [] and seqs(watcher, feed) == [1, 2]
    finally:
        for raw in (stranger, owner, watcher):
            await raw.close()


async def test_revoke_and_a_record_in_one_message(relay: Running) -> None:
    """One message: a record, a revoke of the reader, a record. The reader gets the first and is
    dropped; neither the revoke nor the record after it reaches it."""
    feed = "chat/revoked"
    owner = await Raw.connect(relay.ws_url, OWNER)
    reader = await Raw.connect(relay.ws_url, READER)
    try:
        assert await publish_at_once(owner, [members(feed), grant(feed, READER)], "a") == [1, 2]
        await subscribe(reader, feed)
        before, cut, after = await publish_at_once(owner, [msg(feed, "old"), revoke(feed, READER),
                                                           msg(feed, "new")], "b")
        await dropped(reader, feed)
        await owner.send({"t": "sub", "feed": feed, "since": after - 1})  # the owner still reads it all
        await owner.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == after)
        assert seqs(reader, feed) == [1, 2, before], (cut, after)
    finally:
        for raw in (owner, reader):
            await raw.close()


async def test_two_processes_access_changes_bind_on_the_other_process(redis_server: RedisServer,
                                                                      tmp_path: Path) -> None:
    """A Redis site of two processes: the owner publishes on one, the readers listen on the
    other (records reach it through the bus). A stranger subscribed before the feed existed,
    and a reader revoked in the same message as a later record, get nothing after the change."""
    async with in_process_site(tmp_path, redis_server.url, 2) as (near, far):
        owner = await Raw.connect(near.ws_url, OWNER)
        stranger = await Raw.connect(far.ws_url, STRANGER)
        reader = await Raw.connect(far.ws_url, READER)
        watcher = await Raw.connect(far.ws_url, OWNER)
        try:
            early, revoked = "chat/early2", "chat/revoked2"
            await subscribe(stranger, early)
            await subscribe(watcher, early)
            assert await publish_at_once(owner, [members(revoked), grant(revoked, READER)], "a") == [1, 2]
            await subscribe(reader, revoked)
            assert await publish_at_once(owner, [members(early), msg(early, "secret"), msg(revoked, "old"),
                                                 revoke(revoked, READER), msg(revoked, "new")], "b") == [1, 2, 3, 4, 5]
            await dropped(stranger, early)
            await dropped(reader, revoked)
            await watcher.wait(lambda f: f["t"] == "rec" and f["rec"]["seq"] == 2)
            await watcher.send({"t": "sub", "feed": revoked, "since": 4})
            await watcher.wait(lambda f: f["t"] == "rec" and f["feed"] == revoked and f["rec"]["seq"] == 5)
            assert seqs(stranger, early) == [] and seqs(watcher, early) == [1, 2]
            assert seqs(reader, revoked) == [1, 2, 3]
        finally:
            for raw in (owner, stranger, reader, watcher):
                await raw.close()
