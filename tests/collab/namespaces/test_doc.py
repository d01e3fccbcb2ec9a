"""collab/namespaces/doc.py: doc.update validation, folding (in and out of causal order), the
pending updates a snapshot keeps, and dump/load."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab.errors import InvalidEvent
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.namespaces.base import Admission
from collab.namespaces.doc import DocNamespace, DocState, decode_update

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)
FEED = "doc/notes"
NS = DocNamespace()
ADM = Admission(0, RELAY.public_hex)


def edits(*parts: str, client_id: int = 7) -> list[bytes]:
    """One writer's successive edits (each appends a part), as incremental Yjs updates."""
    doc: Doc[Any] = Doc(client_id=client_id)
    text = doc.get("text", type=Text)
    out: list[bytes] = []
    for part in parts:
        sv = doc.get_state()
        text.insert(len(text), part)
        out.append(doc.get_update(sv))
    return out


def records(updates: list[bytes]) -> list[Record]:
    out: list[Record] = []
    head = GENESIS
    for seq, u in enumerate(updates, start=1):
        ev = Event.create(AUTHOR, FEED, "doc.update", {"update": b64(u)}, ts=seq)
        out.append(Record.seal(RELAY, ev, seq, head, seq))
        head = out[-1].hash
    return out


def fold(recs: list[Record], state: DocState | None = None) -> DocState:
    state = NS.initial(FEED) if state is None else state
    for r in recs:
        NS.validate(state, r.event, ADM)
        state = NS.apply(state, r)
    return state


PARTS = ("alpha ", "beta ", "gamma ", "delta")
UPDATES = edits(*PARTS)
FULL = "".join(PARTS)


def test_in_order_fold_and_view() -> None:
    st_ = fold(records(UPDATES))
    assert st_.text() == FULL and st_.applied == len(UPDATES) and not st_.pending
    assert NS.view(st_) == {"text": FULL}
    assert NS.initial(FEED).text() == "" and NS.initial(FEED).applied == 0


@pytest.mark.parametrize("body", [
    None, [], "x", {}, {"update": ""}, {"update": b64(b"")}, {"update": b64(b"\xff\xff\xff")},
    {"update": b64(UPDATES[0]), "extra": 1}, {"updates": b64(UPDATES[0])}, {"update": 42},
])
def test_validate_refuses_what_is_not_one_yjs_update(body: Any) -> None:
    ev = Event.create(AUTHOR, FEED, "doc.update", body)
    with pytest.raises(InvalidEvent):
        NS.validate(NS.initial(FEED), ev, ADM)


def test_validate_accepts_a_capability_field_and_refuses_other_kinds() -> None:
    assert decode_update({"update": b64(UPDATES[0]), "cap": "token"}) == UPDATES[0]
    ev = Event.create(AUTHOR, FEED, "doc.note", {"update": b64(UPDATES[0])})
    with pytest.raises(InvalidEvent, match=r"doc\.update only"):
        NS.validate(NS.initial(FEED), ev, ADM)


def test_out_of_order_updates_stay_pending_until_their_dependencies_arrive() -> None:
    recs = records([UPDATES[2], UPDATES[1], UPDATES[0], UPDATES[3]])
    st_ = fold(recs[:1])
    assert st_.text() == "" and len(st_.pending) == 1  # depends on edits not yet seen
    st_ = fold(recs[1:2], st_)
    assert st_.text() == "" and len(st_.pending) == 2
    st_ = fold(recs[2:3], st_)
    assert st_.text() == "alpha beta gamma " and not st_.pending  # the first edit integrates all three
    st_ = fold(recs[3:], st_)
    assert st_.text() == FULL and st_.applied == 4


def test_snapshot_keeps_pending_updates() -> None:
    """Dump while an update is pending, load, fold the rest: the same state as folding the whole log."""
    recs = records([UPDATES[1], UPDATES[0]])
    half = fold(recs[:1])
    assert half.pending
    loaded = NS.load(FEED, NS.dump(half))
    assert loaded.pending and loaded.text() == ""
    assert fold(recs[1:], loaded).text() == fold(recs).text() == "alpha beta "


def test_a_snapshot_of_many_dangling_updates_keeps_them_all() -> None:
    many = edits(*[f"{i} " for i in range(40)])
    st_ = fold(records(many[1:]))  # the first edit never comes: nothing integrates
    assert st_.text() == "" and len(st_.pending) == 39
    whole = "".join(f"{i} " for i in range(40))
    assert fold(records(many[:1]), NS.load(FEED, NS.dump(st_))).text() == whole


def test_an_update_that_does_not_apply_is_skipped_but_counted() -> None:
    """A record sealed without validation (a buggy relay) cannot stop the fold."""
    ev = Event.create(AUTHOR, FEED, "doc.update", {"update": b64(b"\x01\x02")})
    st_ = NS.apply(NS.initial(FEED), Record.seal(RELAY, ev, 1, GENESIS, 1))
    assert st_.applied == 1 and st_.text() == ""


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(len(UPDATES)))), st.integers(0, len(UPDATES)))
def test_any_order_converges_and_any_snapshot_point_gives_the_same_state(order: list[int], cut: int) -> None:
    recs = records([UPDATES[i] for i in order])
    whole = fold(recs)
    assert whole.text() == FULL and not whole.pending
    resumed = fold(recs[cut:], NS.load(FEED, NS.dump(fold(recs[:cut]))))
    assert resumed.text() == FULL
    assert resumed.doc.get_state() == whole.doc.get_state()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="abc xyz", min_size=1, max_size=4), min_size=1, max_size=4),
       st.lists(st.text(alphabet="123", min_size=1, max_size=4), min_size=1, max_size=4),
       st.randoms(use_true_random=False))
def test_two_writers_interleaved_converge(a: list[str], b: list[str], rnd: Any) -> None:
    ua, ub = edits(*a, client_id=1), edits(*b, client_id=2)
    mixed = ua + ub
    rnd.shuffle(mixed)
    one, two = fold(records(ua + ub)), fold(records(mixed))
    assert one.text() == two.text()
    assert sorted(one.text()) == sorted("".join(a) + "".join(b))


def test_quarantined_seqs_reads_a_snapshot_meta_strictly() -> None:
    from collab.namespaces.doc import quarantined_seqs

    assert quarantined_seqs('{"access": {}, "quarantined": [2, 5]}') == [2, 5]
    assert quarantined_seqs(None) == [] and quarantined_seqs("{}") == []
    assert quarantined_seqs("not json") == [] and quarantined_seqs("[1]") == []
    assert quarantined_seqs('{"quarantined": [1, "x", 2.5, 3]}') == [1, 3]
