"""The sans-I/O protocol core: pure strings in and out, no sockets."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab import frames
from collab.errors import BadSignature, ChainError, MalformedFrame, ProtocolError
from collab.events import GENESIS, Event, Record, Snapshot, b64, hello_bytes
from collab.keys import Keypair, verify
from collab.protocol import (
    Ack, Challenge, ClientProtocol, ErrorReply, Pong, Presence, RecordReceived, SnapshotReceived, Synced, Unsubbed,
    Welcome,
)

RELAY = Keypair.from_seed(b"r" * 32)
AGENT = Keypair.from_seed(b"a" * 32)
FEED = "chat/room"


def chain(n: int, feed: str = FEED, relay: Keypair = RELAY) -> list[Record]:
    recs, prev = [], GENESIS
    for i in range(1, n + 1):
        ev = Event.create(AGENT, feed, "msg", {"i": i}, ctx=i - 1, ts=1000 + i)
        rec = Record.seal(relay, ev, i, prev, rtime=2000 + i)
        recs.append(rec)
        prev = rec.hash
    return recs


def rec_frame(rec: Record | dict[str, Any], feed: str = FEED) -> str:
    wire = rec.to_wire() if isinstance(rec, Record) else rec
    return frames.encode({"t": "rec", "feed": feed, "rec": wire})


def proto(feed: str | None = FEED, **kw: Any) -> ClientProtocol:
    p = ClientProtocol(AGENT, **kw)
    if feed:
        p.sub(feed)
    return p


def test_challenge_then_hello_signs_the_nonce_for_this_relay() -> None:
    p = ClientProtocol(AGENT)
    with pytest.raises(ProtocolError):
        p.hello()
    [ev] = p.receive(frames.encode({"t": "challenge", "nonce": "ab" * 32, "relay": RELAY.public_hex}))
    assert ev == Challenge("ab" * 32, RELAY.public_hex)
    hello = json.loads(p.hello())
    assert hello["t"] == "hello" and hello["key"] == AGENT.public_hex
    assert verify(AGENT.public, hello_bytes(AGENT.public_hex, "ab" * 32, RELAY.public_hex), bytes.fromhex(hello["sig"]))
    assert p.receive(f'{{"t":"welcome","key":"{AGENT.public_hex}"}}') == [Welcome(AGENT.public_hex)]
    assert p.authenticated


def test_pinned_relay_key_refuses_another_relay() -> None:
    p = ClientProtocol(AGENT, relay_key=Keypair.generate().public_hex)
    with pytest.raises(ProtocolError, match="pinned"):
        p.receive(frames.encode({"t": "challenge", "nonce": "00", "relay": RELAY.public_hex}))
    ok = ClientProtocol(AGENT, relay_key=RELAY.public_hex)
    assert isinstance(ok.receive(frames.encode({"t": "challenge", "nonce": "00", "relay": RELAY.public_hex}))[0],
                      Challenge)


def test_batched_records_are_verified_and_advance_the_cursor() -> None:
    p = proto()
    recs = chain(3)
    out = p.receive("\n".join(rec_frame(r) for r in recs))
    assert [type(e) for e in out] == [RecordReceived] * 3
    assert [e.record.seq for e in out] == [1, 2, 3]  # type: ignore[union-attr]
    assert [e.record.event.body for e in out] == [{"i": 1}, {"i": 2}, {"i": 3}]  # type: ignore[union-attr]
    assert p.cursors[FEED].seq == 3 and p.cursors[FEED].head == recs[-1].hash
    assert p.seq(FEED) == 3


def test_duplicates_are_ignored_and_counted() -> None:
    p = proto()
    recs = chain(2)
    p.receive(rec_frame(recs[0]) + "\n" + rec_frame(recs[1]))
    assert p.receive(rec_frame(recs[0])) == []
    assert p.receive(rec_frame(recs[1])) == []
    assert p.duplicates == 2 and p.seq(FEED) == 2


def test_gap_raises_chain_error_carrying_the_feed() -> None:
    p = proto()
    recs = chain(3)
    p.receive(rec_frame(recs[0]))
    with pytest.raises(ChainError, match="gap") as info:
        p.receive(rec_frame(recs[2]))
    assert info.value.feed == FEED
    assert p.seq(FEED) == 1  # the cursor did not move


def test_chain_break_raises_even_when_the_relay_signed_it() -> None:
    p = proto()
    recs = chain(2)
    p.receive(rec_frame(recs[0]))
    ev = Event.create(AGENT, FEED, "msg", {"forged": True}, ctx=1)
    bad = Record.seal(RELAY, ev, 2, "f" * 64)
    with pytest.raises(ChainError, match="link"):
        p.receive(rec_frame(bad))
    assert p.receive(rec_frame(recs[1]))[0].record.hash == recs[1].hash  # type: ignore[union-attr]


def test_tampered_records_do_not_verify() -> None:
    p = proto()
    wire = chain(1)[0].to_wire()
    body_changed = json.loads(json.dumps(wire))
    body_changed["event"]["body"] = {"i": 99}
    with pytest.raises(BadSignature):
        p.receive(rec_frame(body_changed))
    receipt_changed = json.loads(json.dumps(wire))
    receipt_changed["rtime"] += 1
    with pytest.raises(BadSignature, match="receipt"):
        p.receive(rec_frame(receipt_changed))
    assert p.seq(FEED) == 0


def test_snapshot_resets_the_chain_head() -> None:
    p = proto("doc/d")
    recs = chain(6, feed="doc/d")
    snap = Snapshot.seal(RELAY, "doc/d", 5, recs[4].hash, b"\x00\x00")
    frame = frames.encode({"t": "snapshot", "feed": "doc/d", "snap": snap.to_wire()})
    [ev] = p.receive(frame)
    assert isinstance(ev, SnapshotReceived) and ev.snapshot.seq == 5
    assert p.cursors["doc/d"].head == recs[4].hash
    assert p.receive(frames.encode({"t": "synced", "feed": "doc/d", "seq": 5, "head": recs[4].hash})) == [
        Synced("doc/d", 5, recs[4].hash)
    ]
    assert p.receive(rec_frame(recs[5], "doc/d"))[0].record.seq == 6  # type: ignore[union-attr]
    forged = Snapshot.seal(Keypair.generate(), "doc/d", 7, "e" * 64, b"")
    wire = forged.to_wire() | {"relay": RELAY.public_hex}
    with pytest.raises(BadSignature):
        p.receive(frames.encode({"t": "snapshot", "feed": "doc/d", "snap": wire}))


def test_synced_must_match_what_we_hold() -> None:
    p = proto()
    recs = chain(2)
    p.receive(rec_frame(recs[0]))
    with pytest.raises(ChainError):
        p.receive(frames.encode({"t": "synced", "feed": FEED, "seq": 2, "head": recs[1].hash}))
    with pytest.raises(ChainError, match="fork"):
        p.receive(frames.encode({"t": "synced", "feed": FEED, "seq": 1, "head": "a" * 64}))
    assert p.receive(frames.encode({"t": "synced", "feed": FEED, "seq": 1, "head": recs[0].hash}))
    assert p.cursors[FEED].synced


def test_resume_from_since_accepts_the_first_link_then_enforces_the_chain() -> None:
    p = ClientProtocol(AGENT)
    recs = chain(4)
    sub = json.loads(p.sub(FEED, since=2, rid="s1"))
    assert sub == {"t": "sub", "feed": FEED, "since": 2, "rid": "s1"}
    assert p.receive(rec_frame(recs[2]))[0].record.seq == 3  # type: ignore[union-attr]
    with pytest.raises(ChainError):
        p.receive(rec_frame(Record.seal(RELAY, recs[3].event, 4, "0" * 64)))


def test_cursor_survives_connection_loss_and_drives_the_resubscribe() -> None:
    p = proto()
    p.receive("\n".join(rec_frame(r) for r in chain(2)))
    p.connection_lost()
    assert not p.cursors[FEED].synced and p.nonce is None
    assert json.loads(p.sub(FEED))["since"] == 2
    json.loads(p.unsub(FEED))
    assert FEED not in p.cursors
    assert p.receive(rec_frame(chain(3)[2])) == []  # untracked feed: in flight after unsub


def test_frames_in_flight_after_an_unsub_never_reach_a_new_subscription_to_the_feed() -> None:
    """unsub then sub again at once (an agent reading a doc twice): the relay answers in order, so
    records it sent the old subscription before its `unsubbed` are ignored, not checked against
    the new cursor (they would look like a gap)."""
    p = proto()
    recs = chain(6)
    p.receive("\n".join(rec_frame(r) for r in recs[:4]))
    p.unsub(FEED, rid="u1")
    p.sub(FEED, since=0, rid="s2")
    assert p.receive(rec_frame(recs[4])) == []  # live, for the old subscription
    assert p.receive('{"t":"unsubbed","feed":"chat/room","rid":"u1"}') == [Unsubbed(FEED, None, "u1")]
    assert FEED not in p.draining
    assert [e.record.seq for e in p.receive("\n".join(rec_frame(r) for r in recs))] == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr]
    # the relay's own unsubbed (with a reason) answers none of ours
    p.unsub(FEED)
    p.receive('{"t":"unsubbed","feed":"chat/room","reason":"unauthorized"}')
    assert p.draining == {FEED: 1}
    p.connection_lost()
    assert p.draining == {}


def test_replies_and_notices_parse_into_events() -> None:
    p = proto()
    text = "\n".join([
        '{"t":"ok","feed":"chat/room","id":"%s","seq":4,"dup":true,"rid":7}' % ("a" * 64),
        '{"t":"error","code":"invalid","message":"nope","id":"%s"}' % ("b" * 64),
        '{"t":"presence","feed":"chat/room","op":"join","keys":["k1"]}',
        '{"t":"unsubbed","feed":"chat/room","reason":"unauthorized"}',
        '{"t":"pong","rid":"p1"}',
    ])
    assert p.receive(text) == [
        Ack("a" * 64, 4, True, FEED, 7),
        ErrorReply("invalid", "nope", None, None, "b" * 64),
        Presence(FEED, "join", ("k1",)),
        Unsubbed(FEED, "unauthorized"),
        Pong("p1"),
    ]
    assert p.receive('{"t":"surprise"}') == []  # unknown types are skipped (forward compatible)
    with pytest.raises(MalformedFrame):
        p.receive('{"t":5}')
    with pytest.raises(MalformedFrame):
        p.receive("not json")


def test_outgoing_frames() -> None:
    p = ClientProtocol(AGENT)
    ev = Event.create(AGENT, FEED, "msg", {"x": b64(b"hi")})
    assert json.loads(p.pub(ev, rid=3)) == {"t": "pub", "event": ev.to_wire(), "rid": 3}
    assert json.loads(p.ping("p")) == {"t": "ping", "rid": "p"}
    assert json.loads(p.unsub(FEED)) == {"t": "unsub", "feed": FEED}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=40))
def test_any_redelivery_pattern_yields_each_record_once_in_order(pattern: list[int]) -> None:
    """Feeding prefixes again (like a resumed backlog) never duplicates or reorders."""
    recs = chain(8)
    p = proto()
    got: list[int] = []
    for upto in pattern:  # redeliver records 1..upto+1 from the start each time
        got.extend(ev.record.seq for ev in p.receive("\n".join(rec_frame(r) for r in recs[: upto + 1])))  # type: ignore[union-attr]
    assert got == list(range(1, max(pattern) + 2))


def test_unknown_relay_frame_types_are_ignored() -> None:
    """Forward compatibility: a newer relay's new frame types are skipped, not fatal."""
    p = ClientProtocol(None)
    assert p.receive('{"t":"shiny-new-thing","x":1}\n{"t":"pong","rid":"a"}') == [Pong(rid="a")]
