"""DM crypto (collab/dm.py): boxes between the X25519 forms of two Ed25519 keys."""
from __future__ import annotations

import base64

import nacl.bindings
import nacl.exceptions
import pytest
from nacl.public import Box

from collab.canonical import canonical
from collab.dm import dm_feed, open_message, seal_message
from collab.errors import InvalidEvent
from collab.events import Event, b64
from collab.keys import Keypair

A, B, C = (Keypair.from_seed(bytes([i]) * 32) for i in (7, 8, 9))
FEED = dm_feed(A.public_hex, B.public_hex)


def msg(sender: Keypair, recipient: Keypair, kind: str = "request", body: object = None, **kw: object) -> Event:
    sealed = seal_message(sender, recipient.public_hex, kind, body, **kw)  # type: ignore[arg-type]
    return Event.create(sender, FEED, "dm.msg", sealed, ts=1)


def test_round_trip_both_members_open() -> None:
    ev = msg(A, B, "request", {"task": "summarise", "n": [1, 2, 3]})
    assert set(ev.body) == {"nonce", "box"}
    assert open_message(B, ev) == ("request", {"task": "summarise", "n": [1, 2, 3]})
    assert open_message(A, ev) == ("request", {"task": "summarise", "n": [1, 2, 3]})  # the sender too
    resp = msg(B, A, "response", "done", re=ev.id)
    assert resp.body["re"] == ev.id
    assert open_message(A, resp) == ("response", "done")


def test_stored_event_never_holds_the_plaintext() -> None:
    secret = "the launch code is 0000-hunter2"
    ev = msg(A, B, "request", {"secret": secret})
    wire = canonical(ev.to_wire())
    assert secret.encode() not in wire and b"hunter2" not in wire and b"request" not in wire
    box = base64.b64decode(ev.body["box"])
    plain = canonical({"kind": "request", "body": {"secret": secret}})
    assert secret.encode() not in box and len(box) == len(plain) + 16  # ciphertext + Poly1305 tag


def test_a_third_key_cannot_open() -> None:
    ev = msg(A, B, "request", "for B only")
    with pytest.raises(InvalidEvent) as info:
        open_message(C, ev)  # not a member of the feed
    assert info.value.code == "invalid"
    nonce, box = base64.b64decode(ev.body["nonce"]), base64.b64decode(ev.body["box"])
    with pytest.raises(nacl.exceptions.CryptoError):  # not even by brute use of C's key against either member
        Box(C.box_private_key(), A.box_private_key().public_key).decrypt(box, nonce)
    with pytest.raises(nacl.exceptions.CryptoError):
        Box(C.box_private_key(), B.box_private_key().public_key).decrypt(box, nonce)


def test_box_for_another_pair_fails() -> None:
    """A sealed to C but posted in A.B: B (and A, who has no box with B for it) cannot open it."""
    ev = Event.create(A, FEED, "dm.msg", seal_message(A, C.public_hex, "request", "x"), ts=1)
    for key in (A, B):
        with pytest.raises(InvalidEvent):
            open_message(key, ev)


@pytest.mark.parametrize(("field", "index"), [("box", 0), ("box", -1), ("box", 20), ("nonce", 3)])
def test_tampered_message_fails(field: str, index: int) -> None:
    ev = msg(A, B, "request", {"amount": 10})
    raw = bytearray(base64.b64decode(ev.body[field]))
    raw[index] ^= 0x01
    forged = Event.create(A, FEED, "dm.msg", {**ev.body, field: b64(bytes(raw))}, ts=1)
    with pytest.raises(InvalidEvent) as info:
        open_message(B, forged)
    assert info.value.code == "invalid"


def test_interoperates_with_raw_libsodium() -> None:
    """The keys are libsodium's crypto_sign_ed25519_{pk,sk}_to_curve25519 conversions."""
    nonce = bytes(range(24))
    ev = msg(A, B, "response", [True, None], nonce=nonce, re="cd" * 32)
    b_sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(B.seed + B.public)
    a_pk = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(A.public)
    plain = nacl.bindings.crypto_box_open(base64.b64decode(ev.body["box"]), nonce, a_pk, b_sk)
    assert plain == b'{"body":[true,null],"kind":"response"}'
    assert ev.body["nonce"] == b64(nonce)
    assert bytes(B.box_private_key()) == b_sk
    # a fixed nonce gives a reproducible body (tests only: a nonce must never repeat)
    assert seal_message(A, B.public_hex, "response", [True, None], "cd" * 32, nonce=nonce) == ev.body


def test_non_canonical_plaintext_refused() -> None:
    nonce = bytes(24)
    for plain in (b'{"kind": "request", "body": 1}', b'{"body":1,"kind":"ask"}', b'{"body":1}', b"\xff"):
        box = Box(A.box_private_key(), B.box_private_key().public_key).encrypt(plain, nonce).ciphertext
        ev = Event.create(A, FEED, "dm.msg", {"nonce": b64(nonce), "box": b64(box)}, ts=1)
        with pytest.raises(InvalidEvent):
            open_message(B, ev)


def test_seal_refusals() -> None:
    with pytest.raises(InvalidEvent):
        seal_message(A, B.public_hex, "notify", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        seal_message(A, B.public_hex, "request", {"x": 1.5})
    with pytest.raises(InvalidEvent):
        seal_message(A, A.public_hex, "request", 1)  # no dm feed with oneself
    with pytest.raises(InvalidEvent):
        seal_message(A, "zz" * 32, "request", 1)
    with pytest.raises(InvalidEvent):
        seal_message(A, "00" * 32 if "00" * 32 != A.public_hex else "01" * 32, "request", 1)  # not a curve point
    with pytest.raises(InvalidEvent):
        seal_message(A, B.public_hex, "response", 1, re="nope")
    with pytest.raises(InvalidEvent):
        seal_message(A, B.public_hex, "request", 1, nonce=bytes(8))
    with pytest.raises(InvalidEvent):
        dm_feed(A.public_hex, A.public_hex)


def test_open_requires_a_dm_msg_in_a_dm_feed() -> None:
    ev = msg(A, B, "request", 1)
    with pytest.raises(InvalidEvent):
        open_message(B, Event.create(A, "task/x", "dm.msg", ev.body, ts=1))
    with pytest.raises(InvalidEvent):
        open_message(B, Event.create(A, FEED, "dm.other", ev.body, ts=1))
