"""collab/sandbox.py: the sandbox's messages and the child's Checker, without processes."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collab.namespaces.doc import DocState
from collab.sandbox import BAD, OK, PANIC, Checker, Reply, Request

from tests.collab.yjs_inputs import crashers, edits

TAGS = st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**64 - 1))
BLOBS = st.lists(st.binary(max_size=40), max_size=5)


@given(st.text(max_size=20), TAGS, BLOBS, st.one_of(st.none(), st.binary(max_size=40)), BLOBS)
def test_request_round_trip(feed: str, tag: tuple[int, int], updates: list[bytes], state: bytes | None,
                            prelude: list[bytes]) -> None:
    req = Request(feed, tag, updates, state, prelude if state is not None else [], keep=len(updates) % 2 == 0,
                  full=len(feed) % 2 == 1)
    assert Request.decode(req.encode()) == req


@given(st.sampled_from(["miss", "split", "verdicts"]), st.lists(st.sampled_from([OK, BAD, PANIC]), max_size=20),
       st.text(max_size=50))
def test_reply_round_trip(kind: str, verdicts: list[int], reason: str) -> None:
    rep = {"miss": Reply(miss=True), "split": Reply(split=True)}.get(kind) or Reply(False, verdicts, reason)
    assert Reply.decode(rep.encode()) == rep


def _relay_state(*updates: bytes) -> DocState:
    st_ = DocState()
    for u in updates:
        st_.apply_update(u)
    return st_


def test_checker_passes_edits_and_holds_the_doc_at_the_relays_tag() -> None:
    a, b, c = edits("one ", "two ", "three")
    relay = _relay_state(a)
    chk = Checker()
    assert chk.handle(Request("doc/x", relay.tag, [b])).miss  # not held yet: ask for the state
    rep = chk.handle(Request("doc/x", relay.tag, [b, c], state=relay.state_update()))
    assert rep.verdicts == [OK, OK]
    relay.apply_update(b)
    relay.apply_update(c)
    tag, held = chk.docs["doc/x"]
    assert tag == relay.tag and held.text() == relay.text() == "one two three"
    assert chk.handle(Request("doc/x", relay.tag, [])).verdicts == []  # a hit: no state needed


def test_checker_stops_at_a_failure_and_forgets_the_doc() -> None:
    a, b = edits("one ", "two")
    relay = _relay_state()
    chk = Checker()
    rep = chk.handle(Request("doc/x", relay.tag, [a, b"\x05garbage", b], state=b""))
    assert rep.verdicts == [OK, BAD] and "merge" in rep.reason
    assert "doc/x" not in chk.docs


def test_checker_reports_panics_as_verdicts() -> None:
    for c in crashers(("panic",)):  # (a segfault would end this process: the supervisor tests have those)
        chk = Checker()
        assert chk.handle(Request("doc/p", (1, 0), list(c.prefix), state=b"")).verdicts == [OK] * len(c.prefix)
        rep = chk.handle(Request("doc/p", chk.docs["doc/p"][0], [c.update]))
        assert rep.verdicts == [PANIC], c.name
        assert rep.reason.startswith("panic:")


def test_a_check_encodes_what_the_request_changed_and_a_full_one_the_whole_document() -> None:
    """Every panicking input of the corpus is caught by encoding what its request changed (the
    test above); the whole document is encoded only on request (before a snapshot, on load), so a
    check costs O(update). The difference, shown on a document poisoned before the request (its
    prelude is applied unchecked): only the full check encodes the poisoned part."""
    [poison] = [c for c in crashers(("panic",)) if "docget" in c.name and not c.prefix][:1]
    [edit] = edits("fine")
    cheap = Checker().handle(Request("doc/p", (1, 0), [edit], state=b"", prelude=[poison.update]))
    assert cheap.verdicts == [OK]
    full = Checker().handle(Request("doc/p", (1, 0), [edit], state=b"", prelude=[poison.update], full=True))
    assert full.verdicts == [PANIC] and full.reason.startswith("panic:")


def test_checker_blames_the_update_whose_encode_panics() -> None:
    """The update applies and the encode of what it added panics: each update's additions are
    encoded as it is applied (before yrs squashes them into older blocks), so the culprit is
    known at once and the edit before it passes (until 2026-12-04 the encode ran once at the end
    of the request, and a request of several updates came back ``split``)."""
    [c] = [c for c in crashers(("panic",)) if c.name == "a_panic_after_apply"]
    [ok] = edits("fine")
    relay = _relay_state(c.base)
    rep = Checker().handle(Request("doc/p", relay.tag, [ok, c.update], state=relay.state_update()))
    assert rep.verdicts == [OK, PANIC] and rep.reason.startswith("panic:")
    assert Checker().handle(Request("doc/p", relay.tag, [ok], state=relay.state_update())).verdicts == [OK]


def test_an_updates_additions_are_encoded_before_they_are_squashed() -> None:
    """``DocState.apply_update(encode=True)`` folds exactly as the relay does and returns what the
    update added (the diff since the state vector before it): applied to the document before,
    it gives the document after. The encode costs O(update), not O(the run of text it extends)."""
    first, *more = edits(*[f"line {i}; " for i in range(40)])
    checked, relay = _relay_state(first), _relay_state(first)
    for u in more:
        before = checked.state_update()
        added = checked.apply_update(u, encode=True)
        relay.apply_update(u)
        assert added is not None and checked.digest == relay.digest and checked.sv == relay.sv
        again = _relay_state(before)
        again.apply_update(added)
        assert again.text() == checked.text() == relay.text()


def test_a_probe_leaves_the_held_document_alone() -> None:
    a, b = edits("one ", "two")
    relay = _relay_state(a)
    chk = Checker()
    chk.handle(Request("doc/x", relay.tag, [], state=relay.state_update()))
    assert chk.handle(Request("doc/x", (9, 9), [b, b"\x05garbage"], state=b"", keep=False)).verdicts == [OK, BAD]
    assert chk.handle(Request("doc/x", (9, 9), [b], state=b"", keep=False)).verdicts == [OK]
    assert chk.docs["doc/x"][0] == relay.tag  # still there, unchanged


def test_checker_keeps_at_most_max_docs() -> None:
    chk = Checker(max_docs=2)
    [u] = edits("x")
    for i in range(4):
        chk.handle(Request(f"doc/{i}", (i, 0), [u], state=b""))
    assert list(chk.docs) == ["doc/2", "doc/3"]


def test_an_update_left_pending_falls_back_to_the_diff_since_the_request_began() -> None:
    """An update whose dependencies are missing stays pending (its additions are not all in its
    transaction): the request encodes the diff since its start with the pending parts, as before,
    and the document the child holds is the relay's."""
    a, b, c = edits("one ", "two ", "three")
    relay = _relay_state(a)
    chk = Checker()
    assert chk.handle(Request("doc/x", relay.tag, [c], state=relay.state_update())).verdicts == [OK]
    relay.apply_update(c)
    assert relay.pending.entries  # c waits for b
    assert chk.handle(Request("doc/x", relay.tag, [b])).verdicts == [OK]
    relay.apply_update(b)
    tag, held = chk.docs["doc/x"]
    assert tag == relay.tag and held.text() == relay.text() == "one two three" and not held.pending.entries
