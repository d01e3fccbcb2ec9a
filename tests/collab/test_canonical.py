"""Property tests of the canonical JSON encoding and of event signing.

Values are drawn from the whole canonical domain (null, booleans, safe integers, any valid
Unicode string including astral characters and controls, arrays, objects) and the encoder is
checked against its defining properties and against the independent reference encoder in
``tests/vectors/generate.py``.
"""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab import frames
from collab.canonical import (
    MAX_DEPTH,
    MAX_SAFE_INT,
    CanonicalError,
    canonical,
    parse_json,
)
from collab.errors import BadSignature, ColonyError, InvalidEvent
from collab.events import Event, check_feed
from collab.keys import Keypair, verify


def _load_reference() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "vectors" / "generate.py"
    spec = importlib.util.spec_from_file_location("colony_vector_generator", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REFERENCE = _load_reference()

# -- strategies ----------------------------------------------------------------------------------

#: every Unicode scalar value (no surrogates), biased towards the interesting corners
chars = st.one_of(
    st.characters(codec="utf-8"),
    st.characters(min_codepoint=0, max_codepoint=0x20),
    st.sampled_from(['"', "\\", "/", "\x7f", "\x85", "\u2028", "\ufb01", "\uffff", "\U0001F600", "\U0010FFFF"]),
)
texts = st.text(chars, max_size=12)
safe_ints = st.one_of(st.integers(-MAX_SAFE_INT, MAX_SAFE_INT),
                      st.sampled_from([0, 1, -1, MAX_SAFE_INT, -MAX_SAFE_INT]))
scalars = st.one_of(st.none(), st.booleans(), safe_ints, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=5)),
    max_leaves=30,
)
objects = st.dictionaries(texts, values, max_size=6)
unsafe_ints = st.one_of(st.integers(min_value=MAX_SAFE_INT + 1), st.integers(max_value=-MAX_SAFE_INT - 1))


def same(a: Any, b: Any) -> bool:
    """Structural equality that, unlike ==, tells True from 1 and keeps dict order irrelevant."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def shuffled(v: Any, rnd: random.Random) -> Any:
    """The same value with every object's insertion order permuted."""
    if isinstance(v, dict):
        items = list(v.items())
        rnd.shuffle(items)
        return {k: shuffled(x, rnd) for k, x in items}
    if isinstance(v, list):
        return [shuffled(x, rnd) for x in v]
    return v


# -- canonical encoding -----------------------------------------------------------------------

@given(values)
def test_canonical_is_a_fixed_point(v: Any) -> None:
    once = canonical(v)
    assert canonical(parse_json(once)) == once
    assert canonical(parse_json(once.decode("utf-8"))) == once


@given(values)
def test_output_is_json_that_loads_back_to_the_same_value(v: Any) -> None:
    out = canonical(v)
    text = out.decode("utf-8")  # valid UTF-8
    assert same(json.loads(text), v)
    assert same(parse_json(text), v)


@given(values, st.randoms(use_true_random=False))
def test_key_insertion_order_never_changes_the_bytes(v: Any, rnd: random.Random) -> None:
    assert canonical(shuffled(v, rnd)) == canonical(v)


@given(values)
def test_matches_the_independent_reference_encoder(v: Any) -> None:
    assert canonical(v) == REFERENCE.canonical(v)


@given(values)
def test_no_raw_controls_so_no_raw_newline(v: Any) -> None:
    text = canonical(v).decode("utf-8")
    assert not any(ord(c) < 0x20 for c in text)  # which is what makes "\n"-separated batches safe
    assert "\n" not in text


@given(texts)
def test_non_ascii_is_written_raw(s: str) -> None:
    text = canonical(s).decode("utf-8")
    for c in s:
        if ord(c) >= 0x7F:
            assert c in text
    if all(0x20 <= ord(c) and c not in '"\\' for c in s):
        assert text == '"' + s + '"'


@given(objects)
def test_keys_are_sorted_by_utf16_code_units(d: dict[str, Any]) -> None:
    keys = [k for k, _ in _pairs(canonical(d))]
    assert sorted(keys) == sorted(d)
    units = [k.encode("utf-16-be") for k in keys]  # big-endian bytes order like 16-bit code units
    assert units == sorted(units)


def _pairs(out: bytes) -> list[tuple[str, Any]]:
    return json.loads(out, object_pairs_hook=lambda p: p)  # type: ignore[no-any-return]


@given(unsafe_ints, values)
def test_integers_outside_the_safe_range_are_refused(n: int, v: Any) -> None:
    for bad in (n, [v, n], {"k": n, "v": v}):
        with pytest.raises(CanonicalError):
            canonical(bad)


@given(st.floats(allow_nan=True, allow_infinity=True), values)
def test_floats_are_refused_everywhere(f: float, v: Any) -> None:
    for bad in (f, [v, f], {"k": [{"x": f}], "v": v}):
        with pytest.raises(CanonicalError):
            canonical(bad)
    with pytest.raises(CanonicalError):
        parse_json(json.dumps([f]))  # "[1.5]", "[1e+300]", "[NaN]", "[Infinity]"


@given(texts, st.integers(0xD800, 0xDFFF), texts)
def test_lone_surrogates_are_refused(a: str, s: int, b: str) -> None:
    bad = a + chr(s) + b
    with pytest.raises(CanonicalError):
        canonical(bad)
    with pytest.raises(CanonicalError):
        canonical({bad: 1})


@given(st.integers(0, 3))
def test_depth_limit(extra: int) -> None:
    ok: Any = 0
    for _ in range(MAX_DEPTH):
        ok = [ok]
    canonical(ok)
    bad: Any = ok
    for _ in range(extra + 1):
        bad = {"x": bad}
    with pytest.raises(CanonicalError):
        canonical(bad)


@given(st.lists(texts, min_size=1, max_size=4))
def test_duplicate_keys_are_refused_when_parsing(keys: list[str]) -> None:
    body = ",".join(json.dumps(k) + ":1" for k in [*keys, keys[0]])
    with pytest.raises(CanonicalError, match="duplicate object key"):
        parse_json("{" + body + "}")


# -- events --------------------------------------------------------------------------------------

KEYS = [Keypair.from_seed(bytes([i]) * 32) for i in range(3)]
namespaces = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9._~:@+=-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", ".."))
feeds = st.builds(lambda ns, segs: ns + "/" + "/".join(segs), namespaces, st.lists(segments, min_size=1, max_size=4)
                  ).filter(lambda f: len(f.split("/", 1)[1]) <= 200 and f.rsplit("/", 1)[1] not in ("events", "state"))
kinds = st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)
stamps = st.integers(0, MAX_SAFE_INT)
events = st.builds(
    lambda key, feed, kind, body, ctx, ts: Event.create(key, feed, kind, body, ctx=ctx, ts=ts),
    st.sampled_from(KEYS), feeds, kinds, values, stamps, stamps,
)


@given(feeds)
def test_generated_feeds_are_valid(feed: str) -> None:
    assert check_feed(feed) == feed


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_event_wire_round_trip(ev: Event) -> None:
    wire = ev.to_wire()
    assert Event.from_wire(wire) == ev
    back = Event.from_wire(parse_json(frames.encode({"t": "pub", "event": wire}))["event"])
    assert back == ev and back.size == ev.size == len(ev.signing_bytes())
    assert back.verify()


HEX = "0123456789abcdef"


def _other_hex(c: str, rnd: random.Random) -> str:
    return rnd.choice([h for h in HEX if h != c])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(events, st.data())
def test_any_change_to_a_signed_field_fails_verification(ev: Event, data: st.DataObject) -> None:
    wire = ev.to_wire()
    field = data.draw(st.sampled_from(["feed", "kind", "author", "ts", "ctx", "body", "sig", "id"]), "field")
    rnd = data.draw(st.randoms(use_true_random=False), "rnd")
    bad = dict(wire)
    if field in ("author", "sig", "id"):
        s = wire[field]
        i = rnd.randrange(len(s))
        bad[field] = s[:i] + _other_hex(s[i], rnd) + s[i + 1:]
    elif field in ("ts", "ctx"):
        bad[field] = data.draw(stamps.filter(lambda n: n != wire[field]), "int")
    elif field == "feed":
        bad[field] = data.draw(feeds.filter(lambda f: f != wire["feed"]), "feed")
    elif field == "kind":
        bad[field] = data.draw(kinds.filter(lambda k: k != wire["kind"]), "kind")
    else:
        bad[field] = data.draw(values.filter(lambda b: canonical(b) != canonical(wire["body"])), "body")
    with pytest.raises(BadSignature):
        Event.from_wire(bad)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(events, st.data())
def test_any_single_byte_change_of_the_signing_bytes_fails(ev: Event, data: st.DataObject) -> None:
    signing = ev.signing_bytes()
    i = data.draw(st.integers(0, len(signing) - 1), "index")
    b = data.draw(st.integers(0, 255).filter(lambda x: x != signing[i]), "byte")
    changed = signing[:i] + bytes([b]) + signing[i + 1:]
    assert not verify(bytes.fromhex(ev.author), changed, bytes.fromhex(ev.sig))
    assert REFERENCE.sha256(changed) != ev.id


@given(st.sampled_from(KEYS), values)
def test_event_signing_bytes_match_the_reference(key: Keypair, body: Any) -> None:
    ev = Event.create(key, "misc/p", "k", body, ctx=1, ts=2)
    expected = REFERENCE.event_signing_bytes("misc/p", "k", key.public_hex, 2, 1, body)
    assert ev.signing_bytes() == expected
    assert ev.id == REFERENCE.sha256(expected)


@given(st.sampled_from(KEYS), st.one_of(st.floats(), unsafe_ints))
def test_non_canonical_bodies_are_invalid(key: Keypair, bad: Any) -> None:
    with pytest.raises(InvalidEvent):
        Event.create(key, "misc/p", "k", {"x": [bad]}, ts=0)
    ev = Event.create(key, "misc/p", "k", None, ts=0).to_wire()
    ev["body"] = {"x": [bad]}
    with pytest.raises(InvalidEvent):
        Event.from_wire(ev)


@given(st.sampled_from(KEYS), st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SAFE_INT + 1),
                                        st.booleans(), texts))
def test_bad_timestamps_are_invalid(key: Keypair, ts: Any) -> None:
    ev = Event.create(key, "misc/p", "k", None, ts=0).to_wire()
    for field in ("ts", "ctx"):
        with pytest.raises(ColonyError) as info:
            Event.from_wire(dict(ev, **{field: ts}))
        assert info.value.code == "invalid"
        with pytest.raises(InvalidEvent):
            Event.create(key, "misc/p", "k", None, **{field: ts})  # type: ignore[arg-type]
