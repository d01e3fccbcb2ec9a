"""collab/namespaces/doc_pending.py: the update scanner agrees with Yjs, the admission never lets
pending updates past the bound (and never refuses updates that integrate), and pending updates
are looked at again only when what they wait for arrives."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, get_update, merge_updates

from collab.errors import TooLarge
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.lib0 import read_state_vector, var_uint
from collab.namespaces.base import Admission
from collab.namespaces.doc import DocNamespace, DocState
from collab.namespaces.doc_pending import Admission as PendingAdmission
from collab.namespaces.doc_pending import MAX_SCAN_STRUCTS, PendingBound, clocks, integrable, scan

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)
FEED = "doc/p"


def writer(client_id: int) -> tuple[Doc[Any], list[bytes]]:
    doc: Doc[Any] = Doc(client_id=client_id)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    return doc, out


def text_edits(n: int, client_id: int, chars: int = 1) -> list[bytes]:
    doc, out = writer(client_id)
    t = doc.get("text", type=Text)
    for i in range(n):
        t.insert(len(t), chr(97 + i % 26) * chars)
    return out


def event(update: bytes, ts: int = 0) -> Event:
    return Event.create(AUTHOR, FEED, "doc.update", {"update": b64(update)}, ts=ts)


def record(update: bytes, seq: int) -> Record:
    return Record.seal(RELAY, event(update, seq), seq, GENESIS, seq)


# -- the scanner ----------------------------------------------------------------------------

def test_scan_reads_clients_clocks_dependencies_and_deletions() -> None:
    a, ua = writer(1)
    ta = a.get("text", type=Text)
    ta += "hello 🙂"  # UTF-16 length 8 (the emoji takes two code units)
    b, ub = writer(2)
    b.apply_update(ua[0])
    tb = b.get("text", type=Text)
    tb.insert(3, "X")  # origin and right origin: client 1's items
    del tb[0:2]        # deletes two of client 1's items
    s = scan(ua[0])
    assert [(g.client, g.start, g.end, g.needs) for g in s.groups] == [(1, 0, 8, [])]
    s = scan(ub[1])  # ub[0] is what b received
    assert [(g.client, g.start, g.end) for g in s.groups] == [(2, 0, 1)]
    assert s.groups[0].needs == [(1, 2), (1, 3)]
    assert scan(ub[2]).deletes == {1: 2} and scan(ub[2]).ranges == 1


def test_scan_reads_every_content_kind_and_agrees_with_the_state_vector() -> None:
    doc, out = writer(5)
    m = doc.get("map", type=Map)
    arr = doc.get("arr", type=Array)
    with doc.transaction():
        m["n"] = 1
        m["f"] = 1.5
        m["s"] = "str"
        m["b"] = b"\x00\x01"
        m["l"] = [1, "two", None, True, {"k": [1.25]}]
        m["big"] = 2**40
        m["sub"] = Map({"x": Text("inner")})
        arr.extend([1, 2, 3])
        arr.append(Array(["a"]))
    s = scan(out[0])
    assert [(g.client, g.start, g.end) for g in s.groups] == [(5, 0, read_state_vector(doc.get_state())[5])]


def test_scan_refuses_garbage_and_stops_at_its_budget() -> None:
    with pytest.raises(ValueError, match="truncated"):
        scan(b"\x01\x01")
    many = get_update(text_edits(1, 3)[0], b"\x00")
    assert scan(many, limit=0).cut == "structs"
    ds = var_uint(0) + var_uint(1) + var_uint(99) + var_uint(3)
    ds += b"".join(var_uint(2 * i) + var_uint(1) for i in range(3))
    assert scan(ds, range_limit=2).cut == "ranges" and scan(ds, range_limit=2).ranges == 3


def test_clocks_reads_a_few_clients_of_a_state_vector() -> None:
    st_ = DocState()
    for u in text_edits(5, 1) + text_edits(3, 2):
        st_.apply_update(u)
    assert clocks(st_.sv, [1, 2, 99]) == {1: 5, 2: 3, 99: 0}
    assert clocks(st_.sv, []) == {}


# -- admission: what integrates is never refused, what may be pending is bounded -------------

def test_a_writers_chain_in_one_batch_is_admitted_however_long() -> None:
    ns = DocNamespace(PendingBound(max_bytes=100, max_updates=1, max_deletes=1))
    adm = Admission(0, RELAY.public_hex)
    st_ = ns.initial(FEED)
    for u in text_edits(300, 7, chars=5):  # each depends on the one before, all in one batch
        ns.validate(st_, event(u), adm)


def test_dangling_updates_are_refused_past_the_bound_within_one_batch() -> None:
    ns = DocNamespace(PendingBound(max_bytes=10_000, max_updates=5, max_deletes=100))
    dangling = text_edits(20, 8, chars=100)[1:]
    adm = Admission(0, RELAY.public_hex)
    st_ = ns.initial(FEED)
    for u in dangling[:5]:
        ns.validate(st_, event(u), adm)
    for u in dangling[5:]:
        with pytest.raises(TooLarge, match="max_doc_pending_updates"):
            ns.validate(st_, event(u), adm)
    accepted = dangling[:5]
    for seq, u in enumerate(accepted, start=1):  # the next batch sees them folded
        ns.apply(st_, record(u, seq))
    assert len(st_.pending) == 5
    with pytest.raises(TooLarge):
        ns.validate(st_, event(dangling[-1]), Admission(0, RELAY.public_hex))
    ns.validate(st_, event(text_edits(1, 9)[0]), Admission(0, RELAY.public_hex))  # others still write


@pytest.mark.parametrize(("bound", "limit"), [
    (PendingBound(max_bytes=1000, max_updates=100, max_deletes=10_000), "max_doc_pending_bytes"),
    (PendingBound(max_bytes=10**6, max_updates=100, max_deletes=50), "max_doc_pending_deletes"),
])
def test_bytes_and_deleted_ranges_are_bounded(bound: PendingBound, limit: str) -> None:
    ns = DocNamespace(bound)
    st_ = ns.initial(FEED)
    adm = Admission(0, RELAY.public_hex)
    refused = []
    for k in range(100):  # deletions of client 99's items, which never come
        ds = var_uint(0) + var_uint(1) + var_uint(99) + var_uint(20)
        ds += b"".join(var_uint(1000 * k + 2 * i) + var_uint(1) for i in range(20))
        try:
            ns.validate(st_, event(ds), adm)
        except TooLarge as exc:
            refused.append(str(exc))
    assert refused and all(limit in r for r in refused)


def test_an_unbounded_namespace_refuses_nothing() -> None:
    ns = DocNamespace(None)
    st_ = ns.initial(FEED)
    for u in text_edits(40, 8)[1:]:
        ns.validate(st_, event(u), Admission(0, RELAY.public_hex))


# -- hypothesis: the admission's verdict agrees with what Yjs then does ----------------------

def _mixed_updates(script: list[tuple[int, int, int]]) -> list[bytes]:
    """Three writers that see one another's edits (so they depend on each other's items)."""
    docs = [writer(i + 1) for i in range(3)]
    out: list[bytes] = []
    for who, pos, op in script:
        doc, ups = docs[who]
        t = doc.get("text", type=Text)
        n = len(ups)
        if op == 0 or len(t) == 0:
            t.insert(pos % (len(t) + 1), "ab"[pos % 2] * (1 + pos % 3))
        else:
            del t[pos % len(t)]
        new = ups[n:]
        out.extend(new)
        for other, _ in docs:
            if other is not doc:
                for u in new:
                    other.apply_update(u)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 2)), min_size=1, max_size=14),
       st.randoms(use_true_random=False), st.integers(0, 14))
def test_integrable_verdicts_never_leave_anything_pending(script: list[tuple[int, int, int]], rnd: Any,
                                                          cut: int) -> None:
    """Whatever the order, an update the admission says integrates leaves nothing pending once
    applied; applying everything integrates everything; in the writers' own order nothing is
    ever counted as pending; and a snapshot at any point folds to the same state."""
    ups = _mixed_updates(script)
    ns = DocNamespace(PendingBound(max_bytes=10**9, max_updates=10**6, max_deletes=10**6))
    in_order = ns.initial(FEED)
    for seq, u in enumerate(ups, start=1):
        s = scan(u)
        assert integrable(s, clocks(in_order.sv, {g.client for g in s.groups} | set(s.deletes)
                                    | {c for g in s.groups for c, _ in g.needs}))
        ns.apply(in_order, record(u, seq))
    mixed = list(ups)
    rnd.shuffle(mixed)
    st_ = ns.initial(FEED)
    for seq, u in enumerate(mixed, start=1):
        adm = PendingAdmission()
        before = len(st_.pending), st_.pending.bytes
        adm.check(u, st_.sv, st_.pending, PendingBound(10**9, 10**6, 10**6))
        said_integrable = adm.added == 0
        st_.apply_update(u)
        if said_integrable:
            assert len(st_.pending) <= before[0]
        if seq == cut:
            st_ = ns.load(FEED, ns.dump(st_))
    assert not st_.pending
    assert st_.text() == in_order.text()
    assert st_.doc.get_state() == in_order.doc.get_state()


def test_an_update_too_large_to_examine_counts_by_bytes_and_never_stalls_the_scan() -> None:
    """More than MAX_SCAN_STRUCTS structs: not examined (its cost stays bounded), admitted while
    the document has room, refused once waiting updates would pass max_doc_pending_bytes."""
    doc, ups = writer(6)
    t = doc.get("text", type=Text)
    for i in range(MAX_SCAN_STRUCTS + 50):
        t.insert(0 if i % 2 else len(t), "x")
    big = merge_updates(*ups)
    assert scan(big).cut == "structs"
    ns = DocNamespace(PendingBound(max_bytes=3 * len(big), max_updates=100, max_deletes=10))
    st_ = ns.initial(FEED)
    adm = Admission(0, RELAY.public_hex)
    for _ in range(3):
        ns.validate(st_, event(big), adm)
    with pytest.raises(TooLarge, match="max_doc_pending_bytes"):
        ns.validate(st_, event(big), adm)
    ns.apply(st_, record(big, 1))
    assert not st_.pending and len(st_.text()) == MAX_SCAN_STRUCTS + 50  # it did integrate
