"""The y-protocol core without I/O: encodings, parsing, per-connection limits, awareness rules;
and capability tokens."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from collab.capability import Capability
from collab.errors import BadSignature, InvalidEvent, Unauthorized
from collab.keys import Keypair
from relay.core.limits import YjsLimits
from relay.endpoints.yjs_protocol import (
    CLOSE_MALFORMED, CLOSE_TOO_BIG, AwarenessChange, AwarenessEntry, AwarenessQuery, Close,
    Denied, Dropped, Reader, SyncRequest, SyncStep1, SyncUpdate, UnknownMessage, Write, YjsPeer, YProtocolError,
    awareness_message, decode_awareness, delete_set, deletes_covered, encode_awareness, is_empty_update,
    parse_message, permission_denied, sync_step1, sync_update, update_budget, var_string, var_uint,
)
from tests.yclient import msg_awareness, msg_step1, msg_step2, msg_update


def text_update(text: str) -> bytes:
    d = Doc()
    d.get("text", type=Text).insert(0, text)
    return d.get_update()


# -- encodings -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32 - 1, 2**53 - 1])
def test_varuint_round_trip(n: int) -> None:
    enc = var_uint(n)
    r = Reader(enc)
    assert r.var_uint() == n and r.at_end()


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff" * 9 + b"\x01",
                                  b"\xff\xff\xff\xff\xff\xff\xff\x7f"])
def test_varuint_truncated_or_too_long(data: bytes) -> None:
    with pytest.raises(YProtocolError):
        Reader(data).var_uint()


def test_varstring_counts_utf8_bytes() -> None:
    # lib0 writeVarString writes the UTF-8 length, not the number of characters
    assert var_string("é🌍") == bytes([6]) + "é🌍".encode()


def test_permission_denied_is_y_protocols_auth_message() -> None:
    # y-protocols/auth.js: writeVarUint(messageAuth=2), writeVarUint(messagePermissionDenied=0), writeVarString(reason)
    assert permission_denied("nö") == b"\x02\x00\x03n\xc3\xb6"


def test_parse_messages() -> None:
    sv = Doc().get_state()
    assert parse_message(msg_step1(sv)) == SyncStep1(sv)
    u = text_update("x")
    assert parse_message(msg_update(u)) == SyncUpdate(u)
    assert parse_message(b"\x07\x01\x02") == UnknownMessage(7)
    assert parse_message(b"\x02\x00\x00") == UnknownMessage(2)  # auth is relay -> client only
    for bad in (b"", b"\x00", b"\x00\x00", b"\x00\x05\x00", b"\x00\x02\x05ab", msg_update(u) + b"\x00",
                b"\x00\x00\x03\x01\x01", b"\x01", b"\x01\x02\x00", b"\x03\x00"):
        with pytest.raises(YProtocolError):
            parse_message(bad)


def test_awareness_round_trip() -> None:
    entries = [AwarenessEntry(1, 2, '{"user":{"name":"Zoë 🌍"}}'), AwarenessEntry(2**32 - 1, 0, "null")]
    assert decode_awareness(encode_awareness(entries)) == entries
    assert awareness_message(entries)[0] == 1
    with pytest.raises(YProtocolError):
        decode_awareness(b"\x05\x01")  # announces more entries than it holds
    with pytest.raises(YProtocolError):
        decode_awareness(encode_awareness(entries) + b"\x00")


def test_empty_updates_and_delete_sets() -> None:
    assert is_empty_update(b"\x00\x00")
    assert not is_empty_update(text_update("a"))
    d = Doc()
    t = d.get("text", type=Text)
    t.insert(0, "abcdef")
    del t[1:3]
    del t[2:3]  # two ranges of one client
    ds_update = Doc()
    ds_update.apply_update(d.get_update())
    only_deletes = __import__("pycrdt").get_update(d.get_update(), d.get_state())
    ds = delete_set(only_deletes)
    assert list(ds.values()) == [[(1, 2), (4, 1)]]
    assert deletes_covered(ds, ds)
    assert deletes_covered({5: [(1, 1)]}, {5: [(0, 3)]})
    assert not deletes_covered({5: [(1, 3)]}, {5: [(0, 3)]})
    assert not deletes_covered({6: [(0, 1)]}, {5: [(0, 3)]})


def test_update_budget_fits_base64() -> None:
    for overhead in (100, 777):
        n = update_budget(1000, overhead)
        assert len(base64.b64encode(b"x" * n)) + overhead <= 1000
        assert len(base64.b64encode(b"x" * (n + 3))) + overhead > 1000


# -- one connection --------------------------------------------------------------------------
LIMITS = YjsLimits(awareness_per_sec=1.0, awareness_burst=3, max_awareness_bytes=200,
                   max_awareness_state_bytes=50, max_awareness_clients=2, sync_requests_per_sec=1.0,
                   sync_requests_burst=2)


def test_peer_sync_and_writes() -> None:
    ro = YjsPeer(LIMITS, 1000, writable=False, now=0)
    rw = YjsPeer(LIMITS, 1000, writable=True, now=0)
    sv = Doc().get_state()
    assert ro.receive(msg_step1(sv), 0) == [SyncRequest(sv)]
    u = text_update("hi")
    assert rw.receive(msg_update(u), 0) == [Write(u, False)]
    assert rw.receive(msg_step2(u), 0) == [Write(u, True)]
    assert ro.receive(msg_update(u), 0) == [Denied(u, False)]
    assert ro.receive(msg_step2(b"\x00\x00"), 0) == []  # an empty client's step 2: nothing to deny
    assert rw.receive(msg_update(b"\x00\x00"), 0) == []


def test_peer_refuses_bad_input() -> None:
    p = YjsPeer(LIMITS, 1000, writable=True, now=0)
    [c] = p.receive(b"\xff\xff\xff", 0)
    assert isinstance(c, Close) and c.code == CLOSE_MALFORMED
    [w] = p.receive(msg_update(b"\x05\x01\x02garbage"), 0)  # does not decode as a Yjs update: the
    assert isinstance(w, Write) and w.update == b"\x05\x01\x02garbage"  # connection has the sandbox refuse it
    [c] = p.receive(msg_update(b"\x00" * 2000), 0)
    assert isinstance(c, Close) and c.code == CLOSE_TOO_BIG
    [d] = p.receive(b"\x09", 0)
    assert isinstance(d, Dropped) and "unknown message type 9" in d.reason
    [c] = p.receive(b"\x01" + var_uint(5) + b'\x01\x01\x01\x02{"', 0)  # awareness with bad JSON
    assert isinstance(c, Close) and c.code == CLOSE_MALFORMED


def test_peer_rate_limits() -> None:
    p = YjsPeer(LIMITS, 10_000, writable=False, now=0)
    sv = Doc().get_state()
    got = [p.receive(msg_step1(sv), 0)[0] for _ in range(3)]
    assert got[:2] == [SyncRequest(sv)] * 2 and isinstance(got[2], Dropped)
    assert p.receive(msg_step1(sv), 1.0) == [SyncRequest(sv)]  # refilled
    aw = msg_awareness([(1, 1, {"a": 1})])
    got = [p.receive(aw, 0)[0] for _ in range(4)]
    assert [type(g) for g in got] == [AwarenessChange] * 3 + [Dropped]
    assert isinstance(p.receive(b"\x03", 0)[0], Dropped)  # queries share the bucket
    assert p.receive(b"\x03", 1.0) == [AwarenessQuery()]
    big = msg_awareness([(1, 2, {"a": "x" * 300})])
    [d] = p.receive(big, 10)
    assert isinstance(d, Dropped) and "limit" in d.reason


def test_sync_messages_match_pycrdt() -> None:
    from pycrdt import create_sync_message, create_update_message

    d = Doc()
    d.get("text", type=Text).insert(0, "x")
    assert sync_step1(d.get_state()) == create_sync_message(d)
    assert sync_update(d.get_update()) == create_update_message(d.get_update())


# -- capabilities ----------------------------------------------------------------------------
def test_capability_token_round_trip_and_checks() -> None:
    owner, other = Keypair.generate(), Keypair.generate()
    cap = Capability.issue(owner, "doc/a", write=True, ttl_ms=60_000, now=1_000)
    tok = cap.token()
    assert Capability.from_token(tok) == cap
    assert set(json.loads(base64.urlsafe_b64decode(tok + "==="))) == {
        "feed", "grantee", "rights", "iat", "exp", "nonce", "issuer", "sig"}
    cap.check("doc/a", owner.public_hex, "write", 60_999)
    for feed, own, right, at, msg in (("doc/b", owner.public_hex, "write", 2_000, "is for doc/a"),
                                      ("doc/a", other.public_hex, "write", 2_000, "not issued by the feed's owner"),
                                      ("doc/a", None, "write", 2_000, "no owner yet"),
                                      ("doc/a", owner.public_hex, "write", 61_000, "expired")):
        with pytest.raises(Unauthorized, match=msg):
            cap.check(feed, own, right, at)
    ro = Capability.issue(owner, "doc/a", now=1_000)
    with pytest.raises(Unauthorized, match="does not grant write"):
        ro.check("doc/a", owner.public_hex, "write", 2_000)


def test_capability_tokens_refused() -> None:
    owner = Keypair.generate()
    wire = Capability.issue(owner, "doc/a", write=True).to_wire()

    def tok(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    forged = {**wire, "rights": ["read", "write"], "exp": wire["exp"] + 1}
    with pytest.raises(BadSignature):
        Capability.from_token(tok(forged))
    with pytest.raises(BadSignature):
        Capability.from_token(tok({**wire, "issuer": Keypair.generate().public_hex}))
    for bad in ("", "a", "!!!!", "x" * 5000, tok({**wire, "grantee": owner.public_hex}),
                tok({**wire, "rights": ["write"]}),
                tok({k: v for k, v in wire.items() if k != "nonce"}), tok({**wire, "extra": 1}),
                base64.urlsafe_b64encode(json.dumps(wire, indent=1).encode()).rstrip(b"=").decode(),  # not canonical
                Capability.issue(owner, "doc/a").token() + "A"):
        with pytest.raises(InvalidEvent):
            Capability.from_token(bad)


def test_capability_example_of_the_spec() -> None:
    """docs/protocol.md section 20.2: alice's (RFC 8032 TEST 1) grant on doc/notes."""
    alice = Keypair.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    sig = ("3f5cf2b06b21ef034256c50a10492b69fa268d76c8cbc554df2ae5ef8e879d9c"
           "3af786d7fa9efc321d41edbc39a46194ccd67c590c2382d30db7e9c2f670c20d")
    cap = Capability("doc/notes", None, ("read", "write"), 1_700_000_000_000, 1_700_003_600_000,
                     "000102030405060708090a0b0c0d0e0f", alice.public_hex, sig)
    assert cap.signing_bytes() == (
        b'colony/capability/v1\n{"exp":1700003600000,"feed":"doc/notes","grantee":null,"iat":1700000000000,'
        b'"issuer":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",'
        b'"nonce":"000102030405060708090a0b0c0d0e0f","rights":["read","write"]}')
    assert alice.sign(cap.signing_bytes()).hex() == sig
    spec = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text()
    assert f"token = {cap.token()}\n" in spec and f"sig   = {sig}\n" in spec
    assert Capability.from_token(cap.token()) == cap
