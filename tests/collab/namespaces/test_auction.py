"""The task auction: lifecycle with its ledger moves and trust outcomes, ranking, refusals, snapshots."""
from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collab import auction as ah
from collab.errors import ColonyError
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.base import Admission
from collab.namespaces.auction import MAX_STANDBY, AuctionNamespace, AuctionState
from collab.namespaces.ledger import LedgerNamespace
from tests.collab.namespaces.test_ledger import Chain, fold
import contextlib

T0 = 1_700_000_000_000
DEADLINE = T0 + 60_000
WINDOW = 10_000
FEED = "auction/t1"
NS = AuctionNamespace()
LEDGER = LedgerNamespace()


class Site:
    """A relay in miniature: the auction feed, its ledger, and the coordinator's steps around them
    (lock before sequencing, ledger moves and trust outcomes after)."""

    def __init__(self, feed: str = FEED) -> None:
        self.relay, self.op, self.requester = Keypair.generate(), Keypair.generate(), Keypair.generate()
        self.ledger = Chain(LEDGER, "ledger/main", self.relay)
        self.ledger.publish(self.relay, "ledger.open", {"operators": [self.op.public_hex]}, T0)
        self.auction = Chain(NS, feed, self.relay)
        self.outcomes: list[dict[str, Any]] = []
        self.granted = 0

    @property
    def state(self) -> AuctionState:
        return self.auction.state

    def grant(self, key: Keypair, amount: int) -> None:
        if amount == 0:
            return
        self.ledger.publish(self.op, "ledger.grant", {"to": key.public_hex, "amount": amount}, T0)
        self.granted += amount

    def submit(self, author: Keypair, kind: str, body: Any, now: int, ts: int | None = None) -> Record:
        ev = self.auction.event(author, kind, body, now, ts)
        NS.validate(self.state, ev, self.auction.adm(now))  # refuse early, before locking anything
        lock = ah.lock_for(self.state, ev)
        if lock is not None:
            assert lock[0] == "ledger/main"
            self.ledger.publish(self.relay, "ledger.lock", lock[1], now)
        before = self.state
        rec = self.auction.submit(ev, now)
        for move_kind, move in ah.ledger_moves(before, self.state, rec):
            self.ledger.publish(self.relay, move_kind, move, now)
        out = ah.outcome(before, self.state, rec)
        if out is not None:
            self.outcomes.append(out)
        assert dict(self.ledger.state.locks.get(self.auction.feed) or {}) == ah.held(self.state)
        assert self.ledger.state.supply == self.granted
        return rec

    def open(self, reward: int = 100, **extra: Any) -> None:
        self.grant(self.requester, reward)
        body = {"task": {"do": "summarise"}, "bid_deadline": DEADLINE, "result_window": WINDOW,
                "min_stake": 10, "reward": reward, **extra}
        self.submit(self.requester, "auction.open", body, T0 + 1)

    def bid(self, key: Keypair, stake: int, now: int = T0 + 2, grant: int | None = None) -> Record:
        self.grant(key, stake if grant is None else grant)
        return self.submit(key, "auction.bid", {"stake": stake}, now)

    def award(self, trust: dict[str, int] | None = None, trust_seq: int = 0, now: int = DEADLINE) -> Record:
        body = ah.award_body(self.state, trust or {}, trust_seq, DEADLINE)
        return self.submit(self.relay, "auction.award", body, now, ts=DEADLINE)

    def balance(self, key: Keypair) -> tuple[int, int]:
        return self.ledger.state.available_of(key.public_hex), self.ledger.state.locked_of(key.public_hex)


def keys(n: int) -> list[Keypair]:
    return [Keypair.generate() for _ in range(n)]


def refused(site: Site, code: str, author: Keypair, kind: str, body: Any, now: int, ts: int | None = None) -> None:
    site.auction.refused(code, author, kind, body, now, ts)


def test_completed_auction_pays_the_winner_and_releases_everyone() -> None:
    site = Site()
    w, s, loser = keys(3)
    site.open(reward=100, standby=1)
    assert site.state.status == "open" and ah.timers(site.state) == [(DEADLINE, "award")]
    assert site.balance(site.requester) == (0, 100)
    site.bid(w, 50, grant=80)
    site.bid(s, 40)
    site.bid(loser, 30)
    site.award()
    st = site.state
    assert (st.status, st.winner, st.assignee, st.queue) == ("awarded", w.public_hex, w.public_hex, (s.public_hex,))
    assert st.result_deadline == DEADLINE + WINDOW
    assert ah.timers(st) == [(DEADLINE + WINDOW + 1, "expire")]
    assert site.balance(loser) == (30, 0) and site.balance(s) == (0, 40) and site.balance(w) == (30, 50)
    site.submit(w, "auction.result", {"result": {"summary": "done"}}, DEADLINE + 5)
    assert site.state.result == {"key": w.public_hex, "result": {"summary": "done"}, "seq": 6}
    assert ah.timers(site.state) == []
    site.submit(site.requester, "auction.accept", {}, DEADLINE + 6)
    assert site.state.status == "completed" and site.state.queue == ()
    assert site.balance(w) == (180, 0) and site.balance(s) == (40, 0) and site.balance(site.requester) == (0, 0)
    assert site.outcomes == [{"subject": w.public_hex, "outcome": "delivered", "ref": FEED}]
    assert ah.timers(site.state) == [] and ah.held(site.state) == {}
    kinds = [h["kind"] for h in NS.view(site.state)["history"]]
    assert kinds == ["open", "award", "result", "accept"]


def test_failing_winner_is_slashed_and_standbys_take_over() -> None:
    """Winner rejected, first standby expired, second standby delivers: two slashes, one reward."""
    site = Site()
    w, s1, s2, out = keys(4)
    site.open(reward=100)  # standby defaults to 2
    for k, stake in ((w, 60), (s1, 50), (s2, 40), (out, 20)):
        site.bid(k, stake)
    site.award()
    assert site.state.queue == (s1.public_hex, s2.public_hex) and site.balance(out) == (20, 0)

    site.submit(w, "auction.result", {"result": "junk"}, DEADLINE + 100)
    rej = site.submit(site.requester, "auction.reject", {"reason": "wrong format"}, DEADLINE + 200)
    st = site.state
    assert (st.status, st.assignee, st.queue, st.result) == ("awarded", s1.public_hex, (s2.public_hex,), None)
    assert st.result_deadline == rej.rtime + WINDOW  # a promoted standby gets a full window from promotion
    assert site.balance(w) == (0, 0) and site.balance(site.requester) == (60, 100)
    refused(site, "conflict", w, "auction.result", {"result": "again"}, DEADLINE + 300)  # no longer assigned

    due = st.result_deadline
    assert ah.timers(st) == [(due + 1, "expire")]
    refused(site, "late", site.relay, "auction.expire", {"key": s1.public_hex}, due, ts=due)  # not past yet
    site.submit(site.relay, "auction.expire", ah.expire_body(st), due + 1, ts=due)
    st = site.state
    assert (st.assignee, st.queue, st.result_deadline) == (s2.public_hex, (), due + 1 + WINDOW)
    assert site.balance(s1) == (0, 0) and site.balance(site.requester) == (110, 100)

    site.submit(s2, "auction.result", {"result": "good"}, due + 2)
    site.submit(site.requester, "auction.accept", {}, due + 3)
    assert site.state.status == "completed" and site.state.assignee == s2.public_hex
    assert site.balance(s2) == (140, 0) and site.balance(site.requester) == (110, 0)
    assert [(o["subject"], o["outcome"]) for o in site.outcomes] == [
        (w.public_hex, "slashed"), (s1.public_hex, "slashed"), (s2.public_hex, "delivered")]
    kinds = [(h["kind"], h.get("key")) for h in NS.view(site.state)["history"]]
    assert kinds == [("open", site.requester.public_hex), ("award", None), ("result", w.public_hex),
                     ("reject", w.public_hex), ("promote", s1.public_hex), ("expire", s1.public_hex),
                     ("promote", s2.public_hex), ("result", s2.public_hex), ("accept", s2.public_hex)]
    assert NS.view(site.state)["history"][3]["reason"] == "wrong format"


def test_no_standby_left_fails_and_refunds_the_escrow() -> None:
    site = Site()
    w, other = keys(2)
    site.open(reward=70, standby=0)
    site.bid(w, 25)
    site.bid(other, 15)
    site.award()
    assert site.state.queue == () and site.balance(other) == (15, 0)
    site.submit(site.relay, "auction.expire", {"key": w.public_hex}, DEADLINE + WINDOW + 1, ts=DEADLINE + WINDOW)
    st = site.state
    assert (st.status, st.assignee, st.result_deadline) == ("failed", None, None)
    assert site.balance(site.requester) == (95, 0) and site.balance(w) == (0, 0)
    assert site.outcomes == [{"subject": w.public_hex, "outcome": "slashed", "ref": FEED}]
    assert ah.timers(st) == [] and ah.held(st) == {}
    refused(site, "conflict", site.requester, "auction.accept", {}, DEADLINE + WINDOW + 2)


def test_no_bids_is_unawarded_and_zero_amounts_lock_nothing() -> None:
    site = Site()
    site.open(reward=40)
    site.award()
    st = site.state
    assert (st.status, st.winner, st.ranking, st.result_deadline) == ("unawarded", None, (), None)
    assert site.balance(site.requester) == (40, 0) and ah.timers(st) == []

    free = Site("auction/free")
    w = Keypair.generate()
    free.open(reward=0, min_stake=0)
    free.submit(w, "auction.bid", {"stake": 0, "note": "for free"}, T0 + 2)
    free.award()
    free.submit(w, "auction.result", {"result": None}, DEADLINE + 1)
    free.submit(free.requester, "auction.reject", {}, DEADLINE + 2)  # slashing 0: no ledger move, still an outcome
    assert free.state.status == "failed" and len(free.ledger.records) == 1  # just the open
    assert free.outcomes == [{"subject": w.public_hex, "outcome": "slashed", "ref": "auction/free"}]


def test_hundred_bidders_rank_deterministically() -> None:
    rng = random.Random(7)
    site = Site()
    site.open(reward=500, standby=5)
    bidders = keys(100)
    stakes = {k.public_hex: rng.choice([10, 20, 30, 40, 50]) for k in bidders}
    trust = {k.public_hex: rng.choice([0, 1_000, 250_000_000, 999_999]) for k in bidders[::3]}
    seqs = {}
    for k in bidders:
        seqs[k.public_hex] = site.bid(k, stakes[k.public_hex], grant=100).seq
    body = ah.award_body(site.state, trust, 17, DEADLINE)
    shuffled = dict(sorted(trust.items(), key=lambda kv: rng.random()))
    assert ah.award_body(site.state, shuffled, 17, DEADLINE) == body  # independent of dict order

    def expected_key(k: str) -> tuple[int, int, int]:
        s = stakes[k] * (1_000_000 + trust.get(k, 0) // 1000)
        return (-s, -stakes[k], seqs[k])
    order = sorted(stakes, key=expected_key)
    assert [r["key"] for r in body["ranking"]] == order
    assert all(r["score"] == r["stake"] * (1_000_000 + r["trust"] // 1000) for r in body["ranking"])
    # ties on score and stake fall back to bid order
    ties = [(r["score"], r["stake"]) for r in body["ranking"]]
    assert len(set(ties)) < len(ties)
    site.submit(site.relay, "auction.award", body, DEADLINE, ts=DEADLINE)
    st = site.state
    assert st.winner == order[0] and st.queue == tuple(order[1:6]) and st.trust_seq == 17
    released = list(order[6:])
    assert all(site.ledger.state.available_of(k) == 100 for k in released)
    assert all(site.ledger.state.locked_of(k) == stakes[k] for k in order[:6])
    replayed = fold(NS, FEED, site.auction.records)
    assert replayed.winner == st.winner and NS.dump(replayed) == NS.dump(st)
    assert NS.view(st)["bids"][0] == {"key": bidders[0].public_hex, "stake": stakes[bidders[0].public_hex], "seq": 2}

    stake_only = Site("auction/s")
    stake_only.open(scoring="stake")
    for k, stake in zip(keys(3), (20, 30, 30), strict=True):
        stake_only.bid(k, stake)
    b2 = ah.award_body(stake_only.state, {"ignored": 5}, 9, DEADLINE)
    assert b2["trust_seq"] == 0 and [r["trust"] for r in b2["ranking"]] == [0, 0, 0]
    assert [r["score"] for r in b2["ranking"]] == [30, 30, 20]


def test_bids_refused_with_the_right_codes() -> None:
    site = Site()
    a, b = keys(2)
    refused(site, "conflict", a, "auction.bid", {"stake": 10}, T0)  # not open yet
    site.open()
    site.bid(a, 10)
    refused(site, "conflict", a, "auction.bid", {"stake": 20}, T0 + 3)  # duplicate
    refused(site, "invalid", b, "auction.bid", {"stake": 9}, T0 + 3)  # under min_stake
    refused(site, "late", b, "auction.bid", {"stake": 10}, DEADLINE + 1)
    refused(site, "unauthorized", site.requester, "auction.bid", {"stake": 50}, T0 + 3)
    for bad in ({"stake": True}, {"stake": "10"}, {"stake": 10, "x": 1}, {}, {"stake": 10, "note": "n" * 1001},
                {"stake": ah.MAX_STAKE + 1}, [10]):
        refused(site, "invalid", b, "auction.bid", bad, T0 + 3)
    site.bid(b, 10, now=DEADLINE)  # the deadline itself is still in time
    site.award()
    c = Keypair.generate()
    refused(site, "late", c, "auction.bid", {"stake": 10}, DEADLINE)  # same ms as the award, but after it


def test_open_rules() -> None:
    site = Site()
    base = {"task": "t", "bid_deadline": DEADLINE, "result_window": WINDOW, "min_stake": 0, "reward": 0}
    refused(site, "late", site.requester, "auction.open", base, DEADLINE)
    for bad in ({"standby": MAX_STANDBY + 1}, {"standby": -1}, {"scoring": "luck"}, {"ledger": "vouch/global"},
                {"trust": "ledger/main"}, {"ledger": "nope"}, {"result_window": 0}, {"min_stake": -1},
                {"reward": -5}, {"extra": 1}):
        refused(site, "invalid", site.requester, "auction.open", {**base, **bad}, T0)
    refused(site, "invalid", site.requester, "auction.open", {k: v for k, v in base.items() if k != "task"}, T0)
    site.auction.publish(site.requester, "auction.open", {**base, "standby": MAX_STANDBY, "trust": "vouch/ml"}, T0)
    p = site.state.params
    assert p is not None and (p.standby, p.scoring, p.ledger, p.trust) == (16, "stake_trust", "ledger/main", "vouch/ml")
    assert (site.state.ledger, site.state.trust) == ("ledger/main", "vouch/ml")
    assert (NS.initial(FEED).ledger, NS.initial(FEED).trust) == ("ledger/main", "vouch/global")
    refused(site, "conflict", site.requester, "auction.open", base, T0)
    refused(site, "conflict", Keypair.generate(), "auction.open", base, T0)


def test_awards_checked_against_the_bids() -> None:
    site = Site()
    a, b, c = keys(3)
    site.open(standby=1)
    for k, stake in ((a, 10), (b, 30), (c, 20)):
        site.bid(k, stake)
    trust = {c.public_hex: 900_000_000}
    good = ah.award_body(site.state, trust, 4, DEADLINE)
    assert good["winner"] == c.public_hex and good["standby"] == [b.public_hex]  # 20*1.9 > 30*1.0
    refused(site, "unauthorized", site.requester, "auction.award", good, DEADLINE, ts=DEADLINE)
    refused(site, "unauthorized", a, "auction.expire", {"key": a.public_hex}, DEADLINE, ts=DEADLINE)
    refused(site, "late", site.relay, "auction.award", good, DEADLINE - 1, ts=DEADLINE - 1)
    swapped = [good["ranking"][1], good["ranking"][0], good["ranking"][2]]
    r0 = good["ranking"][0]
    tampered = [
        {**good, "ranking": swapped},
        {**good, "winner": b.public_hex},
        {**good, "standby": []},
        {**good, "result_deadline": DEADLINE + WINDOW + 1},  # later than rtime + window (rtime = DEADLINE)
        {**good, "result_deadline": DEADLINE + WINDOW - 1},  # earlier than ts + window
        {**good, "result_deadline": None},
        {**good, "ranking": good["ranking"][:2]},
        {**good, "ranking": [{**r0, "trust": 0}, *good["ranking"][1:]]},  # trust changed, ranking not re-sorted
        {**good, "ranking": [{**r0, "score": r0["score"] + 1}, *good["ranking"][1:]]},
        {**good, "ranking": [{**r0, "trust": 1_000_000_001}, *good["ranking"][1:]]},
        {**good, "ranking": [{**r0, "extra": 1}, *good["ranking"][1:]]},
        {**good, "trust_seq": -1},
        {k: v for k, v in good.items() if k != "trust_seq"},
    ]
    for body in tampered:
        refused(site, "invalid", site.relay, "auction.award", body, DEADLINE, ts=DEADLINE)
    refused(site, "invalid", site.relay, "auction.award", good, DEADLINE + 5, ts=DEADLINE - 1)  # ts before deadline
    refused(site, "invalid", site.relay, "auction.award", good, DEADLINE, ts=DEADLINE + 1)  # ts after rtime
    # a relay that sequenced a wrong award anyway: every replayer ignores it
    before = site.state
    site.auction.seal(site.auction.event(site.relay, "auction.award", tampered[0], DEADLINE, DEADLINE), DEADLINE)
    assert site.state is before and site.state.status == "open"
    # a late timer (relay was down): ts is still the deadline, the window runs from any time up
    # to the rtime, so the winner still gets a full window
    late = ah.award_body(site.state, trust, 4, DEADLINE + 500)
    refused(site, "invalid", site.relay, "auction.award", late, DEADLINE + 499, ts=DEADLINE)  # past rtime + window
    site.submit(site.relay, "auction.award", late, DEADLINE + 700, ts=DEADLINE)
    assert site.state.result_deadline == DEADLINE + 500 + WINDOW
    refused(site, "conflict", site.relay, "auction.award", good, DEADLINE + 800, ts=DEADLINE)

    stake_only = Site("auction/s")
    stake_only.open(scoring="stake")
    stake_only.bid(a, 10)
    body = ah.award_body(stake_only.state, {}, 0, DEADLINE)
    with_trust = {**body, "ranking": [{**body["ranking"][0], "trust": 5}]}
    refused(stake_only, "invalid", stake_only.relay, "auction.award", with_trust, DEADLINE, ts=DEADLINE)
    refused(stake_only, "invalid", stake_only.relay, "auction.award", {**body, "trust_seq": 3}, DEADLINE, ts=DEADLINE)


def test_result_accept_reject_expire_rules() -> None:
    site = Site()
    w, s = keys(2)
    site.open(standby=1)
    refused(site, "conflict", w, "auction.result", {"result": 1}, T0 + 2)
    site.bid(w, 20)
    site.bid(s, 10)
    refused(site, "conflict", w, "auction.result", {"result": 1}, T0 + 3)  # not awarded yet
    refused(site, "conflict", site.requester, "auction.accept", {}, T0 + 3)
    site.award()
    due = site.state.result_deadline
    assert due is not None
    refused(site, "conflict", s, "auction.result", {"result": 1}, DEADLINE + 1)  # a standby is not assigned
    refused(site, "late", w, "auction.result", {"result": 1}, due + 1)
    refused(site, "invalid", w, "auction.result", {"result": 1, "x": 2}, DEADLINE + 1)
    refused(site, "conflict", site.requester, "auction.accept", {}, DEADLINE + 1)  # nothing delivered
    refused(site, "conflict", site.relay, "auction.expire", {"key": s.public_hex}, due + 1, ts=due)
    site.submit(w, "auction.result", {"result": 1}, due)  # at the deadline is in time
    refused(site, "conflict", w, "auction.result", {"result": 2}, due)  # once per assignment
    refused(site, "conflict", site.relay, "auction.expire", {"key": w.public_hex}, due + 1, ts=due)
    refused(site, "unauthorized", w, "auction.accept", {}, due + 1)
    refused(site, "unauthorized", s, "auction.reject", {}, due + 1)
    refused(site, "invalid", site.requester, "auction.accept", {"ok": True}, due + 1)
    refused(site, "invalid", site.requester, "auction.reject", {"reason": "r" * 1001}, due + 1)
    refused(site, "invalid", site.requester, "auction.nope", {}, due + 1)
    site.submit(site.requester, "auction.accept", {}, due + 1)
    refused(site, "conflict", site.requester, "auction.reject", {}, due + 2)


def test_apply_is_pure_and_snapshots_round_trip() -> None:
    site = Site()
    w, s1, s2 = keys(3)
    site.open(reward=30)
    for k, stake in ((w, 30), (s1, 20), (s2, 10)):
        site.bid(k, stake, grant=40)
    site.award()
    site.submit(w, "auction.result", {"result": [1, 2]}, DEADLINE + 1)
    site.submit(site.requester, "auction.reject", {"reason": "no"}, DEADLINE + 2)
    site.submit(s1, "auction.result", {"result": None}, DEADLINE + 3)
    site.submit(site.requester, "auction.accept", {}, DEADLINE + 4)
    records = site.auction.records
    whole = NS.dump(site.state)
    states = [NS.initial(FEED)]
    for rec in records:
        states.append(NS.apply(states[-1], rec))
    dumps = [NS.dump(x) for x in states]
    assert dumps[-1] == whole and len(set(dumps)) == len(dumps)  # every record changed the state
    for i, rec in enumerate(records):
        NS.apply(states[i], rec)  # applying again leaves the input alone
        assert NS.dump(states[i]) == dumps[i]
    for cut, mid in enumerate(states):
        loaded = NS.load(FEED, dumps[cut])
        assert NS.dump(loaded) == dumps[cut] and NS.view(loaded) == NS.view(mid)
        assert NS.dump(fold(NS, FEED, records[cut:], loaded)) == whole
    view = NS.view(site.state)
    assert view["status"] == "completed" and view["assignee"] == s1.public_hex and view["winner"] == w.public_hex
    assert view["deadlines"] == {"bid": DEADLINE, "result": None} and view["result"]["result"] is None
    assert view["params"]["reward"] == 30 and view["task"] == {"do": "summarise"}
    assert view["standby"] == [] and [b["stake"] for b in view["bids"]] == [30, 20, 10]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["task", "bid_deadline", "result_window", "min_stake", "reward", "standby", "scoring", "ledger", "trust",
          "stake", "note", "winner", "ranking", "trust_seq", "result_deadline", "result", "reason", "key"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(NS.kinds)), st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS), json_values)),
       st.booleans())
def test_validate_refuses_garbage_with_protocol_errors_only(kind: str, body: Any, by_relay: bool) -> None:
    """Whatever the body, validate either passes or raises a ColonyError (never crashes), and
    apply of such a record never crashes either."""
    site = Site()
    w = Keypair.generate()
    site.open(standby=1)
    site.bid(w, 20)
    for state in (NS.initial(FEED), site.state):
        author = site.relay if by_relay else w
        ev = Event.create(author, FEED, kind, body, ts=DEADLINE)
        with contextlib.suppress(ColonyError):
            NS.validate(state, ev, Admission(DEADLINE, site.relay.public_hex))
        NS.apply(state, Record.seal(site.relay, ev, 9, GENESIS, DEADLINE))
