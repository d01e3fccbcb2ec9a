#!/usr/bin/env python3
"""Generate the Colony protocol test vectors (``tests/vectors/*.json``).

Usage::

    python tests/vectors/generate.py            # rewrite the JSON files next to this script
    python tests/vectors/generate.py --out DIR  # write them somewhere else (the tests do this)

The output is fully deterministic: fixed Ed25519 seeds (RFC 8032 test keys), fixed
timestamps and nonces, fixed Yjs client ids. Ed25519 signatures are deterministic, so every
byte of every file is reproducible; ``tests/collab/test_vectors.py`` regenerates the files
into a temporary directory and requires them to equal the committed ones.

This script is written from ``docs/protocol.md`` alone and deliberately does **not** import
the ``collab`` package: it has its own small canonical-JSON encoder (:func:`canonical`), and
builds signing bytes, ids, receipts and snapshots with ``hashlib`` and PyNaCl directly. The
expected error codes of the invalid inputs are written down by hand from the spec. The tests
then check that the implementation reproduces these files byte for byte, so a change to the
implementation that alters any wire byte fails loudly.

Files (every file has a ``description``; binary values are lowercase hex unless the field
name ends in ``_b64``; ``*_text`` fields are the same bytes decoded as UTF-8):

* ``canonical.json``      ``valid``: JSON text in -> exact canonical output (string and hex);
                          ``rejected``: JSON text that must be refused (when parsing or encoding).
* ``ids.json``            valid / invalid feed ids and event kinds.
* ``keys.json``           Ed25519 seed -> public key, and the key-file contents.
* ``events.json``         signed events with their signing bytes, id and signature.
* ``invalid_events.json`` event objects (as JSON text) and the error code each must get, both
                          from event validation (``error``) and inside a ``pub`` frame (``wire_error``).
* ``records.json``        a three-record hash chain with receipt bytes, hashes and relay
                          signatures, and the doc snapshot at its head.
* ``hello.json``          a challenge, the hello signing bytes and the hello frame.
* ``frames.json``         client frames the relay must refuse, with the error code, plus batches and
                          ``first_reply`` (the exact first reply to frames with several faults).
* ``ed25519.json``        signatures a strict Ed25519 verifier refuses (``gen_ed25519.py``).
* ``doc_updates.json``    empty and non-empty Yjs updates, as doc.update events (``gen_doc_updates.py``).
* ``http_auth.json``      a signed HTTP read: its signing bytes and ``Authorization`` header.
* ``yjs_concat.json``     a /yjs writer's queued edits and the one update recorded for them (``gen_yjs_concat.py``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from pycrdt import Doc, Text

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the generators next to this script, however it is loaded
from gen_doc_updates import gen_doc_updates
from gen_ed25519 import gen_ed25519
from gen_yjs_concat import gen_yjs_concat

# ---------------------------------------------------------------------------------------------
# Constants from docs/protocol.md
# ---------------------------------------------------------------------------------------------

EVENT_DOMAIN = b"colony/event/v1\n"
RECORD_DOMAIN = b"colony/record/v1\n"
SNAPSHOT_DOMAIN = b"colony/snapshot/v1\n"
HELLO_DOMAIN = b"colony/hello/v1\n"
HTTP_DOMAIN = b"colony/http/v1\n"
GENESIS = "0" * 64
MAX_SAFE = 2**53 - 1
MAX_DEPTH = 32

#: RFC 8032 section 7.1 TEST 1, TEST 2 and TEST 3 secret keys (= Ed25519 seeds)
ALICE_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
BOB_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
RELAY_SEED = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"
ZERO_SEED = "00" * 32

TS0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z in milliseconds
RTIME0 = 1_700_000_000_500
HELLO_NONCE = hashlib.sha256(b"colony test vector nonce").hexdigest()

GENERATED_BY = "tests/vectors/generate.py"


# ---------------------------------------------------------------------------------------------
# A reference canonical-JSON encoder, written from the spec (independent of collab/canonical.py)
# ---------------------------------------------------------------------------------------------

class Refused(ValueError):
    """The value is outside the canonical JSON domain."""


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF:
            raise Refused("lone surrogate")
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: Any, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise Refused("too deep")
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if not -MAX_SAFE <= v <= MAX_SAFE:
            raise Refused("integer out of range")
        return str(v)
    if isinstance(v, float):
        raise Refused("float")
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        for k in v:
            _string(k)  # refuses lone surrogates in keys before they are sorted
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_string(k) + ":" + _value(v[k], depth + 1) for k in keys) + "}"
    raise Refused(f"not JSON: {type(v).__name__}")


def canonical(v: Any) -> bytes:
    return _value(v, 0).encode("utf-8")


def strict_parse(text: str) -> Any:
    """JSON text -> value, refusing floats, NaN/Infinity and duplicate keys (as the spec says)."""

    def no_float(s: str) -> Any:
        raise Refused("float")

    def no_const(s: str) -> Any:
        raise Refused("constant")

    def pairs(p: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(p)
        if len(d) != len(p):
            raise Refused("duplicate key")
        return d

    return json.loads(text, parse_float=no_float, parse_constant=no_const, object_pairs_hook=pairs)


# ---------------------------------------------------------------------------------------------
# Protocol byte layouts
# ---------------------------------------------------------------------------------------------

class Key:
    def __init__(self, seed_hex: str) -> None:
        self.seed_hex = seed_hex
        self.sk = SigningKey(bytes.fromhex(seed_hex))
        self.pub = bytes(self.sk.verify_key).hex()

    def sign(self, msg: bytes) -> str:
        return self.sk.sign(msg).signature.hex()


ALICE, BOB, RELAY, ZERO = Key(ALICE_SEED), Key(BOB_SEED), Key(RELAY_SEED), Key(ZERO_SEED)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def event_signing_bytes(feed: str, kind: str, author: str, ts: int, ctx: int, body: Any) -> bytes:
    return EVENT_DOMAIN + canonical({"author": author, "body": body, "ctx": ctx, "feed": feed,
                                     "kind": kind, "ts": ts})


def make_event(key: Key, feed: str, kind: str, body: Any, ts: int, ctx: int = 0,
               author: str | None = None) -> tuple[dict[str, Any], bytes]:
    author = key.pub if author is None else author
    sb = event_signing_bytes(feed, kind, author, ts, ctx, body)
    ev = {"feed": feed, "kind": kind, "author": author, "ts": ts, "ctx": ctx, "body": body,
          "sig": key.sign(sb), "id": sha256(sb)}
    return ev, sb


def receipt_bytes(feed: str, seq: int, prev: str, event_id: str, rtime: int, relay: str) -> bytes:
    return RECORD_DOMAIN + canonical({"event": event_id, "feed": feed, "prev": prev, "relay": relay,
                                      "rtime": rtime, "seq": seq})


def snapshot_bytes(feed: str, seq: int, head: str, state: bytes, relay: str) -> bytes:
    return SNAPSHOT_DOMAIN + canonical({"feed": feed, "head": head, "relay": relay, "seq": seq,
                                        "state_hash": sha256(state)})


def hello_bytes(key: str, nonce: str, relay: str) -> bytes:
    return HELLO_DOMAIN + canonical({"key": key, "nonce": nonce, "relay": relay})


def nest(n: int, leaf: str) -> str:
    return "[" * n + leaf + "]" * n


# ---------------------------------------------------------------------------------------------
# canonical.json
# ---------------------------------------------------------------------------------------------

CANONICAL_VALID: list[tuple[str, str, str]] = [
    # (name, input JSON text, note)
    ("null", "null", ""),
    ("true", "true", ""),
    ("false", "false", ""),
    ("zero", "0", ""),
    ("negative_zero", "-0", "-0 is the integer 0"),
    ("max_safe_integer", "9007199254740991", "2**53-1, the largest allowed integer"),
    ("min_safe_integer", "-9007199254740991", "-(2**53-1), the smallest allowed integer"),
    ("empty_string", '""', ""),
    ("empty_array", "[]", ""),
    ("empty_object", "{}", ""),
    ("whitespace_removed", ' {\n "a" : [ 1 , 2 ] ,\t"b" : { } }\r\n', "no insignificant whitespace"),
    ("short_escapes", r'"\b\t\n\f\r\"\\"', "the seven two-character escapes"),
    ("control_characters", r'"\u0000\u0001\u000b\u001f"', "other C0 controls: \\u00xx, lowercase hex"),
    ("not_escaped", r'"\/ \u007f \u0080 \u0085 \u2028 \u2029 <>&\u0027"',
     "solidus, DEL, C1 controls, U+2028/2029, HTML characters and quote are written as themselves"),
    ("non_ascii", r'"\u00e9\u00df \u4e2d\u6587 \ud83d\ude00 \ufb01"',
     "non-ASCII is written as raw UTF-8, never as \\u escapes (the surrogate pair is one emoji)"),
    ("keys_ascii_order", '{"b":1,"a":2,"aa":3,"A":4,"":5,"_":6,"0":7}', "ASCII keys sort by byte"),
    ("keys_utf16_order", r'{"\ufb01":1,"\ud83d\ude00":2,"\u00e9":3,"z":4}',
     "U+1F600 (UTF-16 D83D DE00) sorts BEFORE U+FB01 although its code point is larger"),
    ("keys_rfc8785_example",
     (r'{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh",'
      r'"1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control",'
      r'"\u00f6":"Latin Small Letter O With Diaeresis"}'),
     "the key-sorting example of RFC 8785 section 3.2.3"),
    ("keys_with_escapes", r'{"\"":1,"\n":2,"\\":3,"a\u0000":4,"a":5}', "keys sort by their unescaped code units"),
    ("nested", '{"z":[1,{"b":null,"a":[true,false,"x"]}],"a":{"y":"x","x":{"c":[],"b":{}}}}',
     "objects are sorted at every level; arrays keep their order"),
    ("array_order_kept", '[3,1,2,"b","a",{"b":1,"a":2}]', ""),
    ("deepest_array", nest(32, "0"), "32 nested arrays: the innermost value is at depth 32, the limit"),
    ("deepest_empty_array", nest(33, ""), "33 nested arrays: the innermost (empty) array is at depth 32"),
]

CANONICAL_REJECTED: list[tuple[str, str, str]] = [
    ("float_fraction", "1.5", "floats are not allowed"),
    ("float_integral", "1.0", "any number with a fraction is a float, even 1.0"),
    ("float_exponent", "1e3", "any number with an exponent is a float"),
    ("float_exponent_upper", "1E2", ""),
    ("float_negative_zero", "-0.0", ""),
    ("float_in_object", '{"a":[1,2,{"b":0.5}]}', "refused wherever it is nested"),
    ("nan", "NaN", "not JSON"),
    ("infinity", "-Infinity", "not JSON"),
    ("integer_too_large", "9007199254740992", "2**53 is outside the safe range"),
    ("integer_too_small", "-9007199254740992", "-(2**53) is outside the safe range"),
    ("integer_huge", "123456789012345678901234567890", ""),
    ("lone_high_surrogate", r'"\ud800"', "strings must be valid Unicode"),
    ("lone_low_surrogate", r'"x\udc00y"', ""),
    ("reversed_surrogates", r'"\ude00\ud83d"', "a low surrogate before a high one is two lone surrogates"),
    ("lone_surrogate_key", r'{"\ud800":1}', "keys too"),
    ("duplicate_key", '{"a":1,"a":2}', "duplicate object keys are refused when parsing"),
    ("duplicate_key_nested", '{"a":{"b":1,"b":1}}', ""),
    ("too_deep", nest(33, "0"), "33 nested arrays around a value: the value is at depth 33"),
    ("too_deep_empty", nest(34, ""), "34 nested arrays: the innermost array is at depth 33"),
    ("too_deep_objects", '{"a":' * 33 + "0" + "}" * 33, "33 nested objects around a value"),
]


def gen_canonical() -> dict[str, Any]:
    valid = []
    for name, text, note in CANONICAL_VALID:
        out = canonical(strict_parse(text))
        valid.append({"name": name, "note": note, "input_json": text, "output": out.decode("utf-8"),
                      "output_hex": out.hex()})
    rejected = []
    for name, text, note in CANONICAL_REJECTED:
        try:
            canonical(strict_parse(text))
        except Refused:
            pass
        else:  # pragma: no cover - a mistake in this table
            raise AssertionError(f"{name} should be refused")
        rejected.append({"name": name, "note": note, "input_json": text})
    # Literal spot checks, so the reference encoder itself is pinned down.
    by_name = {v["name"]: v["output"] for v in valid}
    assert by_name["keys_utf16_order"] == '{"z":4,"\u00e9":3,"\U0001F600":2,"\ufb01":1}'
    assert by_name["keys_rfc8785_example"].startswith('{"\\r":"Carriage Return","1":"One","\u0080":')
    assert by_name["short_escapes"] == '"\\b\\t\\n\\f\\r\\"\\\\"'
    assert by_name["control_characters"] == '"\\u0000\\u0001\\u000b\\u001f"'
    return {
        "description": "Canonical JSON. valid: parse input_json (refusing floats, NaN/Infinity and "
                       "duplicate keys), encode canonically; the UTF-8 bytes must equal output_hex "
                       "(output is the same text). rejected: parsing or encoding must refuse the input.",
        "generated_by": GENERATED_BY,
        "valid": valid,
        "rejected": rejected,
    }


# ---------------------------------------------------------------------------------------------
# ids.json
# ---------------------------------------------------------------------------------------------

def gen_ids() -> dict[str, Any]:
    valid_feeds = [
        "doc/notes", "a/b", "doc/x", "chat/lobby", "tasks/board", "doc/team/2024/plan.md",
        "my-app_v2/A.Z~0:1@x+y=z-w", "doc/" + "n" * 200, "n" * 32 + "/x", "doc/events-log",
        "doc/events/today", "doc/...", "doc/.hidden", "doc/a.b/c..d", "doc/-/x", "doc/EVENTS",
        "doc/state/today", "doc/states",
    ]
    invalid_feeds = [
        ("doc", "no name"), ("doc/", "empty name"), ("/x", "empty namespace"), ("Doc/x", "uppercase namespace"),
        ("1doc/x", "namespace must start with a letter"), ("do.c/x", "dot in namespace"),
        ("n" * 33 + "/x", "namespace longer than 32"), ("doc/" + "n" * 201, "name longer than 200"),
        ("doc//x", "empty segment"), ("doc/a//b", "empty segment"), ("doc/x/", "trailing slash"),
        ("doc/a b", "space"), ("doc/a?b", "query character"), ("doc/a#b", "fragment character"),
        ("doc/a%2Fb", "percent"), ("doc/\u00e9", "non-ASCII"), ("doc/x\n", "trailing newline"),
        ("doc/.", "dot segment"), ("doc/..", "dot-dot segment"), ("doc/a/../b", "dot-dot segment"),
        ("doc/a/./b", "dot segment"), ("doc/events", "last segment 'events'"),
        ("doc/a/events", "last segment 'events'"), ("doc/state", "last segment 'state'"),
        ("doc/a/state", "last segment 'state'"), ("doc/stream", "last segment 'stream'"),
        ("doc/a/stream", "last segment 'stream'"), ("", "empty"),
    ]
    valid_kinds = ["doc.update", "feed.policy", "acl.grant", "a", "chat.msg", "x_y-z.0", "k" * 64]
    invalid_kinds = [("", "empty"), ("Doc.update", "uppercase"), ("1abc", "must start with a letter"),
                     (".a", "must start with a letter"), ("a/b", "slash"), ("k" * 65, "longer than 64"),
                     ("doc.update\n", "trailing newline"), ("a b", "space")]
    return {
        "description": "Feed ids and event kinds. Every valid one must be accepted and every invalid one "
                       "refused (error code invalid) by event validation, sub and unsub.",
        "generated_by": GENERATED_BY,
        "feeds": {"valid": valid_feeds, "invalid": [{"feed": f, "why": w} for f, w in invalid_feeds]},
        "kinds": {"valid": valid_kinds, "invalid": [{"kind": k, "why": w} for k, w in invalid_kinds]},
    }


# ---------------------------------------------------------------------------------------------
# keys.json
# ---------------------------------------------------------------------------------------------

def gen_keys() -> dict[str, Any]:
    keys = []
    for name, k, note in (("alice", ALICE, "RFC 8032 section 7.1 TEST 1"), ("bob", BOB, "RFC 8032 TEST 2"),
                          ("relay", RELAY, "RFC 8032 TEST 3"), ("zero", ZERO, "all-zero seed")):
        keys.append({"name": name, "note": note, "seed": k.seed_hex, "public": k.pub,
                     "key_file": k.seed_hex + "\n"})
    assert keys[0]["public"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    msg = b"colony"
    return {
        "description": "Ed25519 keys: seed (32 bytes, hex) -> public key (hex); key_file is the exact "
                       "content of a key file. signature: a plain Ed25519 signature by alice.",
        "generated_by": GENERATED_BY,
        "keys": keys,
        "signature": {"seed": ALICE.seed_hex, "message_hex": msg.hex(), "signature": ALICE.sign(msg)},
    }


# ---------------------------------------------------------------------------------------------
# Doc updates (deterministic Yjs v1 updates) shared by events.json and records.json
# ---------------------------------------------------------------------------------------------

def doc_updates() -> tuple[list[bytes], bytes, str]:
    """Three Yjs v1 updates (alice, bob, alice) and the merged state after all of them."""
    updates: list[bytes] = []

    def edit(client_id: int, known: list[bytes], pos: int, text: str) -> bytes:
        d = Doc(client_id=client_id)
        for u in known:
            d.apply_update(u)
        got: list[bytes] = []
        sub = d.observe(lambda e: got.append(e.update))
        d.get("text", type=Text).insert(pos, text)
        d.unobserve(sub)
        assert len(got) == 1
        return got[0]

    updates.append(edit(1, [], 0, "hello"))
    updates.append(edit(2, updates[:1], 5, " world"))
    updates.append(edit(1, updates[:2], 11, "!"))
    merged = Doc(client_id=3)
    for u in updates:
        merged.apply_update(u)
    text = str(merged.get("text", type=Text))
    assert text == "hello world!"
    return updates, merged.get_update(), text


DOC_FEED = "doc/notes"


def doc_events() -> list[tuple[str, Key, dict[str, Any], bytes]]:
    updates, _, _ = doc_updates()
    out = []
    for i, (name, key) in enumerate((("doc_update_1", ALICE), ("doc_update_2", BOB), ("doc_update_3", ALICE))):
        ev, sb = make_event(key, DOC_FEED, "doc.update", {"update": b64(updates[i])}, ts=TS0 + i * 1000, ctx=i)
        out.append((name, key, ev, sb))
    return out


CHAT_BODY_JSON = (r'{"text":"h\u00e9llo \ud83d\ude00\n\"quoted\"","\ufb01":1,"\ud83d\ude00":2,'
                  r'"n":-9007199254740991,"list":[null,true,false,0,{"z":"","a":[]}],"ctl":"\u0001\t"}')


# ---------------------------------------------------------------------------------------------
# events.json
# ---------------------------------------------------------------------------------------------

def event_entry(name: str, note: str, key: Key, ev: dict[str, Any], sb: bytes) -> dict[str, Any]:
    return {"name": name, "note": note, "seed": key.seed_hex, "event": ev,
            "signing_bytes_hex": sb.hex(), "signing_text": sb.decode("utf-8"), "id": ev["id"], "sig": ev["sig"]}


def gen_events() -> dict[str, Any]:
    entries = []
    for name, key, ev, sb in doc_events():
        entries.append(event_entry(name, "a doc.update carrying a Yjs v1 update (base64)", key, ev, sb))
    chat_body = strict_parse(CHAT_BODY_JSON)
    ev, sb = make_event(ALICE, "chat/lobby", "chat.msg", chat_body, ts=TS0 + 5000, ctx=7)
    entries.append(event_entry("generic_unicode_body", "non-ASCII text, escapes, UTF-16 key order and the "
                               "smallest integer inside the signed body", ALICE, ev, sb))
    ev, sb = make_event(ALICE, "tasks/board", "feed.policy", {"policy": "members"}, ts=TS0 + 6000)
    entries.append(event_entry("feed_policy_members", "first event of a members-only feed", ALICE, ev, sb))
    ev, sb = make_event(ALICE, "tasks/board", "acl.grant", {"key": BOB.pub, "read": True, "write": True},
                        ts=TS0 + 7000, ctx=1)
    entries.append(event_entry("acl_grant", "the owner grants bob read and write", ALICE, ev, sb))
    ev, sb = make_event(ZERO, "misc/empty", "x", None, ts=0)
    entries.append(event_entry("minimal", "null body, ts 0, ctx 0", ZERO, ev, sb))
    ev, sb = make_event(BOB, "misc/max", "k" * 64, nest_value(31), ts=MAX_SAFE, ctx=MAX_SAFE)
    entries.append(event_entry("limits", "longest kind, largest ts and ctx, deepest body (the innermost "
                               "value is at depth 32 of the signed object)", BOB, ev, sb))
    return {
        "description": "Signed events. signing bytes = 'colony/event/v1\\n' + canonical JSON of {author, body, "
                       "ctx, feed, kind, ts}; id = SHA-256(signing bytes) hex; sig = Ed25519(seed, signing "
                       "bytes) hex. event is the wire object.",
        "generated_by": GENERATED_BY,
        "events": entries,
    }


def nest_value(n: int) -> Any:
    """``n`` nested arrays around the integer 0."""
    v: Any = 0
    for _ in range(n):
        v = [v]
    return v


# ---------------------------------------------------------------------------------------------
# invalid_events.json
# ---------------------------------------------------------------------------------------------

def gen_invalid_events() -> dict[str, Any]:
    base, _ = make_event(ALICE, "chat/lobby", "chat.msg", {"text": "hi"}, ts=TS0, ctx=0)
    cases: list[tuple[str, str, str, str, str]] = []  # name, note, event_json, error, wire_error

    def add(name: str, note: str, ev: Any, error: str, wire_error: str | None = None,
            text: str | None = None) -> None:
        cases.append((name, note, text if text is not None else json.dumps(ev, ensure_ascii=False), error,
                      wire_error or error))

    def signed(**over: Any) -> dict[str, Any]:
        """The base event with fields replaced, with a correct id and signature for them."""
        f = {"feed": base["feed"], "kind": base["kind"], "author": ALICE.pub, "ts": base["ts"],
             "ctx": base["ctx"], "body": base["body"]}
        f.update(over)
        ev, _ = make_event(ALICE, f["feed"], f["kind"], f["body"], f["ts"], f["ctx"], author=f["author"])
        return ev

    def with_(**over: Any) -> dict[str, Any]:
        ev = dict(base)
        ev.update(over)
        return ev

    add("valid_base", "the unmodified event every other case starts from (must be ACCEPTED)", base, "")
    sig = bytearray(bytes.fromhex(base["sig"]))
    sig[0] ^= 0x01
    add("bad_signature", "one bit of sig flipped", with_(sig=sig.hex()), "bad_signature")
    other, _ = make_event(BOB, base["feed"], base["kind"], base["body"], base["ts"], base["ctx"], author=ALICE.pub)
    add("signed_by_other_key", "author is alice, signed by bob", other, "bad_signature")
    add("id_mismatch", "id is well-formed but not SHA-256 of the signing bytes",
        with_(id=sha256(b"something else")), "bad_signature")
    add("body_changed", "body changed after signing", with_(body={"text": "hI"}), "bad_signature")
    add("ts_changed", "ts changed after signing", with_(ts=base["ts"] + 1), "bad_signature")
    add("id_uppercase", "id must be lowercase hex", with_(id=base["id"].upper()), "invalid")
    add("sig_short", "sig must be 128 hex chars", with_(sig=base["sig"][:126]), "invalid")
    add("author_uppercase", "author must be lowercase hex", signed(author=ALICE.pub.upper()), "invalid")
    add("author_trailing_newline", "author with a trailing LF (correctly signed)", signed(author=ALICE.pub + "\n"),
        "invalid")
    for name, feed in (("feed_uppercase_namespace", "Chat/lobby"), ("feed_without_name", "chat"),
                       ("feed_trailing_slash", "chat/lobby/"), ("feed_empty_segment", "chat/a//b"),
                       ("feed_trailing_newline", "chat/lobby\n"), ("feed_last_segment_events", "chat/lobby/events"),
                       ("feed_dot_dot_segment", "chat/a/../b"), ("feed_not_string", 7)):
        add(name, f"feed {feed!r}, correctly signed", signed(feed=feed), "invalid")
    add("kind_uppercase", "kind 'Chat.msg', correctly signed", signed(kind="Chat.msg"), "invalid")
    add("kind_trailing_newline", "kind with a trailing LF", signed(kind="chat.msg\n"), "invalid")
    add("float_in_body", "a float in the body: invalid as an event; in a pub frame the frame parser already "
        "refuses the float, so the relay answers malformed", with_(body={"x": 1.5}), "invalid", "malformed")
    add("big_int_in_body", "2**53 in the body", with_(body={"x": 2**53}), "invalid")
    add("lone_surrogate_in_body", "a lone surrogate in a body string", None, "invalid",
        text=json.dumps(with_(body={"text": "\ud800"}), ensure_ascii=True))
    add("body_too_deep", "the innermost body value at depth 33 of the signed object",
        with_(body=nest_value(32)), "invalid")
    add("missing_ctx", "ctx missing", {k: v for k, v in base.items() if k != "ctx"}, "invalid")
    add("missing_body", "body missing (null is a body; absent is not)",
        {k: v for k, v in base.items() if k != "body"}, "invalid")
    add("extra_field", "unknown field", with_(extra=1), "invalid")
    add("ts_negative", "ts -1", signed(ts=-1), "invalid")
    add("ts_string", "ts as a string", with_(ts=str(base["ts"])), "invalid")
    add("ts_bool", "ts true", with_(ts=True), "invalid")
    add("ts_float", "ts 1.0: invalid as an event, malformed in a frame", with_(ts=1.0), "invalid", "malformed")
    add("ts_too_large", "ts 2**53", with_(ts=2**53), "invalid")
    add("ctx_negative", "ctx -1", signed(ctx=-1), "invalid")
    add("not_an_object", "an array instead of an event object", None, "invalid", text="[]")
    return {
        "description": "Events that must be refused. Parse event_json with an ordinary JSON parser and "
                       "validate it as an event: the error code must be error (valid_base has error '' and "
                       "must be accepted). Sent as {\"t\":\"pub\",\"event\":<event_json>} the relay must "
                       "answer an error frame with code wire_error.",
        "generated_by": GENERATED_BY,
        "cases": [{"name": n, "note": note, "event_json": t, "error": e, "wire_error": w}
                  for n, note, t, e, w in cases],
    }


# ---------------------------------------------------------------------------------------------
# records.json
# ---------------------------------------------------------------------------------------------

def gen_records() -> dict[str, Any]:
    _, merged, text = doc_updates()
    prev = GENESIS
    chain = []
    for seq, (name, _key, ev, _sb) in enumerate(doc_events(), start=1):
        rtime = RTIME0 + (seq - 1) * 1000
        rb = receipt_bytes(ev["feed"], seq, prev, ev["id"], rtime, RELAY.pub)
        rec = {"seq": seq, "prev": prev, "rtime": rtime, "relay": RELAY.pub, "rsig": RELAY.sign(rb), "event": ev}
        h = sha256(rb)
        chain.append({"seq": seq, "event_name": name, "record": rec, "receipt_bytes_hex": rb.hex(),
                      "receipt_text": rb.decode("utf-8"), "hash": h, "rsig": rec["rsig"]})
        prev = h
    sb = snapshot_bytes(DOC_FEED, 3, prev, merged, RELAY.pub)
    snap = {"feed": DOC_FEED, "seq": 3, "head": prev, "state": b64(merged), "relay": RELAY.pub,
            "rsig": RELAY.sign(sb)}
    return {
        "description": "A feed of three records sealed by the relay key (seed in keys.json). receipt bytes = "
                       "'colony/record/v1\\n' + canonical JSON of {event: id, feed, prev, relay, rtime, seq}; "
                       "hash = SHA-256(receipt bytes) hex; rsig = Ed25519(relay seed, receipt bytes); "
                       "record 1 has prev = genesis, record n has prev = hash of record n-1. The snapshot "
                       "covers the same feed at seq 3: snapshot bytes = 'colony/snapshot/v1\\n' + canonical "
                       "JSON of {feed, head, relay, seq, state_hash = SHA-256(state) hex}; the state is the "
                       "merged Yjs v1 update whose root text 'text' reads doc_text.",
        "generated_by": GENERATED_BY,
        "genesis": GENESIS,
        "relay_seed": RELAY.seed_hex,
        "relay": RELAY.pub,
        "feed": DOC_FEED,
        "chain": chain,
        "snapshot": {"snap": snap, "state_hash": sha256(merged), "snapshot_bytes_hex": sb.hex(),
                     "snapshot_text": sb.decode("utf-8"), "doc_text": text},
    }


# ---------------------------------------------------------------------------------------------
# hello.json
# ---------------------------------------------------------------------------------------------

def gen_hello() -> dict[str, Any]:
    hb = hello_bytes(ALICE.pub, HELLO_NONCE, RELAY.pub)
    return {
        "description": "Authentication. The relay's first frame is challenge; the client answers hello with "
                       "sig = Ed25519 over 'colony/hello/v1\\n' + canonical JSON of {key, nonce, relay}.",
        "generated_by": GENERATED_BY,
        "client_seed": ALICE.seed_hex,
        "relay_seed": RELAY.seed_hex,
        "challenge": {"t": "challenge", "nonce": HELLO_NONCE, "relay": RELAY.pub},
        "hello_bytes_hex": hb.hex(),
        "hello_text": hb.decode("utf-8"),
        "hello": {"t": "hello", "key": ALICE.pub, "sig": ALICE.sign(hb)},
        "welcome": {"t": "welcome", "key": ALICE.pub},
    }


# ---------------------------------------------------------------------------------------------
# http_auth.json
# ---------------------------------------------------------------------------------------------

def gen_http_auth() -> dict[str, Any]:
    path = "/feeds/dm/" + ".".join(sorted((ALICE.pub, BOB.pub)))
    sb = HTTP_DOMAIN + canonical({"key": ALICE.pub, "method": "GET", "path": path, "relay": RELAY.pub, "ts": TS0})
    sig = ALICE.sign(sb)
    return {
        "description": "A signed HTTP read (protocol section 15.1): Authorization: Colony key=K,ts=T,sig=S with "
                       "S = Ed25519 over 'colony/http/v1\\n' + canonical JSON of {key, method, path, relay, ts}; "
                       "accepted within 60000 ms of the relay's clock.",
        "generated_by": GENERATED_BY,
        "client_seed": ALICE.seed_hex,
        "relay_seed": RELAY.seed_hex,
        "method": "GET",
        "path": path,
        "ts": TS0,
        "signing_bytes_hex": sb.hex(),
        "signing_text": sb.decode("utf-8"),
        "authorization": f"Colony key={ALICE.pub},ts={TS0},sig={sig}",
    }


# ---------------------------------------------------------------------------------------------
# frames.json
# ---------------------------------------------------------------------------------------------

def gen_frames() -> dict[str, Any]:
    h = "ab" * 64
    bad_hello_sig = ALICE.sign(hello_bytes(ALICE.pub, "00" * 32, RELAY.pub))  # signed for another nonce
    invalid = [
        ("not_json", "hello", "malformed"),
        ("not_an_object", "[1,2]", "malformed"),
        ("string_frame", '"ping"', "malformed"),
        ("missing_type", '{"rid":1}', "malformed"),
        ("unknown_type", '{"t":"nope"}', "malformed"),
        ("relay_frame_type", '{"t":"pong"}', "malformed"),
        ("float", '{"t":"ping","x":1.5}', "malformed"),
        ("exponent", '{"t":"ping","x":1e3}', "malformed"),
        ("nan", '{"t":"ping","x":NaN}', "malformed"),
        ("duplicate_key", '{"t":"ping","t":"ping"}', "malformed"),
        ("trailing_garbage", '{"t":"ping"} x', "malformed"),
        ("rid_bool", '{"t":"ping","rid":true}', "malformed"),
        ("rid_null_is_absent", '{"t":"ping","rid":null}', ""),
        ("rid_object", '{"t":"ping","rid":{}}', "malformed"),
        ("rid_too_long", '{"t":"ping","rid":"' + "r" * 65 + '"}', "malformed"),
        ("rid_too_big", '{"t":"ping","rid":9007199254740992}', "malformed"),
        ("rid_lone_surrogate", r'{"t":"ping","rid":"\ud800"}', "malformed"),
        ("sub_since_negative", '{"t":"sub","feed":"doc/a","since":-1}', "malformed"),
        ("sub_since_string", '{"t":"sub","feed":"doc/a","since":"1"}', "malformed"),
        ("sub_since_bool", '{"t":"sub","feed":"doc/a","since":true}', "malformed"),
        ("sub_since_float_integral", '{"t":"sub","feed":"doc/a","since":1.0}', "malformed"),
        ("sub_since_exponent_integral", '{"t":"sub","feed":"doc/a","since":1E0}', "malformed"),
        ("rid_float_integral", '{"t":"ping","rid":1.0}', "malformed"),
        ("negative_zero_float", '{"t":"ping","x":-0.0}', "malformed"),
        ("sub_feed_missing", '{"t":"sub","since":0}', "invalid"),
        ("sub_bad_feed", '{"t":"sub","feed":"doc","since":0}', "invalid"),
        ("sub_feed_events", '{"t":"sub","feed":"doc/a/events","since":0}', "invalid"),
        ("unsub_bad_feed", '{"t":"unsub","feed":"Doc/a"}', "invalid"),
        ("pub_event_missing", '{"t":"pub"}', "invalid"),
        ("hello_bad_key", '{"t":"hello","key":"xyz","sig":"' + h + '"}', "malformed"),
        ("hello_missing_sig", '{"t":"hello","key":"' + ALICE.pub + '"}', "malformed"),
        ("hello_wrong_nonce", '{"t":"hello","key":"' + ALICE.pub + '","sig":"' + bad_hello_sig + '"}',
         "bad_signature"),
        ("watch_prefix_missing", '{"t":"watch"}', "invalid"),
        ("watch_prefix_uppercase", '{"t":"watch","prefix":"Auction/"}', "invalid"),
        ("watch_prefix_leading_slash", '{"t":"watch","prefix":"/a"}', "invalid"),
        ("watch_prefix_double_slash", '{"t":"watch","prefix":"a//"}', "invalid"),
        ("watch_prefix_not_string", '{"t":"watch","prefix":1}', "invalid"),
        ("watch_prefix_too_long", '{"t":"watch","prefix":"a/' + "x" * 201 + '"}', "invalid"),
        ("unwatch_bad_prefix", '{"t":"unwatch","prefix":"A"}', "invalid"),
    ]
    return {
        "description": "Client frames sent alone as one WebSocket text message on a fresh, unauthenticated "
                       "connection. error: the code of the error frame the relay answers (the connection "
                       "stays open); '' means the frame is accepted (for ping: a pong). batches: one message "
                       "with several frames; replies lists the reply frame types in order. first_reply: each "
                       "text sent alone on a fresh, unauthenticated connection; reply is exactly the first "
                       "frame the relay answers with after the challenge, without the member message "
                       "(error precedence, null members, and when errors carry rid, feed and id: "
                       "docs/protocol.md 13.3).",
        "generated_by": GENERATED_BY,
        "invalid": [{"name": n, "text": t, "error": e} for n, t, e in invalid],
        "first_reply": gen_first_replies(),
        "batches": [
            {"name": "two_pings", "text": '{"t":"ping","rid":1}\n{"t":"ping","rid":"b"}',
             "replies": [{"t": "pong", "rid": 1}, {"t": "pong", "rid": "b"}]},
            {"name": "crlf_and_blank_lines", "text": '\n{"t":"ping","rid":1}\r\n\r\n  \n{"t":"ping","rid":2}\n',
             "replies": [{"t": "pong", "rid": 1}, {"t": "pong", "rid": 2}]},
            {"name": "bad_frame_does_not_stop_the_batch", "text": '{"t":"ping","rid":1}\nnope\n{"t":"ping","rid":3}',
             "replies": [{"t": "pong", "rid": 1}, {"t": "error", "code": "malformed"}, {"t": "pong", "rid": 3}]},
        ],
    }


def gen_first_replies() -> list[dict[str, Any]]:
    ev, _ = make_event(ALICE, "chat/lobby", "chat.msg", {"text": "hi"}, ts=TS0, ctx=0)
    bad_sig = dict(ev, sig=("00" if ev["sig"][:2] != "00" else "11") + ev["sig"][2:])
    bad_feed = dict(ev, feed="Chat/lobby")  # invalid before the signature is looked at
    big = "x" * 300

    def pub(event: Any, rid: Any = 1, **extra: Any) -> str:
        return json.dumps(dict({"t": "pub", "rid": rid, "event": event}, **extra), separators=(",", ":"))

    def err(code: str, **members: Any) -> dict[str, Any]:
        return dict({"t": "error", "code": code}, **members)

    cases = [
        ("since_null_is_absent", "since: null is the same as since absent (0)",
         '{"t":"sub","feed":"doc/a","since":null,"rid":1}',
         {"t": "synced", "feed": "doc/a", "seq": 0, "head": GENESIS}),
        ("since_absent", "since absent is 0", '{"t":"sub","feed":"doc/a"}',
         {"t": "synced", "feed": "doc/a", "seq": 0, "head": GENESIS}),
        ("since_negative_zero", "-0 is the integer 0", '{"t":"sub","feed":"doc/a","since":-0}',
         {"t": "synced", "feed": "doc/a", "seq": 0, "head": GENESIS}),
        ("rid_null_is_absent", "rid: null is the same as rid absent", '{"t":"ping","rid":null}', {"t": "pong"}),
        ("bad_rid_wins", ("a bad rid makes the frame malformed before anything else is looked at; the error "
                          "has no rid and no feed"), '{"t":"sub","feed":"Doc/a","since":-1,"rid":true}',
         err("malformed")),
        ("float_wins", "a float anywhere makes the frame malformed (parsing); no rid, no feed",
         '{"t":"sub","feed":"doc/a","since":0,"rid":1,"x":0.5}', err("malformed")),
        ("unknown_type_has_no_rid", "an unknown t: malformed without rid", '{"t":"nope","rid":1}', err("malformed")),
        ("sub_feed_before_since", "sub: feed is checked before since; the error echoes the string feed",
         '{"t":"sub","feed":"Doc/a","since":-1,"rid":1}', err("invalid", rid=1, feed="Doc/a")),
        ("sub_since_with_rid_and_feed", "sub: a bad since with a good feed",
         '{"t":"sub","feed":"doc/a","since":"0","rid":"s"}', err("malformed", rid="s", feed="doc/a")),
        ("sub_feed_not_string", "sub: a feed that is not a string is not echoed",
         '{"t":"sub","feed":7,"rid":2}', err("invalid", rid=2)),
        ("unsub_bad_feed", "unsub: a bad feed, echoed", '{"t":"unsub","feed":"doc/","rid":3}',
         err("invalid", rid=3, feed="doc/")),
        ("hello_form_before_signature", "hello: key and sig are checked for form first",
         '{"t":"hello","key":"xyz","sig":"00","rid":"h"}', err("malformed", rid="h")),
        ("ping_feed_not_echoed", "only sub and unsub echo a top-level feed",
         '{"t":"ping","feed":"doc/a","rid":4,"x":"' + big + '"}', {"t": "pong", "rid": 4}),
        ("pub_event_missing", "pub without event: invalid, no feed, no id", '{"t":"pub","rid":5}',
         err("invalid", rid=5)),
        ("pub_event_null", "pub with event: null (a required member): as missing", '{"t":"pub","event":null,"rid":5}',
         err("invalid", rid=5)),
        ("pub_invalid_before_signature", ("pub: a bad feed id is found (invalid) before the bad signature; "
                                          "the error carries the event's id but not its feed (the event did "
                                          "not validate)"), pub(dict(bad_feed, sig=bad_sig["sig"])),
         err("invalid", rid=1, id=ev["id"])),
        ("pub_bad_signature", "pub: bad signature; id but no feed", pub(bad_sig, rid="p"),
         err("bad_signature", rid="p", id=ev["id"])),
        ("pub_top_level_feed_ignored", "pub: a top-level feed member is not echoed", pub(bad_sig, rid=6, feed="doc/x"),
         err("bad_signature", rid=6, id=ev["id"])),
        ("pub_access_after_validation", ("pub: a valid event to a signed feed from an anonymous connection: "
                                         "auth_required, with the event's feed and id"), pub(ev, rid=7),
         err("auth_required", rid=7, feed="chat/lobby", id=ev["id"])),
        ("watch_accepted", "watch: a prefix of feed ids; the reply echoes it",
         '{"t":"watch","prefix":"auction/","rid":"w"}', {"t": "watching", "prefix": "auction/", "rid": "w"}),
        ("watch_everything", "watch: the empty prefix watches every feed the connection may read",
         '{"t":"watch","prefix":"","rid":"e"}', {"t": "watching", "prefix": "", "rid": "e"}),
        ("watch_part_of_a_namespace", "watch: any start of a feed id, even within the namespace",
         '{"t":"watch","prefix":"auc"}', {"t": "watching", "prefix": "auc"}),
        ("watch_prefix_null", "watch: prefix null (a required member) is as missing: invalid, no feed",
         '{"t":"watch","prefix":null,"rid":8}', err("invalid", rid=8)),
        ("watch_feed_not_echoed", "watch: a bad prefix; the error carries rid only",
         '{"t":"watch","prefix":"Doc/","feed":"doc/a","rid":9}', err("invalid", rid=9)),
        ("unwatch_not_watched", "unwatch of a prefix not watched is answered unwatched anyway",
         '{"t":"unwatch","prefix":"doc/","rid":"u"}', {"t": "unwatched", "prefix": "doc/", "rid": "u"}),
    ]
    return [{"name": n, "note": note, "text": t, "reply": r} for n, note, t, r in cases]


# ---------------------------------------------------------------------------------------------

GENERATORS = {
    "canonical.json": gen_canonical,
    "ids.json": gen_ids,
    "keys.json": gen_keys,
    "events.json": gen_events,
    "invalid_events.json": gen_invalid_events,
    "records.json": gen_records,
    "hello.json": gen_hello,
    "frames.json": gen_frames,
    "ed25519.json": lambda: gen_ed25519(event_signing_bytes, ALICE_SEED, TS0),
    "doc_updates.json": lambda: gen_doc_updates(make_event, ALICE, TS0, b64(doc_updates()[0][0])),
    "http_auth.json": gen_http_auth,
    "yjs_concat.json": gen_yjs_concat,
}


def render(obj: Any) -> str:
    """The exact file text: 2-space indent, ASCII only (non-ASCII and lone surrogates as \\u escapes)."""
    return json.dumps(obj, indent=2, ensure_ascii=True) + "\n"


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, gen in GENERATORS.items():
        p = out / name
        p.write_text(render(gen()), encoding="ascii", newline="\n")
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="directory to write the JSON files into (default: next to this script)")
    args = ap.parse_args(argv)
    for p in generate(args.out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
