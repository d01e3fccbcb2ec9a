"""A committed batch of doc updates folded as one run (DocState.apply_run, FeedCore.commit with
Namespace.fold_runs): the same document, digest and pending updates as folding them one by one,
and a reader right after the commit sees every record of it."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collab.events import GENESIS, Event, Record, b64
from collab.feedcore import FeedCore, record_line
from collab.keys import Keypair
from collab.namespaces.doc import DocNamespace, DocState
from collab.namespaces.doc_pending import PendingBound
from tests.collab.namespaces.test_doc_pending import _mixed_updates

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)
FEED = "doc/runs"
NS = DocNamespace(PendingBound(max_bytes=10**9, max_updates=10**6, max_deletes=10**6))


def records(updates: list[bytes]) -> list[Record]:
    out: list[Record] = []
    head = GENESIS
    for seq, u in enumerate(updates, start=1):
        ev = Event.create(AUTHOR, FEED, "doc.update", {"update": b64(u)}, ts=seq)
        out.append(Record.seal(RELAY, ev, seq, head, seq))
        head = out[-1].hash
    return out


def by_runs(recs: list[Record], cuts: list[int]) -> DocState:
    state = NS.initial(FEED)
    start = 0
    for end in [*sorted(set(cuts)), len(recs)]:
        if end > start:
            state = NS.apply_run(state, recs[start:end])
            start = end
    return state


def one_by_one(recs: list[Record]) -> DocState:
    state = NS.initial(FEED)
    for rec in recs:
        state = NS.apply(state, rec)
    return state


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 2)), min_size=1, max_size=14),
       st.randoms(use_true_random=False), st.lists(st.integers(0, 14), max_size=5))
def test_runs_fold_to_the_state_of_folding_one_by_one(script: list[tuple[int, int, int]], rnd: Any,
                                                       cuts: list[int]) -> None:
    """In any order (out-of-order edits leave parts pending), cut into any runs: the same text,
    state vector, digest and pending count as record by record, and the same snapshot."""
    ups = _mixed_updates(script)
    rnd.shuffle(ups)
    recs = records(ups)
    want, got = one_by_one(recs), by_runs(recs, cuts)
    assert got.text() == want.text()
    assert got.doc.get_state() == want.doc.get_state() == got.sv
    assert got.digest == want.digest and got.applied == want.applied == len(recs)
    assert len(got.pending) == len(want.pending)
    assert NS.load(FEED, NS.dump(got)).text() == NS.load(FEED, NS.dump(want)).text() == want.text()
    # and what comes after folds the same either way
    in_order = _mixed_updates(script)
    for extra in records(in_order)[:3]:
        NS.apply(got, extra)
        NS.apply(want, extra)
    assert got.text() == want.text()


def test_a_run_missing_a_predecessor_keeps_it_pending_then_integrates() -> None:
    ups = _mixed_updates([(0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 3, 0)])
    recs = records(ups)
    state = NS.apply_run(NS.initial(FEED), recs[1:])  # the first edit is not there yet
    assert len(state.pending) >= 1
    state = NS.apply_run(state, recs[:1])
    assert not state.pending and state.text() == one_by_one(recs).text()


def test_a_run_with_an_update_that_does_not_apply_folds_the_rest() -> None:
    good = _mixed_updates([(0, 0, 0), (0, 1, 0)])
    recs = records(good)
    bad_ev = Event.create(AUTHOR, FEED, "doc.update", {"update": b64(b"\xff\xff\xff")}, ts=9)
    bad = Record.seal(RELAY, bad_ev, 3, recs[-1].hash, 3)
    state = NS.apply_run(NS.initial(FEED), [*recs, bad])
    assert state.text() == one_by_one(recs).text() and state.applied == 3


def test_a_reader_right_after_a_commit_sees_every_record_of_it() -> None:
    core = FeedCore(FEED, NS)
    recs = records(_mixed_updates([(0, 0, 0), (1, 5, 0), (2, 9, 0), (0, 3, 2)]))
    seen: list[tuple[int, int]] = []
    done = core.commit([(r, record_line(r)) for r in recs[:3]],
                       [lambda rec, _line: seen.append((rec.seq, core.seq))])
    assert seen == [(1, 1), (2, 2), (3, 3)]  # listeners: each record placed (seq, head) in order
    assert len(done.frames) == 3
    assert core.state.text() == one_by_one(recs[:3]).text() and core.state.applied == 3
    core.commit([(recs[3], record_line(recs[3]))])  # a batch of one: applied as before
    assert core.state.text() == one_by_one(recs).text()
    assert core.bytes == sum(r.event.size for r in recs) and core.head == recs[-1].hash
    assert core.ids == {r.event.id: r.seq for r in recs}
