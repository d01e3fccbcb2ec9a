"""A feed's subscribers through the real Hub on SQLite: backlog then live, exactly once;
doc snapshots; members-only reads; an ACL change drops who may no longer read."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collab.errors import Unauthorized
from collab.events import Event
from collab.keys import Keypair

from tests.relay.core.hubkit import Sink, hub_on_sqlite

ALICE = Keypair.from_seed(b"A" * 32)
BOB = Keypair.from_seed(b"B" * 32)


def msg(n: int, feed: str = "chat/f", key: Keypair = ALICE) -> Event:
    return Event.create(key, feed, "msg", {"n": n}, ts=1000 + n)


async def test_backlog_then_synced_then_live_each_record_once(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        for i in range(5):
            await hub.publish(msg(i), ALICE.public_hex)
        early, late = Sink(ALICE.public_hex), Sink(BOB.public_hex)
        await hub.subscribe(early, "chat/f", 2)
        acks = [hub.publish(msg(i), ALICE.public_hex) for i in range(5, 9)]
        await hub.subscribe(late, "chat/f", 0)
        await asyncio.gather(*acks)
        for sink in (early, late):
            await sink.until(lambda s: len(s.seqs()) >= 9 - (2 if s is early else 0))
        assert early.seqs() == list(range(3, 10)) and late.seqs() == list(range(1, 10))
        synced = early.of("synced")[0]
        assert synced["seq"] >= 5
        kinds = [f["t"] for f in late.frames]
        assert kinds.index("synced") > 0 and kinds[kinds.index("synced") + 1:].count("synced") == 0


async def test_live_batches_go_out_shared(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        sink = Sink()
        await hub.subscribe(sink, "chat/f", 0)
        await asyncio.gather(*(hub.publish(msg(i), ALICE.public_hex) for i in range(10)))
        await sink.until(lambda s: len(s.seqs()) == 10)
        assert sink.seqs() == list(range(1, 11)) and sink.shared >= 1


async def test_a_doc_subscriber_far_behind_gets_a_snapshot(tmp_path: Path) -> None:
    from pycrdt import Doc, Text

    from collab.events import b64

    async with hub_on_sqlite(tmp_path, snapshot_catchup=2) as hub:
        for i in range(4):
            d: Doc = Doc()
            d.get("text", type=Text).insert(0, str(i))
            update = b64(d.get_update())
            await hub.publish(Event.create(ALICE, "doc/d", "doc.update", {"update": update}, ts=i), ALICE.public_hex)
        sink = Sink()
        await hub.subscribe(sink, "doc/d", 0)
        assert sink.of("snapshot")[0]["snap"]["seq"] == 4 and sink.seqs() == []
        assert sink.of("synced")[0]["seq"] == 4


async def test_members_only_reads_and_a_revoke_drops_the_reader(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        pol = Event.create(ALICE, "chat/m", "feed.policy", {"policy": "members"}, ts=1)
        await hub.publish(pol, ALICE.public_hex)
        with pytest.raises(Unauthorized):
            await hub.subscribe(Sink(BOB.public_hex), "chat/m", 0)
        grant = Event.create(ALICE, "chat/m", "acl.grant", {"key": BOB.public_hex, "read": True}, ts=2)
        await hub.publish(grant, ALICE.public_hex)
        bob = Sink(BOB.public_hex)
        await hub.subscribe(bob, "chat/m", 0)
        await hub.publish(Event.create(ALICE, "chat/m", "acl.revoke", {"key": BOB.public_hex}, ts=3),
                          ALICE.public_hex)
        await bob.until(lambda s: bool(s.of("unsubbed")))
        assert bob.of("unsubbed")[0]["reason"] == "unauthorized"
        rt = await hub.runtime("chat/m")
        assert bob not in rt.subs


class _CrowdSink(Sink):
    shared_presence = True  # takes presence frames framed once for many, as an agent's /ws session


def _presence_view(sink: Sink) -> set[str] | None:
    """The participants a client following docs/protocol.md 10 would show (None before a list)."""
    keys: set[str] | None = None
    for f in sink.frames:
        if f["t"] != "presence":
            continue
        if f["op"] == "list":
            keys = set(f["keys"])
        elif keys is not None:
            keys = keys | set(f["keys"]) if f["op"] == "join" else keys - set(f["keys"])
    return keys


async def test_a_crowded_feed_sends_presence_framed_once_and_every_list_is_right(tmp_path: Path) -> None:
    """From SHARED_PRESENCE_AT participants on, joins go out shared and a newcomer's list comes
    at the end of the open presence window, built once; every subscriber still ends up with
    exactly the participants, its list after its synced."""
    from relay.core.fanout import SHARED_PRESENCE_AT

    n = SHARED_PRESENCE_AT + 16
    keys = [Keypair.from_seed(bytes([i + 1]) * 32).public_hex for i in range(n)]
    async with hub_on_sqlite(tmp_path) as hub:
        sinks = [_CrowdSink(k) for k in keys]
        for sink in sinks:
            await hub.subscribe(sink, "chat/crowd", 0)
        for sink in sinks:
            await sink.until(lambda s: _presence_view(s) == set(keys))
            kinds = [f["t"] for f in sink.frames]
            assert kinds.index("synced") < kinds.index("presence")
        late = sinks[SHARED_PRESENCE_AT + 1:]
        assert all(s.shared >= 1 for s in late)  # their list and the joins after it came shared
