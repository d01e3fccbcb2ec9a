"""collab/namespaces/doc_waiting.py: what applied updates left pending is looked at again only
when what it waits for arrives, and parts that wait for one another integrate together."""
from __future__ import annotations

from collab.namespaces.doc import DocNamespace, DocState
from collab.namespaces.doc_pending import PendingBound
from collab.namespaces.doc_waiting import Pending

from .test_doc_pending import FEED, _mixed_updates, text_edits


def test_pending_parts_that_wait_for_one_another_integrate_together() -> None:
    """Found by the property test below: after a snapshot, the snapshot's pending part waits for
    a clock one later update holds, and that update needs a clock the snapshot's part holds. Each
    alone never integrates; as one entry they do, so folding reaches the state of the whole log."""
    ups = _mixed_updates([(0, 0, 0)] * 7 + [(1, 0, 0)] + [(0, 0, 0)] * 5 + [(1, 0, 0)])
    order = [4, 7, 8, 12, 0, 5, 1, 13, 10, 3, 2, 9, 6, 11]
    ns = DocNamespace(PendingBound(max_bytes=10**9, max_updates=10**6, max_deletes=10**6))
    whole, st_ = ns.initial(FEED), ns.initial(FEED)
    for u in ups:
        whole.apply_update(u)
    for seq, i in enumerate(order, start=1):
        st_.apply_update(ups[i])
        if seq == 12:
            st_ = ns.load(FEED, ns.dump(st_))
    assert not st_.pending
    assert st_.text() == whole.text() and st_.doc.get_state() == whole.doc.get_state()


def test_a_pending_update_is_looked_at_again_only_when_its_clock_is_reached() -> None:
    first, *rest = text_edits(6, 4)
    other = text_edits(50, 5)
    st_ = DocState()
    for u in rest:
        st_.apply_update(u)
    assert len(st_.pending) == 5
    looked = 0
    original = Pending.add

    class Counting(Pending):
        def add(self, update: bytes, sv: bytes, count: int = 1) -> bytes | None:
            nonlocal looked
            looked += 1
            return original(self, update, sv, count)

    counting = Counting()
    for u in rest:  # the same pending set, counted
        counting.add(u, st_.sv)
    st_.pending, looked = counting, 0
    for u in other:  # another writer's updates move the state vector but not client 4's clock
        st_.apply_update(u)
    assert looked == len(other)  # each new update once; none of the pending ones again
    st_.apply_update(first)
    assert not st_.pending and st_.text().startswith("abcdef")


def test_updates_that_need_one_another_wait_as_one_entry_and_are_counted_each() -> None:
    """Five updates of one writer after a missing first one: each needs the one before it, so
    they wait as one entry (looked at once when the first arrives), counted as five against
    max_doc_pending_updates."""
    first, *rest = text_edits(6, 4)
    st_ = DocState()
    for u in rest:
        st_.apply_update(u)
    assert len(st_.pending) == 5 and len(st_.pending.entries) == 1
    assert st_.pending.bytes == sum(len(p) for p in st_.pending)
    st_.apply_update(first)
    assert not st_.pending and not st_.pending.entries and st_.pending.bytes == 0
    assert st_.text() == "abcdef"
