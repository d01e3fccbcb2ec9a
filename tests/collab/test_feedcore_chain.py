"""collab/feedcore_chain.py: ``link`` classifies a record against a chain's (seq, head)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collab.events import GENESIS, Event, Record
from collab.feedcore_chain import link
from collab.keys import Keypair

RELAY = Keypair.from_seed(b"R" * 32)
AUTHOR = Keypair.from_seed(b"A" * 32)
FEED = "misc/chain"


def chain(n: int, relay: Keypair = RELAY, tag: str = "") -> list[Record]:
    out: list[Record] = []
    head = GENESIS
    for seq in range(1, n + 1):
        ev = Event.create(AUTHOR, FEED, "note", {"i": seq, "tag": tag}, ts=1_700_000_000_000 + seq)
        out.append(Record.seal(relay, ev, seq, head, 1_700_000_000_000 + seq))
        head = out[-1].hash
    return out


N = 8
CHAIN = chain(N)
FORK = chain(N, tag="fork")  # same seqs, other events: every record after seq 1 links to another head
HEADS = [GENESIS] + [r.hash for r in CHAIN]  # HEADS[k]: the head after k records


def test_the_four_outcomes() -> None:
    r1, r2, r3 = CHAIN[:3]
    assert link(0, GENESIS, r1) == "next"
    assert link(1, r1.hash, r2) == "next"
    assert link(1, r1.hash, r1) == "old"      # a resend
    assert link(2, r2.hash, r1) == "old"
    assert link(1, r1.hash, r3) == "gap"      # seq 2 is missing
    assert link(1, "f" * 64, r2) == "break"   # the next seq, but not after our head
    assert link(1, FORK[0].hash, r2) == "break"
    assert link(1, None, r2) == "next"        # head not known: only the seq is checked


def test_old_wins_over_a_wrong_head_and_gap_over_a_wrong_head() -> None:
    r1, r2, r3 = CHAIN[:3]
    assert link(2, "f" * 64, r2) == "old"
    assert link(0, "f" * 64, r3) == "gap"
    assert link(5, None, r1) == "old"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, N), st.integers(1, N), st.sampled_from(["right", "unknown", "forked"]))
def test_link_is_determined_by_seq_and_head(k: int, j: int, head_kind: str) -> None:
    """Against a chain of k records: records at or below k are old, k+1 is next (break when the
    head is another chain's), beyond k+1 a gap."""
    rec = CHAIN[j - 1]
    head = {"right": HEADS[k], "unknown": None, "forked": FORK[k - 1].hash if k else "f" * 64}[head_kind]
    got = link(k, head, rec)
    if j <= k:
        assert got == "old"
    elif j > k + 1:
        assert got == "gap"
    else:
        assert got == ("break" if head_kind == "forked" else "next")


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(N))), st.lists(st.integers(0, N - 1), max_size=6))
def test_a_follower_that_keeps_only_next_records_rebuilds_the_chain(order: list[int], dups: list[int]) -> None:
    """Records arrive in any order, with resends; a follower that keeps ``next`` records, drops
    ``old`` ones and buffers ``gap`` ones ends at the chain's head, in order, never breaking."""
    arrivals = [CHAIN[i] for i in order] + [CHAIN[i] for i in dups]
    seq, head = 0, GENESIS
    kept: list[Record] = []
    buffered: dict[int, Record] = {}
    for rec in arrivals:
        buffered[rec.seq] = rec
        while seq + 1 in buffered:
            nxt = buffered.pop(seq + 1)
            assert link(seq, head, nxt) == "next"
            kept.append(nxt)
            seq, head = nxt.seq, nxt.hash
        for s in [s for s in buffered if s <= seq]:
            assert link(seq, head, buffered.pop(s)) == "old"
        for r in buffered.values():
            assert link(seq, head, r) == "gap"
    assert kept == CHAIN and head == HEADS[N]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, N - 1))
def test_a_fork_breaks_exactly_at_the_first_foreign_record(k: int) -> None:
    """Following CHAIN up to k, the fork's record k+1 breaks (its prev is the fork's own head)."""
    assert link(k, HEADS[k], FORK[k]) == "break"
    assert link(k, FORK[k - 1].hash, FORK[k]) == "next"
