"""relay/core/verifier_child.py: the request a batch of signatures makes and the bytes answering it."""
from __future__ import annotations

import dataclasses
import os

from collab.events import Event
from collab.keys import Keypair

from relay.core.verifier import _item
from relay.core.verifier_child import LEN, READY, check_batch, handle, serve

ALICE = Keypair.from_seed(b"A" * 32)
MALLORY = Keypair.from_seed(b"M" * 32)


def test_the_child_protocol_refuses_what_the_strict_rules_refuse() -> None:
    ev = Event.create(ALICE, "note/v", "a.b", {"i": 1}, ts=1)
    signed = ev.signing_bytes()
    forged = dataclasses.replace(ev, sig=MALLORY.sign(signed).hex())
    small_order_key = dataclasses.replace(ev, author="00" * 32)  # refused whatever the signature
    payload = b"".join(_item(e, signed) for e in (ev, forged, small_order_key, ev))
    assert list(check_batch(payload)) == [1, 0, 0, 1]
    assert check_batch(b"") == b""


def test_serve_answers_each_request_frame_in_order() -> None:
    ev = Event.create(ALICE, "note/v", "a.b", {"i": 2}, ts=2)
    one = _item(ev, ev.signing_bytes())
    relay = Keypair.from_seed(b"R" * 32)
    requests = [b"V" + one * 3, b"K" + relay.seed, b"S" + LEN.pack(3) + b"abc" + LEN.pack(0), b"V" + one]
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    data = b"".join(LEN.pack(len(p)) + p for p in requests)
    os.write(w_in, data[:7])  # frames split anywhere
    os.write(w_in, data[7:])
    os.close(w_in)
    serve(r_in, w_out)  # returns at the end of its input
    os.close(w_out)
    out = b""
    while chunk := os.read(r_out, 1 << 16):
        out += chunk
    os.close(r_in)
    os.close(r_out)
    signed = relay.sign(b"abc") + relay.sign(b"")
    assert out == b"".join(LEN.pack(len(p)) + p for p in (READY, b"\x01\x01\x01", b"k", signed, b"\x01"))


def test_a_request_it_does_not_know_ends_it() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown request"):
        handle(b"S" + LEN.pack(1) + b"x", None)  # nothing to sign with before the key
    with pytest.raises(ValueError, match="unknown request"):
        handle(b"?", None)
