"""The ``vouch/`` namespace: body rules, relay-only outcomes, supersession by (ts, id), and a state
that is the same set whatever order the events arrive in."""
from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab import trust
from collab.canonical import canonical, parse_json
from collab.errors import BadSignature, InvalidEvent, Unauthorized
from collab.events import GENESIS, Event, Record, event_signing_bytes
from collab.keys import Keypair
from collab.namespaces import Admission
from collab.namespaces.vouch import MAX_FUTURE_MS, VouchNamespace, VouchState

FEED = "vouch/global"
RELAY = Keypair.from_seed(b"R" * 32)
KEYS = [Keypair.from_seed(bytes([i + 1]) * 32) for i in range(5)]
A, B, C, D, E = KEYS
NS = VouchNamespace()
ADM = Admission(10_000_000, RELAY.public_hex)


def vset(key: Keypair, subject: Keypair, weight: int, ts: int = 1000, **extra: Any) -> Event:
    return Event.create(key, FEED, "vouch.set", {"subject": subject.public_hex, "weight": weight, **extra}, ts=ts)


def vrevoke(key: Keypair, subject: Keypair, ts: int = 1000) -> Event:
    return Event.create(key, FEED, "vouch.revoke", {"subject": subject.public_hex}, ts=ts)


def voutcome(subject: Keypair, outcome: str = "delivered", ts: int = 1000, key: Keypair = RELAY,
             ref: str = "auction/x") -> Event:
    return Event.create(key, FEED, "vouch.outcome", {"subject": subject.public_hex, "outcome": outcome, "ref": ref},
                        ts=ts)


def seal(ev: Event, seq: int = 1, rtime: int | None = None) -> Record:
    return Record.seal(RELAY, ev, seq, GENESIS, ev.ts if rtime is None else rtime)


def fold(events: list[Event] | list[Record]) -> VouchState:
    state = NS.initial(FEED)
    for i, x in enumerate(events, 1):
        state = NS.apply(state, x if isinstance(x, Record) else seal(x, i))
    return state


# -- validate ----------------------------------------------------------------------------------------

def test_valid_events_pass() -> None:
    s = NS.initial(FEED)
    NS.validate(s, vset(A, B, 800), ADM)
    NS.validate(s, vset(A, B, -1000, note="scammed me"), ADM)
    NS.validate(s, vset(A, B, 1000, note="x" * 1000), ADM)
    NS.validate(s, vrevoke(A, B), ADM)
    NS.validate(s, voutcome(B, "delivered"), ADM)
    NS.validate(s, voutcome(B, "slashed", ref="r" * 256), ADM)


@pytest.mark.parametrize(("kind", "body"), [
    ("vouch.set", {"subject": "B", "weight": 1001}),
    ("vouch.set", {"subject": "B", "weight": -1001}),
    ("vouch.set", {"subject": "B", "weight": True}),
    ("vouch.set", {"subject": "B", "weight": "5"}),
    ("vouch.set", {"subject": "B"}),
    ("vouch.set", {"subject": "B", "weight": 5, "extra": 1}),
    ("vouch.set", {"subject": "B", "weight": 5, "note": "x" * 1001}),
    ("vouch.set", {"subject": "B", "weight": 5, "note": 7}),
    ("vouch.set", {"subject": "B".upper() * 2, "weight": 5}),
    ("vouch.set", {"subject": "ab" * 31, "weight": 5}),
    ("vouch.set", {"subject": 12, "weight": 5}),
    ("vouch.set", ["B", 5]),
    ("vouch.revoke", {"subject": "B", "weight": 0}),
    ("vouch.revoke", {}),
    ("vouch.outcome", {"subject": "B", "outcome": "great", "ref": "r"}),
    ("vouch.outcome", {"subject": "B", "outcome": ["delivered"], "ref": "r"}),
    ("vouch.outcome", {"subject": "B", "outcome": "delivered"}),
    ("vouch.outcome", {"subject": "B", "outcome": "delivered", "ref": "r" * 257}),
    ("vouch.outcome", {"subject": "B", "outcome": "delivered", "ref": 3}),
    ("vouch.other", {"subject": "B"}),
])
def test_bad_bodies_are_invalid(kind: str, body: Any) -> None:
    if isinstance(body, dict) and body.get("subject") == "B":
        body = {**body, "subject": B.public_hex}
    author = RELAY if kind == "vouch.outcome" else A
    with pytest.raises(InvalidEvent):
        NS.validate(NS.initial(FEED), Event.create(author, FEED, kind, body, ts=1000), ADM)


def test_self_vouch_is_invalid() -> None:
    s = NS.initial(FEED)
    for ev in (vset(A, A, 500), vrevoke(A, A), voutcome(RELAY, key=RELAY)):
        with pytest.raises(InvalidEvent, match="itself"):
            NS.validate(s, ev, ADM)


def test_outcome_by_a_non_relay_key_is_unauthorized() -> None:
    ev = voutcome(B, "delivered", key=A)
    with pytest.raises(Unauthorized):
        NS.validate(NS.initial(FEED), ev, ADM)
    # the same event is fine where A is the sequencing relay
    NS.validate(NS.initial(FEED), ev, Admission(ADM.now, A.public_hex))


def test_far_future_ts_is_invalid() -> None:
    NS.validate(NS.initial(FEED), vset(A, B, 5, ts=ADM.now + MAX_FUTURE_MS), ADM)
    with pytest.raises(InvalidEvent, match="ahead"):
        NS.validate(NS.initial(FEED), vset(A, B, 5, ts=ADM.now + MAX_FUTURE_MS + 1), ADM)


def test_tampered_vouch_fails_the_core_signature_check() -> None:
    wire = vset(A, B, 100).to_wire()
    tampered = {**wire, "body": {**wire["body"], "weight": 1000}}
    with pytest.raises(BadSignature):
        Event.from_wire(tampered)
    # a vouch "by A" that C signed: consistent id, but the signature is not A's
    body = {"subject": B.public_hex, "weight": 1000}
    signing = event_signing_bytes(FEED, "vouch.set", A.public_hex, 1000, 0, body)
    forged = {"feed": FEED, "kind": "vouch.set", "author": A.public_hex, "ts": 1000, "ctx": 0, "body": body,
              "sig": C.sign(signing).hex(), "id": hashlib.sha256(signing).hexdigest()}
    with pytest.raises(BadSignature, match="signature"):
        Event.from_wire(forged)
    assert Event.from_wire(wire).body["weight"] == 100


# -- apply -------------------------------------------------------------------------------------------

def test_latest_by_ts_then_id_wins_in_any_order() -> None:
    old, new = vset(A, B, 900, ts=1000), vrevoke(A, B, ts=2000)
    for order in ([old, new], [new, old]):
        s = fold(order)
        assert list(s.latest()) == [new] and s.max_ts == 2000
    # equal ts: the greater id wins
    x, y = vset(A, C, 100, ts=5000), vset(A, C, 200, ts=5000)
    hi = max(x, y, key=lambda e: e.id)
    assert list(fold([x, y]).latest()) == list(fold([y, x]).latest()) == [hi]


def test_apply_is_copy_on_write() -> None:
    s0 = fold([vset(A, B, 100), voutcome(B)])
    before = NS.dump(s0)
    s1 = NS.apply(s0, seal(vset(A, C, 300, ts=2000), 3))
    s2 = NS.apply(s1, seal(vset(A, B, 400, ts=3000), 4))
    s3 = NS.apply(s2, seal(voutcome(B, "slashed", ts=4000), 5))
    assert NS.dump(s0) == before and s0.count() == 2
    assert s1.count() == 3 and s2.count() == 3 and s3.count() == 4
    assert s1.vouches[A.public_hex][B.public_hex].body["weight"] == 100
    assert s2.vouches[A.public_hex][B.public_hex].body["weight"] == 400
    assert len(s2.outcomes[B.public_hex]) == 1 and len(s3.outcomes[B.public_hex]) == 2


def test_apply_ignores_invalid_records() -> None:
    s0 = fold([vset(A, B, 100)])
    bad = [
        seal(voutcome(B, key=A)),                            # outcome not by the sequencing relay
        seal(vset(A, A, 100, ts=2000)),                      # self-vouch
        seal(Event.create(A, FEED, "vouch.set", {"subject": B.public_hex, "weight": 5000}, ts=2000)),
        seal(vset(A, C, 100, ts=ADM.now), rtime=ADM.now - MAX_FUTURE_MS - 1),  # ts from the future
        seal(Event.create(A, FEED, "chat.msg", {"text": "hi"}, ts=2000)),
    ]
    for rec in bad:
        assert NS.apply(s0, rec) is s0
    # a duplicate or superseded record changes nothing either
    assert NS.apply(s0, seal(vset(A, B, 100))) is s0
    assert NS.apply(s0, seal(vset(A, B, 999, ts=10))) is s0


def test_outcomes_are_kept_all_and_deduplicated() -> None:
    o1, o2 = voutcome(B, "delivered", ts=1000, ref="a/1"), voutcome(B, "slashed", ts=1000, ref="a/2")
    s = fold([o1, o2, o1])
    assert s.all_outcomes() == sorted([o1, o2], key=lambda e: (e.ts, e.id))


def test_dump_load_round_trip() -> None:
    s = fold([vset(A, B, 100, ts=1000, note="ok"), vrevoke(A, C, ts=1500), vset(C, A, -30, ts=900),
              voutcome(B, ts=2000), voutcome(C, "slashed", ts=2500)])
    data = NS.dump(s)
    assert canonical(parse_json(data)) == data
    back = NS.load(FEED, data)
    assert back == s and NS.dump(back) == data and back.max_ts == 2500
    assert NS.dump(NS.initial(FEED)) == NS.dump(NS.load(FEED, NS.dump(NS.initial(FEED))))
    with pytest.raises(InvalidEvent):
        NS.load(FEED, b'{"v":99}')


def test_view() -> None:
    s = fold([vset(A, B, 700, ts=1000, note="good"), vrevoke(C, B, ts=1200), voutcome(B, ts=1500, ref="auction/7")])
    v = NS.view(s)
    assert v["vouches"] == sorted([
        {"author": A.public_hex, "subject": B.public_hex, "weight": 700, "revoked": False, "note": "good",
         "ts": 1000, "id": vset(A, B, 700, ts=1000, note="good").id},
        {"author": C.public_hex, "subject": B.public_hex, "weight": 0, "revoked": True, "note": None,
         "ts": 1200, "id": vrevoke(C, B, ts=1200).id},
    ], key=lambda x: (x["author"], x["subject"]))
    assert v["outcomes"] == [{"relay": RELAY.public_hex, "subject": B.public_hex, "outcome": "delivered",
                              "ref": "auction/7", "ts": 1500, "id": voutcome(B, ts=1500, ref="auction/7").id}]
    assert v["scores"] == trust.scores(s, at=1500) and sum(v["scores"].values()) == 10**9
    canonical(v)  # JSON-friendly, no floats
    assert NS.view(NS.initial(FEED)) == {"vouches": [], "outcomes": [], "scores": {}}
    assert NS.initial(FEED)  # an empty state is still truthy (callers write `state or ...`)


# -- order independence ------------------------------------------------------------------------------

POOL = [*KEYS, RELAY]


@st.composite
def event_sets(draw: st.DrawFn) -> list[Record]:
    specs = draw(st.lists(st.tuples(
        st.sampled_from(["vouch.set", "vouch.revoke", "vouch.outcome"]),
        st.integers(0, len(POOL) - 1), st.integers(0, len(POOL) - 1),
        st.integers(-1000, 1000), st.integers(0, 6), st.booleans(),
    ), max_size=25))
    recs = []
    for n, (kind, ai, si, weight, tick, flag) in enumerate(specs, 1):
        author, subject = POOL[ai], POOL[si]
        ts = 1_000_000 + tick * 600_000  # few distinct ts: ties are broken by id
        if kind == "vouch.set":
            ev = vset(author, subject, weight, ts=ts)
        elif kind == "vouch.revoke":
            ev = vrevoke(author, subject, ts=ts)
        else:  # usually by the relay; sometimes by another key (then ignored)
            ev = voutcome(subject, "delivered" if flag else "slashed", ts=ts,
                          key=RELAY if weight % 4 else author, ref=f"auction/{weight % 3}")
        recs.append(seal(ev, n, rtime=ts + weight))  # rtime never matters (within the future bound)
    return recs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=event_sets(), data=st.data())
def test_any_arrival_order_gives_the_same_state_and_scores(recs: list[Record], data: st.DataObject) -> None:
    first = data.draw(st.permutations(recs))
    second = data.draw(st.permutations(recs))
    s1, s2 = fold(first), fold(second)
    assert NS.dump(s1) == NS.dump(s2) and s1 == s2
    assert NS.load(FEED, NS.dump(s1)) == s1
    sc1 = trust.scores(s1, relay=RELAY.public_hex)
    assert sc1 == trust.scores(s2, relay=RELAY.public_hex) == trust.compute(second, relay=RELAY.public_hex)
    assert NS.view(s1) == NS.view(s2)
    if sc1:
        assert sum(sc1.values()) == 10**9 and min(sc1.values()) >= 0
    else:
        assert s1.count() == 0
