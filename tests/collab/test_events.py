"""collab/events.py: events, records (the hash chain and receipts), snapshots, base64 and feed ids.

Canonical encoding and event round trips under hypothesis live in test_canonical.py; this file
covers what sits on top: records chained by ``prev``, receipts, snapshots, and the small helpers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.errors import BadSignature, InvalidEvent
from collab.events import (
    EVENT_DOMAIN,
    GENESIS,
    HELLO_DOMAIN,
    Event,
    Record,
    Snapshot,
    b64,
    check_feed,
    hello_bytes,
    namespace_of,
    now_ms,
    receipt_bytes,
    unb64,
)
from collab.keys import Keypair

AUTHOR = Keypair.from_seed(bytes(range(32)))
RELAY = Keypair.from_seed(bytes(range(1, 33)))


def test_an_event_id_is_the_hash_of_what_its_author_signed() -> None:
    ev = Event.create(AUTHOR, "misc/e", "note", {"text": "héllo"}, ctx=3, ts=1_700_000_000_000)
    signing = ev.signing_bytes()
    assert signing.startswith(EVENT_DOMAIN) and ev.size == len(signing)
    assert ev.id == hashlib.sha256(signing).hexdigest()
    assert ev.verify() and ev.author == AUTHOR.public_hex and ev.namespace == "misc"
    assert Event.from_wire(ev.to_wire()) == ev
    assert not dataclasses.replace(ev, body={"text": "hello"}).verify()
    assert not dataclasses.replace(ev, sig="0" * 128).verify()


def test_an_event_from_the_wire_is_checked_field_by_field() -> None:
    good = Event.create(AUTHOR, "misc/e", "note", {"n": 1}).to_wire()
    with pytest.raises(InvalidEvent):
        Event.from_wire({**good, "extra": 1})
    with pytest.raises(InvalidEvent):
        Event.from_wire({k: v for k, v in good.items() if k != "ctx"})
    with pytest.raises(InvalidEvent):
        Event.from_wire([good])
    with pytest.raises(BadSignature):
        Event.from_wire({**good, "body": {"n": 2}})  # the id no longer matches
    forged = Event.create(RELAY, "misc/e", "note", {"n": 1}, ts=good["ts"])
    with pytest.raises(BadSignature):
        Event.from_wire({**forged.to_wire(), "author": AUTHOR.public_hex})
    assert Event.from_wire({**good, "sig": forged.sig}, verify_sig=False).id == good["id"]


def test_records_chain_by_prev_and_carry_the_relays_receipt() -> None:
    prev, recs = GENESIS, []
    for seq in range(1, 5):
        rec = Record.seal(RELAY, Event.create(AUTHOR, "misc/c", "note", {"seq": seq}), seq, prev, rtime=1000 + seq)
        assert rec.prev == prev and rec.feed == "misc/c" and rec.relay == RELAY.public_hex
        assert rec.hash == hashlib.sha256(receipt_bytes("misc/c", seq, prev, rec.event.id, rec.rtime,
                                                        RELAY.public_hex)).hexdigest()
        assert Record.from_wire(rec.to_wire()) == rec
        prev = rec.hash
        recs.append(rec)
    assert len({r.hash for r in recs}) == 4
    # the same event sealed after another head is another record
    other = Record.seal(RELAY, recs[1].event, 2, GENESIS, rtime=recs[1].rtime)
    assert other.hash != recs[1].hash


def test_a_stored_record_is_read_back_the_same_without_rechecking_it() -> None:
    # the trusted read (a relay's own storage and bus): the same record, the same event size
    body = {"update": "AQEBAAQBBHRleHQFaGVsbG8A", "note": "caf\u00e9 \U0001f600 \n", "n": [1, -2, None, True]}
    rec = Record.seal(RELAY, Event.create(AUTHOR, "doc/stored", "doc.update", body), 7, GENESIS)
    stored = Record.from_stored(json.loads(json.dumps(rec.to_wire())))
    assert stored == rec and stored.hash == rec.hash and stored.event.size == rec.event.size
    assert stored == Record.from_wire(rec.to_wire(), verify_sigs=False)


def test_a_record_with_a_forged_receipt_is_refused() -> None:
    rec = Record.seal(RELAY, Event.create(AUTHOR, "misc/c", "note", {}), 1, GENESIS)
    wire = rec.to_wire()
    with pytest.raises(BadSignature):
        Record.from_wire({**wire, "seq": 2})
    with pytest.raises(BadSignature):
        Record.from_wire({**wire, "relay": AUTHOR.public_hex})
    assert Record.from_wire({**wire, "seq": 2}, verify_sigs=False).seq == 2
    for bad in ({**wire, "seq": 0}, {**wire, "rtime": -1}, {**wire, "prev": "X" * 64}, {"seq": 1}):
        with pytest.raises(InvalidEvent):
            Record.from_wire(bad)


def test_snapshots_are_signed_over_their_state_hash() -> None:
    snap = Snapshot.seal(RELAY, "doc/s", 7, "ab" * 32, b"\x00\x01state")
    assert snap.verify()
    assert Snapshot.from_wire(snap.to_wire()) == snap
    assert not dataclasses.replace(snap, state=b"other").verify()
    with pytest.raises(BadSignature):
        Snapshot.from_wire({**snap.to_wire(), "seq": 8})
    with pytest.raises(InvalidEvent):
        Snapshot.from_wire({**snap.to_wire(), "state": "not base64!"})


def test_feed_ids_and_namespaces() -> None:
    assert check_feed("doc/a/b.c") == "doc/a/b.c" and namespace_of("doc/a/b") == "doc"
    for bad in ("doc", "Doc/a", "doc/", "doc//a", "doc/a/..", "doc/./a", "doc/events", "doc/x/state", 7):
        with pytest.raises(InvalidEvent):
            check_feed(bad)


def test_hello_bytes_bind_key_nonce_and_relay() -> None:
    a = hello_bytes(AUTHOR.public_hex, "n1", RELAY.public_hex)
    assert a.startswith(HELLO_DOMAIN)
    assert a != hello_bytes(AUTHOR.public_hex, "n2", RELAY.public_hex)
    assert a != hello_bytes(AUTHOR.public_hex, "n1", AUTHOR.public_hex)


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@given(st.binary(max_size=64))
def test_base64_round_trips_and_only_the_canonical_form_is_accepted(data: bytes) -> None:
    text = b64(data)
    assert unb64(text) == data
    body = text.rstrip("=")
    if len(body) < len(text):  # padded: the last character's low (pad) bits are zero ...
        last = ALPHABET.index(body[-1])
        assert last & 1 == 0
        twisted = body[:-1] + ALPHABET[last | 1] + text[len(body):]
        with pytest.raises(InvalidEvent):  # ... and one that sets them is refused
            unb64(twisted)


def test_unb64_refuses_non_strings_and_garbage() -> None:
    for bad in (None, 5, b"AA==", "A", "AB$="):
        with pytest.raises(InvalidEvent):
            unb64(bad)


def test_now_is_milliseconds() -> None:
    assert 1_600_000_000_000 < now_ms() < 10_000_000_000_000
