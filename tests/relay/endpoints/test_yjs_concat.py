"""relay.endpoints.yjs_concat: one writer's consecutive updates joined without the engine apply
exactly as the updates one after the other; anything else is left alone, and no bytes raise."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from relay.endpoints.yjs_concat import concat

TEXTS = st.text(alphabet=st.sampled_from("ab é🌍\n"), min_size=1, max_size=6)
ANY = st.recursive(st.none() | st.booleans() | st.integers(-2**31, 2**31) | st.floats(allow_nan=False) | TEXTS,
                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
                   max_leaves=6)
OPS = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), TEXTS),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 4)),
    st.tuples(st.just("format"), st.integers(0, 10**6), st.integers(1, 4)),
    st.tuples(st.just("set"), TEXTS, ANY),
    st.tuples(st.just("push"), st.integers(0, 10**6), ANY),
)


def transactions(doc: Doc, ops: list[tuple[Any, ...]]) -> list[bytes]:
    """One update per operation, as a Yjs client sends one per local transaction."""
    text, map_, array = doc.get("text", type=Text), doc.get("map", type=Map), doc.get("array", type=Array)
    out = []
    for op in ops:
        before = doc.get_state()
        s = str(text)

        def at(i: int, s: str = s) -> int:  # pycrdt's text offsets count UTF-8 bytes: cut at characters
            return len(s[:i].encode())

        if op[0] == "insert":
            text.insert(at(op[1] % (len(s) + 1)), op[2])
        elif op[0] == "delete" and s:
            i = op[1] % len(s)
            del text[at(i):at(min(len(s), i + op[2]))]
        elif op[0] == "format" and s:
            i = op[1] % len(s)
            text.format(at(i), at(min(len(s), i + op[2])), {"bold": True})
        elif op[0] == "set":
            map_[op[1]] = op[2]
        elif op[0] == "push":
            array.insert(op[1] % (len(array) + 1), op[2])
        update = doc.get_update(before)
        if update != b"\x00\x00":
            out.append(update)
    return out


def content(doc: Doc) -> tuple[Any, ...]:
    text = doc.get("text", type=Text)
    return (str(text), text.diff(), doc.get("map", type=Map).to_py(), doc.get("array", type=Array).to_py(),
            doc.get_state())


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, min_size=0, max_size=6), st.lists(OPS, min_size=2, max_size=12), st.data())
def test_joined_updates_apply_as_the_updates_in_order(history: list[tuple[Any, ...]], ops: list[tuple[Any, ...]],
                                                      data: st.DataObject) -> None:
    writer = Doc(client_id=data.draw(st.integers(1, 2**32 - 1)))
    other = Doc(client_id=0)  # another writer's text the edits may land in and delete from
    other.get("text", type=Text).insert(0, "xyz")
    writer.apply_update(other.get_update())
    base = transactions(writer, history)
    updates = transactions(writer, ops)
    if len(updates) < 2:
        return
    joined = concat(updates)
    assert joined is not None  # one client's consecutive transactions: always joined
    one_by_one, at_once = Doc(), Doc()
    for d in (one_by_one, at_once):
        d.apply_update(other.get_update())
        for u in base:
            d.apply_update(u)
    for u in updates:
        one_by_one.apply_update(u)
    at_once.apply_update(joined)
    assert content(at_once) == content(one_by_one) == content(writer)


def test_what_is_not_one_writers_run_is_left_alone() -> None:
    a, b = Doc(client_id=1), Doc(client_id=2)
    ta, tb = a.get("text", type=Text), b.get("text", type=Text)
    ups = []
    for i in range(3):
        before = a.get_state()
        ta.insert(len(ta), str(i))
        ups.append(a.get_update(before))
    tb.insert(0, "b")
    assert concat(ups) is not None
    assert concat(ups[:1]) is None                  # nothing to join
    assert concat([ups[0], ups[2]]) is None         # a clock gap: the middle edit is missing
    assert concat([ups[1], ups[0]]) is None         # out of order
    assert concat([ups[0], b.get_update()]) is None  # another writer
    assert concat([ups[0], ups[1] + b"\x00"]) is None  # bytes after the delete set
    assert concat([ups[0], a.get_update()]) is None  # two updates overlapping in clock
    assert concat(ups, max_structs=2) is None        # more structs than the admission reads


@given(st.lists(st.binary(max_size=40), min_size=2, max_size=4))
def test_any_bytes_give_bytes_or_none(updates: list[bytes]) -> None:
    out = concat(updates)
    assert out is None or isinstance(out, bytes)


VECTORS = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "yjs_concat.json").read_text())


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_vectors(case: dict[str, Any]) -> None:
    edits = [bytes.fromhex(e) for e in case["edits_hex"]]
    joined = concat(edits)
    assert (joined.hex() if joined is not None else None) == case["joined_hex"]
    if joined is not None:  # and the engine agrees that it is the edits in order
        one_by_one, at_once = Doc(), Doc()
        for e in edits:
            one_by_one.apply_update(e)
        at_once.apply_update(joined)
        assert str(at_once.get("text", type=Text)) == str(one_by_one.get("text", type=Text))
        assert at_once.get_state() == one_by_one.get_state()
