"""The stake ledger namespace: who may write, balances, refusal codes, snapshots, conservation."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.canonical import MAX_SAFE_INT
from collab.errors import ColonyError
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.base import Admission, Namespace
from collab.namespaces.ledger import LedgerNamespace, LedgerState, PMap

T0 = 1_700_000_000_000
NS = LedgerNamespace()
RELAY, OP, A, B, C = (Keypair.generate() for _ in range(5))


class Chain:
    """One feed under test, sequenced the way the relay does: validate, seal, fold."""

    def __init__(self, ns: Namespace[Any], feed: str, relay: Keypair) -> None:
        self.ns, self.feed, self.relay = ns, feed, relay
        self.state: Any = ns.initial(feed)
        self.records: list[Record] = []
        self.head = GENESIS

    def event(self, author: Keypair, kind: str, body: Any, now: int, ts: int | None = None) -> Event:
        return Event.create(author, self.feed, kind, body, ts=now if ts is None else ts)

    def adm(self, now: int) -> Admission:
        return Admission(now, self.relay.public_hex)

    def seal(self, ev: Event, now: int) -> Record:
        """Sequence ``ev`` without validating it (as a buggy or hostile relay could) and fold it."""
        rec = Record.seal(self.relay, ev, len(self.records) + 1, self.head, now)
        self.records.append(rec)
        self.head = rec.hash
        self.state = self.ns.apply(self.state, rec)
        return rec

    def submit(self, ev: Event, now: int) -> Record:
        self.ns.validate(self.state, ev, self.adm(now))
        return self.seal(ev, now)

    def publish(self, author: Keypair, kind: str, body: Any, now: int, ts: int | None = None) -> Record:
        return self.submit(self.event(author, kind, body, now, ts), now)

    def refused(self, code: str, author: Keypair, kind: str, body: Any, now: int, ts: int | None = None) -> None:
        ev = self.event(author, kind, body, now, ts)
        before = self.ns.dump(self.state)
        with pytest.raises(ColonyError) as info:
            self.ns.validate(self.state, ev, self.adm(now))
        assert info.value.code == code, f"{kind} {body}: {info.value.code} ({info.value}), wanted {code}"
        assert self.ns.dump(self.state) == before  # validate never mutates


def fold(ns: Namespace[Any], feed: str, records: list[Record], state: Any = None) -> Any:
    state = ns.initial(feed) if state is None else state
    for rec in records:
        state = ns.apply(state, rec)
    return state


def opened(operators: list[str] | None = None) -> Chain:
    chain = Chain(NS, "ledger/main", RELAY)
    chain.publish(RELAY, "ledger.open", {"operators": [OP.public_hex] if operators is None else operators}, T0)
    return chain


def balances(chain: Chain) -> dict[str, dict[str, int]]:
    return NS.view(chain.state)["balances"]


def test_open_must_come_first_once_and_from_the_relay() -> None:
    chain = Chain(NS, "ledger/main", RELAY)
    chain.refused("conflict", OP, "ledger.grant", {"to": A.public_hex, "amount": 5}, T0)
    chain.refused("conflict", RELAY, "ledger.lock", {"key": A.public_hex, "amount": 1, "ref": "r"}, T0)
    chain.refused("unauthorized", OP, "ledger.open", {"operators": [OP.public_hex]}, T0)
    chain.refused("invalid", RELAY, "ledger.open", {"operators": [OP.public_hex, OP.public_hex]}, T0)
    chain.refused("invalid", RELAY, "ledger.open", {"operators": ["AB" * 32]}, T0)
    chain.refused("invalid", RELAY, "ledger.open", {"operators": OP.public_hex}, T0)
    chain.refused("invalid", RELAY, "ledger.open", {"operators": [], "memo": "x"}, T0)
    chain.refused("invalid", RELAY, "ledger.nope", {}, T0)
    chain.publish(RELAY, "ledger.open", {"operators": [OP.public_hex]}, T0)
    chain.refused("conflict", RELAY, "ledger.open", {"operators": []}, T0)
    assert NS.view(chain.state) == {"operators": [OP.public_hex], "balances": {}, "locks": {}}


def test_grant_lock_release_reward_slash_move_balances() -> None:
    chain = opened()
    a, b, c = A.public_hex, B.public_hex, C.public_hex
    chain.publish(OP, "ledger.grant", {"to": a, "amount": 100, "memo": "welcome"}, T0 + 1)
    chain.publish(OP, "ledger.grant", {"to": b, "amount": 50}, T0 + 2)
    chain.publish(RELAY, "ledger.lock", {"key": a, "amount": 30, "ref": "auction/x"}, T0 + 3)
    chain.publish(RELAY, "ledger.lock", {"key": a, "amount": 20, "ref": "auction/y"}, T0 + 4)
    chain.publish(RELAY, "ledger.lock", {"key": b, "amount": 50, "ref": "auction/x"}, T0 + 5)
    assert balances(chain) == {a: {"available": 50, "locked": 50}, b: {"available": 0, "locked": 50}}
    assert NS.view(chain.state)["locks"] == {"auction/x": {a: 30, b: 50}, "auction/y": {a: 20}}

    chain.publish(RELAY, "ledger.release", {"key": a, "ref": "auction/x"}, T0 + 6)
    chain.publish(RELAY, "ledger.reward", {"key": b, "ref": "auction/x", "to": c}, T0 + 7)
    chain.publish(RELAY, "ledger.slash", {"key": a, "ref": "auction/y", "to": b}, T0 + 8)
    assert balances(chain) == {a: {"available": 80, "locked": 0}, b: {"available": 20, "locked": 0},
                               c: {"available": 50, "locked": 0}}
    assert NS.view(chain.state)["locks"] == {}
    assert chain.state.supply == 150
    assert (chain.state.available_of(a), chain.state.locked_of(a), chain.state.lock_of("auction/x", a)) == (80, 0, 0)


def test_refusal_codes() -> None:
    chain = opened()
    a, b = A.public_hex, B.public_hex
    chain.publish(OP, "ledger.grant", {"to": a, "amount": 10}, T0 + 1)
    # grants: operators only, exact bodies, positive integer amounts
    chain.refused("unauthorized", A, "ledger.grant", {"to": a, "amount": 10}, T0)
    chain.refused("unauthorized", RELAY, "ledger.grant", {"to": a, "amount": 10}, T0)
    for bad in ({"to": a, "amount": 0}, {"to": a, "amount": -1}, {"to": a, "amount": True},
                {"to": a, "amount": "5"}, {"to": a}, {"to": a, "amount": 1, "memo": "m" * 201},
                {"to": a, "amount": 1, "extra": 1}, {"to": "x", "amount": 1}, {"to": a, "amount": MAX_SAFE_INT}):
        chain.refused("invalid", OP, "ledger.grant", bad, T0)
    # relay-only moves
    for kind, body in (("ledger.lock", {"key": a, "amount": 1, "ref": "r"}),
                       ("ledger.release", {"key": a, "ref": "r"}),
                       ("ledger.reward", {"key": a, "ref": "r", "to": b}),
                       ("ledger.slash", {"key": a, "ref": "r", "to": b})):
        chain.refused("unauthorized", A, kind, body, T0)
        chain.refused("unauthorized", OP, kind, body, T0)
    chain.refused("insufficient_funds", RELAY, "ledger.lock", {"key": a, "amount": 11, "ref": "r"}, T0)
    chain.refused("insufficient_funds", RELAY, "ledger.lock", {"key": b, "amount": 1, "ref": "r"}, T0)
    chain.refused("invalid", RELAY, "ledger.lock", {"key": a, "amount": 1, "ref": ""}, T0)
    chain.refused("invalid", RELAY, "ledger.lock", {"key": a, "amount": 1, "ref": "r" * 257}, T0)
    chain.publish(RELAY, "ledger.lock", {"key": a, "amount": 4, "ref": "r"}, T0 + 2)
    chain.refused("conflict", RELAY, "ledger.lock", {"key": a, "amount": 1, "ref": "r"}, T0)  # one lock per (ref, key)
    for kind in ("ledger.release", "ledger.reward", "ledger.slash"):
        body = {"key": b, "ref": "r"} if kind == "ledger.release" else {"key": b, "ref": "r", "to": a}
        chain.refused("conflict", RELAY, kind, body, T0)
        chain.refused("conflict", RELAY, kind, {**body, "key": a, "ref": "other"}, T0)
    chain.refused("invalid", RELAY, "ledger.release", {"key": a, "ref": "r", "to": b}, T0)
    chain.refused("invalid", RELAY, "ledger.reward", {"key": a, "ref": "r"}, T0)
    chain.refused("invalid", RELAY, "ledger.slash", {"key": a, "ref": "r", "to": "nobody"}, T0)


def test_apply_ignores_records_that_would_not_validate() -> None:
    chain = opened()
    a = A.public_hex
    chain.publish(OP, "ledger.grant", {"to": a, "amount": 10}, T0 + 1)
    start = chain.state
    for author, kind, body in ((A, "ledger.lock", {"key": a, "amount": 5, "ref": "r"}),   # not the relay
                               (RELAY, "ledger.lock", {"key": a, "amount": 50, "ref": "r"}),  # overdraft
                               (A, "ledger.grant", {"to": a, "amount": 50}),  # not an operator
                               (RELAY, "ledger.release", {"key": a, "ref": "r"}),  # no lock
                               (RELAY, "ledger.open", {"operators": [a]})):  # second open
        chain.seal(chain.event(author, kind, body, T0 + 2), T0 + 2)
        assert chain.state is start
    assert balances(chain) == {a: {"available": 10, "locked": 0}}


def test_apply_leaves_its_input_alone() -> None:
    chain = opened()
    a = A.public_hex
    chain.publish(OP, "ledger.grant", {"to": a, "amount": 10}, T0 + 1)
    before, dumped = chain.state, NS.dump(chain.state)
    chain.publish(RELAY, "ledger.lock", {"key": a, "amount": 4, "ref": "r"}, T0 + 2)
    chain.publish(RELAY, "ledger.slash", {"key": a, "ref": "r", "to": B.public_hex}, T0 + 3)
    assert NS.dump(before) == dumped and before.available_of(a) == 10 and len(before.locks) == 0
    assert isinstance(before, LedgerState) and chain.state is not before


def test_dump_load_round_trip_and_resume() -> None:
    chain = opened([OP.public_hex, B.public_hex])
    a, b, c = A.public_hex, B.public_hex, C.public_hex
    steps = [(OP, "ledger.grant", {"to": a, "amount": 70}), (B, "ledger.grant", {"to": c, "amount": 30}),
             (RELAY, "ledger.lock", {"key": a, "amount": 20, "ref": "auction/1"}),
             (RELAY, "ledger.lock", {"key": c, "amount": 30, "ref": "auction/1"}),
             (RELAY, "ledger.lock", {"key": a, "amount": 50, "ref": "auction/2"}),
             (RELAY, "ledger.reward", {"key": c, "ref": "auction/1", "to": a}),
             (RELAY, "ledger.slash", {"key": a, "ref": "auction/2", "to": b})]
    for i, (author, kind, body) in enumerate(steps):
        chain.publish(author, kind, body, T0 + i + 1)
    empty = NS.initial("ledger/main")
    assert NS.dump(NS.load("ledger/main", NS.dump(empty))) == NS.dump(empty)
    whole = NS.dump(chain.state)
    for cut in range(len(chain.records) + 1):
        mid = fold(NS, "ledger/main", chain.records[:cut])
        data = NS.dump(mid)
        loaded = NS.load("ledger/main", data)
        assert NS.dump(loaded) == data
        assert NS.view(loaded) == NS.view(mid) and loaded.supply == mid.supply
        assert NS.dump(fold(NS, "ledger/main", chain.records[cut:], loaded)) == whole
    assert NS.view(chain.state)["balances"] == {a: {"available": 30, "locked": 20}, b: {"available": 50, "locked": 0}}


def test_pmap_is_persistent() -> None:
    m0: PMap[int] = PMap()
    maps = [m0]
    for i in range(600):
        maps.append(maps[-1].set(f"k{i}", i))
    assert len(maps[-1]) == 600 and len(maps[300]) == 300 and len(m0) == 0
    assert maps[300].get("k299") == 299 and maps[300].get("k300") is None and "k300" in maps[301]
    smaller = maps[-1].set("k5", None)
    assert len(smaller) == 599 and "k5" not in smaller and maps[-1].get("k5") == 5
    assert smaller.set("absent", None) is smaller
    assert maps[-1].set("k1", 7).get("k1") == 7 and maps[-1].get("k1") == 1
    assert PMap.of(maps[-1].to_dict()).to_dict() == maps[-1].to_dict()


KEYS = [A, B, C]
REFS = ["auction/1", "auction/2"]
op_strategy = st.tuples(
    st.sampled_from(["grant", "grant", "lock", "lock", "lock", "release", "reward", "slash", "grant_bad", "forged"]),
    st.integers(0, 5), st.integers(0, 1), st.integers(-1, 40), st.integers(0, 3).map(lambda x: x == 3),
)


def _pick(state: LedgerState, op: str, ki: int, ri: int, amount: int, bogus: bool) -> tuple[Keypair, str, Any]:
    """Turn drawn numbers into an event that is mostly admissible (``bogus`` aims for a refusal)."""
    key, ref, to = KEYS[ki % 3].public_hex, REFS[ri], KEYS[(ki + 1) % 3].public_hex
    held = [(r, k) for r, h in sorted(state.locks.items()) for k in sorted(h)]
    if held and not bogus and op in ("release", "reward", "slash", "forged"):
        ref, key = held[ki % len(held)]
    if op == "grant":
        return OP, "ledger.grant", {"to": key, "amount": amount}
    if op == "grant_bad":
        return KEYS[ki % 3], "ledger.grant", {"to": key, "amount": amount}
    if op == "lock":
        funded = sorted(k for k, _ in state.available.items())
        if funded and not bogus:
            key = funded[ki % len(funded)]
        avail = state.available_of(key)
        return RELAY, "ledger.lock", {"key": key, "amount": avail + amount if bogus else amount % max(avail, 1) + 1,
                                      "ref": ref}
    if op == "release":
        return RELAY, "ledger.release", {"key": key, "ref": ref}
    author = KEYS[ki % 3] if op == "forged" else RELAY
    return author, "ledger.slash" if op == "forged" else f"ledger.{op}", {"key": key, "ref": ref, "to": to}


@settings(max_examples=80, deadline=None)
@given(st.lists(op_strategy, min_size=3, max_size=40))
def test_balances_never_negative_and_conserved(ops: list[tuple[str, int, int, int, bool]]) -> None:
    """Random ledger ops, only the admissible ones sequenced: the sum of balances moves only by
    grants and nothing goes negative; inadmissible records folded anyway change nothing."""
    chain = opened()
    granted = 0
    for i, drawn in enumerate(ops):
        author, kind, body = _pick(chain.state, *drawn)
        ev = chain.event(author, kind, body, T0 + i)
        before = chain.state
        refused: ColonyError | None = None
        try:
            NS.validate(before, ev, chain.adm(T0 + i))
        except ColonyError as exc:
            refused = exc
        if refused is not None:
            assert refused.code in ("invalid", "conflict", "insufficient_funds", "unauthorized")
            chain.seal(ev, T0 + i)  # a hostile log: the fold must ignore it
            assert chain.state is before
            continue
        chain.seal(ev, T0 + i)
        if kind == "ledger.grant":
            granted += body["amount"]
        st_ = chain.state
        avail = dict(st_.available.items())
        locks = {ref: dict(held) for ref, held in st_.locks.items()}
        assert all(v > 0 for v in avail.values())
        assert all(v > 0 for held in locks.values() for v in held.values())
        assert sum(avail.values()) + sum(sum(h.values()) for h in locks.values()) == granted == st_.supply
        for k in KEYS:
            assert st_.locked_of(k.public_hex) == sum(h.get(k.public_hex, 0) for h in locks.values())
    assert NS.dump(NS.load("ledger/main", NS.dump(chain.state))) == NS.dump(chain.state)
    assert NS.dump(fold(NS, "ledger/main", chain.records)) == NS.dump(chain.state)
