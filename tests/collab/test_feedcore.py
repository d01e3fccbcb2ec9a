"""The sans-I/O feed core: fold, dedup, access, chain, sealing, commit; no sockets, no clock."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.access import Access
from collab.capability import Capability
from collab.errors import ChainError, Conflict, InvalidEvent, TooLarge, Unauthorized
from collab.events import GENESIS, Event, Record
from collab.feedcore import FeedCore, admit, fold_records, record_frame
from collab.feedcore_chain import link
from collab.keys import Keypair
from collab.namespaces import GenericNamespace
from collab.namespaces.base import Admission, Namespace
from collab.replay import receipt_ok, replay

RELAY = Keypair.from_seed(b"R" * 32)
ALICE = Keypair.from_seed(b"A" * 32)
BOB = Keypair.from_seed(b"B" * 32)
NOW = 1_700_000_000_000
LIMIT = 64 * 1024


class Claims(Namespace[frozenset[str]]):
    """A tiny immutable-state namespace: each name may be claimed once."""

    name = "claims"
    kinds = frozenset(("claim",))

    def initial(self, feed: str) -> frozenset[str]:
        return frozenset()

    def validate(self, state: frozenset[str], event: Event, adm: Admission) -> None:
        if event.body["name"] in state:
            raise Conflict(f"{event.body['name']} is claimed already")

    def apply(self, state: frozenset[str], record: Record) -> frozenset[str]:
        return state | {record.event.body["name"]}


class MutableClaims(Claims):
    """The same rules over a state that is not folded tentatively (like docs)."""

    immutable_state = False


def ev(key: Keypair, n: int, feed: str = "chat/x", kind: str = "msg", body: Any = None) -> Event:
    return Event.create(key, feed, kind, {"n": n} if body is None else body, ts=NOW + n)


def claim(name: str, key: Keypair = ALICE, ts: int = NOW) -> Event:
    return Event.create(key, "claims/x", "claim", {"name": name}, ts=ts)


def sequence(core: FeedCore, events: list[tuple[Event, str | None]], now: int = NOW) -> list[Any]:
    """Seal and commit one batch; the answer of each publish in order."""
    sealed = core.seal(events, RELAY, now, LIMIT)
    answers: list[Any] = [None] * len(events)
    for i, a in sealed.answers:
        answers[i] = a
    core.commit([(r, j) for _, r, j in sealed.records])
    for i, rec, _ in sealed.records:
        answers[i] = (rec.seq, False)
    return answers


def test_seal_makes_a_dense_signed_chain_at_the_given_time() -> None:
    core = FeedCore("chat/x", GenericNamespace())
    sealed = core.seal([(ev(ALICE, i), ALICE.public_hex) for i in range(3)], RELAY, NOW, LIMIT)
    recs = [r for _, r, _ in sealed.records]
    assert [r.seq for r in recs] == [1, 2, 3] and sealed.answers == []
    assert recs[0].prev == GENESIS and recs[1].prev == recs[0].hash and recs[2].prev == recs[1].hash
    assert all(r.rtime == NOW and r.relay == RELAY.public_hex and receipt_ok(r) for r in recs)
    assert [json.loads(j) for _, _, j in sealed.records] == [r.to_wire() for r in recs]
    assert core.seq == 0 and core.head == GENESIS and core.state == 0  # nothing folded before the append
    done = core.commit([(r, j) for _, r, j in sealed.records])
    assert core.seq == 3 and core.head == recs[2].hash and core.state == 3
    assert done.frames == [record_frame("chat/x", j) for _, _, j in sealed.records] and not done.acl_changed


def test_duplicates_are_answered_with_their_first_seq() -> None:
    core = FeedCore("chat/x", GenericNamespace())
    a, b = ev(ALICE, 1), ev(ALICE, 2)
    assert sequence(core, [(a, ALICE.public_hex), (a, ALICE.public_hex)]) == [(1, False), (1, True)]
    assert sequence(core, [(b, ALICE.public_hex), (a, ALICE.public_hex)]) == [(2, False), (1, True)]
    assert core.seq == 2


def test_the_dedup_set_is_bounded_and_then_asks_storage() -> None:
    core = FeedCore("chat/x", GenericNamespace(), id_cache=2)
    events = [ev(ALICE, i) for i in range(4)]
    sequence(core, [(e, ALICE.public_hex) for e in events])
    assert len(core.ids) == 2 and not core.ids_complete
    assert core.unknown_ids(events) == [events[0].id, events[1].id]
    sealed = core.seal([(events[0], ALICE.public_hex)], RELAY, NOW, LIMIT, {events[0].id: 1})
    assert sealed.answers == [(0, (1, True))] and sealed.records == []
    assert FeedCore("chat/y", GenericNamespace()).unknown_ids(events) == []  # complete: no lookup


def test_an_immutable_state_is_folded_tentatively_within_a_batch() -> None:
    core = FeedCore("claims/x", Claims())
    answers = sequence(core, [(claim("a"), ALICE.public_hex), (claim("a", BOB), BOB.public_hex),
                              (claim("b", BOB), BOB.public_hex)])
    assert answers[0] == (1, False) and isinstance(answers[1], Conflict) and answers[2] == (2, False)
    assert core.state == frozenset({"a", "b"})


def test_a_mutable_state_validates_each_event_alone_and_folds_after_commit() -> None:
    core = FeedCore("claims/x", MutableClaims())
    answers = sequence(core, [(claim("a"), ALICE.public_hex), (claim("a", BOB), BOB.public_hex)])
    assert answers == [(1, False), (2, False)]  # both pass: validated against the committed state
    assert isinstance(sequence(core, [(claim("a", BOB, NOW + 1), BOB.public_hex)])[0], Conflict)


class Shared(Claims):
    """A relay-owned namespace: the relay opens its feeds."""

    name = "shared"
    relay_owned = True


def test_a_relay_owned_feed_is_opened_by_the_relay_with_its_first_accepted_event() -> None:
    core = FeedCore("shared/x", Shared())
    opening = Event.create(RELAY, "shared/x", "feed.policy", {"policy": "signed"}, ts=0)
    squat = Event.create(ALICE, "shared/x", "feed.policy", {"policy": "members"}, ts=NOW)
    mine = Event.create(ALICE, "shared/x", "claim", {"name": "a"}, ts=NOW)
    # without an opening (a replayer's check): an agent is never seq 1, nor sets the policy
    for e in (squat, mine):
        with pytest.raises(Unauthorized, match="belong to the relay"):
            admit(core.ns, core.state, core.access, e, ALICE.public_hex, 1, Admission(NOW, RELAY.public_hex))
    with pytest.raises(Unauthorized):
        admit(core.ns, core.state, core.access, squat, ALICE.public_hex, 5, Admission(NOW, RELAY.public_hex))
    admit(core.ns, core.state, core.access, opening, RELAY.public_hex, 1, Admission(NOW, RELAY.public_hex))
    # a refused event opens nothing
    sealed = core.seal([(squat, ALICE.public_hex)], RELAY, NOW, LIMIT, opening=opening)
    assert isinstance(sealed.answers[0][1], Unauthorized) and sealed.opening is None and not sealed.lines()
    # the first accepted event brings the opening with it, as seq 1; later ones judge the opened feed
    again = Event.create(BOB, "shared/x", "claim", {"name": "a"}, ts=NOW)
    sealed = core.seal([(squat, ALICE.public_hex), (mine, ALICE.public_hex), (again, BOB.public_hex),
                        (opening, RELAY.public_hex)], RELAY, NOW, LIMIT, opening=opening)
    assert sealed.opening is not None and [(i, r.seq) for i, r, _ in sealed.records] == [(1, 2)]
    assert isinstance(sealed.answers[0][1], Unauthorized) and isinstance(sealed.answers[1][1], Conflict)
    assert sealed.answers[2] == (3, (1, True))  # the opening itself, sent in the batch: a duplicate
    lines = sealed.lines()
    assert [(r.seq, r.event.author) for r, _ in lines] == [(1, RELAY.public_hex), (2, ALICE.public_hex)]
    assert lines[1][0].prev == lines[0][0].hash
    core.commit(lines)
    assert core.access.owner == RELAY.public_hex and core.state == frozenset({"a"})
    # an open feed needs no opening: the next batch is sealed as usual
    b = Event.create(BOB, "shared/x", "claim", {"name": "b"}, ts=NOW)
    later = core.seal([(b, BOB.public_hex)], RELAY, NOW, LIMIT, opening=opening)
    assert later.opening is None and [r.seq for _, r, _ in later.records] == [3]


def test_refusals_size_access_kinds_and_fixed_access() -> None:
    core = FeedCore("claims/x", Claims())
    big = Event.create(ALICE, "claims/x", "claim", {"name": "x" * 200}, ts=NOW)
    sealed = core.seal([(big, ALICE.public_hex)], RELAY, NOW, 100)
    assert isinstance(sealed.answers[0][1], TooLarge)
    wrong_kind = ev(ALICE, 1, feed="claims/x")
    assert isinstance(sequence(core, [(wrong_kind, ALICE.public_hex)])[0], InvalidEvent)
    assert isinstance(sequence(core, [(claim("a"), BOB.public_hex)])[0], Unauthorized)  # not the author
    dm = FeedCore(f"dm/{ALICE.public_hex}.{BOB.public_hex}", _dm())
    grant = Event.create(ALICE, dm.feed, "acl.grant", {"key": BOB.public_hex, "read": True}, ts=NOW)
    assert dm.fixed_access and isinstance(sequence(dm, [(grant, ALICE.public_hex)])[0], InvalidEvent)


def _dm() -> Namespace[Any]:
    from collab.namespaces.dm import DmNamespace

    return DmNamespace()


def test_access_folds_and_an_acl_change_is_reported() -> None:
    core = FeedCore("chat/m", GenericNamespace())
    policy = Event.create(ALICE, "chat/m", "feed.policy", {"policy": "members"}, ts=NOW)
    assert sequence(core, [(policy, ALICE.public_hex)]) == [(1, False)]
    assert core.access.policy == "members" and core.access.owner == ALICE.public_hex
    assert isinstance(sequence(core, [(ev(BOB, 1, feed="chat/m"), BOB.public_hex)])[0], Unauthorized)
    grant = Event.create(ALICE, "chat/m", "acl.grant", {"key": BOB.public_hex, "read": True, "write": True}, ts=NOW)
    sealed = core.seal([(grant, ALICE.public_hex), (ev(BOB, 2, feed="chat/m"), BOB.public_hex)], RELAY, NOW, LIMIT)
    assert [r.seq for _, r, _ in sealed.records] == [2, 3]  # the grant binds from the very next record
    done = core.commit([(r, j) for _, r, j in sealed.records])
    assert not done.acl_changed and core.access.can_read(BOB.public_hex) and core.state == 1  # nobody lost
    revoke = Event.create(ALICE, "chat/m", "acl.revoke", {"key": BOB.public_hex}, ts=NOW)
    sealed = core.seal([(ev(BOB, 3, feed="chat/m"), BOB.public_hex), (revoke, ALICE.public_hex),
                        (ev(ALICE, 4, feed="chat/m"), ALICE.public_hex)], RELAY, NOW, LIMIT)
    done = core.commit([(r, j) for _, r, j in sealed.records])
    assert done.cuts == [(1, core.access)] and not core.access.can_read(BOB.public_hex)  # cut at the revoke


def test_a_switch_to_members_at_seq_1_is_a_cut() -> None:
    core = FeedCore("chat/p", GenericNamespace())
    sealed = core.seal([(Event.create(ALICE, "chat/p", "feed.policy", {"policy": "members"}, ts=NOW),
                         ALICE.public_hex), (ev(ALICE, 1, feed="chat/p"), ALICE.public_hex)], RELAY, NOW, LIMIT)
    assert core.commit([(r, j) for _, r, j in sealed.records]).cuts == [(0, core.access)]
    plain = FeedCore("chat/q", GenericNamespace())
    sealed = plain.seal([(ev(ALICE, 1, feed="chat/q"), ALICE.public_hex)], RELAY, NOW, LIMIT)
    assert plain.commit([(r, j) for _, r, j in sealed.records]).cuts == []  # an owner for a signed feed


def test_link_and_extend_are_the_chain_check() -> None:
    recs = [Record.seal(RELAY, ev(ALICE, i), i, GENESIS if i == 1 else "", NOW) for i in (1,)]
    r2 = Record.seal(RELAY, ev(ALICE, 2), 2, recs[0].hash, NOW)
    bad = Record.seal(RELAY, ev(ALICE, 3), 2, GENESIS, NOW)
    assert link(0, GENESIS, recs[0]) == "next" and link(1, recs[0].hash, r2) == "next"
    assert link(1, recs[0].hash, recs[0]) == "old" and link(0, GENESIS, r2) == "gap"
    assert link(1, recs[0].hash, bad) == "break" and link(1, None, bad) == "next"
    core = FeedCore("chat/x", GenericNamespace())
    core.extend(recs[0])
    with pytest.raises(ChainError):
        core.extend(bad)
    core.extend(r2)
    assert core.seq == 2 and core.state == 2


def test_restore_from_a_snapshot_and_fold_on() -> None:
    core = FeedCore("chat/x", GenericNamespace())
    sequence(core, [(ev(ALICE, i), ALICE.public_hex) for i in range(2)])
    meta = json.dumps({"access": core.access.to_json()})
    other = FeedCore("chat/x", GenericNamespace())
    other.restore(core.seq, core.head, GenericNamespace().dump(core.state), meta)
    assert (other.seq, other.head, other.state, other.access) == (core.seq, core.head, 2, core.access)
    assert not other.ids_complete  # ids before the snapshot are only in storage
    a = sequence(other, [(ev(ALICE, 9), ALICE.public_hex)])
    assert a == [(3, False)] and other.state == 3


def test_fold_records_and_admit_are_what_replayers_use() -> None:
    core = FeedCore("claims/x", Claims())
    sequence(core, [(claim("a"), ALICE.public_hex)])
    recs = [Record.seal(RELAY, claim("a"), 1, GENESIS, NOW)]
    assert fold_records(Claims(), "claims/x", recs).state == frozenset({"a"})
    with pytest.raises(Conflict):
        admit(Claims(), core.state, Access(), claim("a", BOB), BOB.public_hex, 2, Admission(NOW, RELAY.public_hex))


# -- any interleaving of publishes and subscriptions ------------------------------------------
@dataclass
class _Sub:
    since: int
    got: list[int] = field(default_factory=list)


class Driver:
    """A tiny synchronous relay around the core: an in-memory log, subscriptions served between
    batches (backlog = the log after ``since``, then live), as the relay's feed worker does."""

    def __init__(self) -> None:
        self.core = FeedCore("chat/h", GenericNamespace(), id_cache=3)
        self.log: list[Record] = []
        self.subs: list[_Sub] = []

    def publish(self, batch: list[Event]) -> list[Any]:
        unknown = self.core.unknown_ids(batch)
        stored = {r.event.id: r.seq for r in self.log if r.event.id in unknown}
        sealed = self.core.seal([(e, ALICE.public_hex) for e in batch], RELAY, NOW, LIMIT, stored)
        self.log.extend(r for _, r, _ in sealed.records)  # the durable append
        done = self.core.commit([(r, j) for _, r, j in sealed.records])
        for sub in self.subs:
            sub.got.extend(json.loads(f)["rec"]["seq"] for f in done.frames)
        answers: list[Any] = [None] * len(batch)
        for i, a in sealed.answers:
            answers[i] = a
        for i, r, _ in sealed.records:
            answers[i] = (r.seq, False)
        return answers

    def subscribe(self, since: int) -> None:
        sub = _Sub(min(since, self.core.seq))
        sub.got.extend(r.seq for r in self.log[sub.since:])
        self.subs.append(sub)


POOL = [ev(ALICE, i, feed="chat/h") for i in range(12)]
_ops = st.lists(st.one_of(
    st.tuples(st.just("pub"), st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=5)),
    st.tuples(st.just("sub"), st.integers(0, 15)),
), max_size=25)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_any_interleaving_gives_one_dense_order_seen_once_by_every_subscriber(ops: list[tuple[str, Any]]) -> None:
    d = Driver()
    first: dict[str, int] = {}
    for op, arg in ops:
        if op == "sub":
            d.subscribe(arg)
            continue
        answers = d.publish([POOL[i] for i in arg])
        for i, (seq, dup) in zip(arg, answers, strict=True):
            eid = POOL[i].id
            assert dup == (eid in first) or (not dup and eid not in first)
            assert first.setdefault(eid, seq) == seq  # one event, one seq, however often published
    assert [r.seq for r in d.log] == list(range(1, len(d.log) + 1))  # one dense order
    assert len({r.event.id for r in d.log}) == len(d.log)  # each event once
    for a, b in itertools.pairwise(d.log):
        assert b.prev == a.hash
    for sub in d.subs:  # exactly once, in order, from its since to the head
        assert sub.got == list(range(sub.since + 1, len(d.log) + 1))


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=8), cuts=st.sets(st.integers(1, 7)))
def test_max_feed_bytes_answers_the_same_whatever_the_batching(sizes: list[int], cuts: set[int]) -> None:
    """The byte quota is a function of the log: one batch or many, the same events are refused,
    and a core restored from a snapshot meta carrying ``bytes`` goes on counting from there."""
    author = Keypair.from_seed(b"q" * 32)
    events = [Event.create(author, "notes/q", "note", {"pad": "x" * n, "i": i}, ts=i) for i, n in enumerate(sizes)]
    limit = sum(ev.size for ev in events) // 2

    def run(batches: list[list[Event]]) -> tuple[list[bool], FeedCore]:
        core, accepted = FeedCore("notes/q", GenericNamespace()), []
        for batch in batches:
            sealed = core.seal([(ev, author.public_hex) for ev in batch], RELAY, 1, 1 << 20, max_feed_bytes=limit)
            ok = {i for i, _, _ in sealed.records}
            accepted += [i in ok for i in range(len(batch))]
            core.commit([(r, j) for _, r, j in sealed.records])
        return accepted, core

    whole, core = run([events])
    edges = [0, *sorted(c for c in cuts if c < len(events)), len(events)]
    split, _ = run([events[a:b] for a, b in itertools.pairwise(edges)])
    assert whole == split and core.bytes <= limit
    assert core.bytes == sum(ev.size for ev, ok in zip(events, whole, strict=True) if ok)
    again = FeedCore("notes/q", GenericNamespace())
    again.restore(core.seq, core.head, b"5", json.dumps({"access": core.access.to_json(), "bytes": core.bytes}))
    assert again.bytes == core.bytes
    again.restore(core.seq, core.head, b"123", json.dumps({"access": core.access.to_json()}))
    assert again.bytes == 3  # an older snapshot: its state's size stands in


def test_seal_judges_a_capability_at_its_receipt_time() -> None:
    """An event made (``ts``) while its capability held but sealed after ``exp`` is refused: the
    /yjs endpoint's edits race their capability's expiry this way; replay agrees."""
    feed = "doc/c"
    core = FeedCore(feed, GenericNamespace())
    first = core.seal([(Event.create(ALICE, feed, "feed.policy", {"policy": "signed"}), ALICE.public_hex)],
                      RELAY, NOW, LIMIT).records[0][1]
    core.commit([(first, "")])
    cap = Capability.issue(ALICE, feed, write=True, ttl_ms=1_000, now=NOW - 1_000)  # exp = NOW
    ev = Event.create(BOB, feed, "doc.update", {"update": "AA==", "cap": cap.to_wire()}, ctx=1, ts=NOW - 1)
    (_, err), = core.seal([(ev, BOB.public_hex)], RELAY, NOW, LIMIT).answers
    assert isinstance(err, Unauthorized) and "expired" in str(err)
    (_, rec, _), = core.seal([(ev, BOB.public_hex)], RELAY, NOW - 1, LIMIT).records
    assert rec.rtime == NOW - 1
    late = Record.seal(RELAY, ev, 2, core.head, rtime=NOW)  # a record that a ts-judging relay would have made
    anomalies = replay([first.to_wire(), late.to_wire()], feed=feed).anomalies
    assert [(a.seq, a.kind) for a in anomalies] == [(2, "unauthorized")]
