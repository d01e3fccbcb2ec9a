"""The ``lease/`` state machine: grants, renewals, expiries, standby order, fences; and a
Hypothesis search over interleavings of campaign, renew, resign, withdraw and clock advance
(with a relay that also tries grants and expiries at the wrong moments): whatever is admitted
folds to a log where the replay invariants hold."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab.errors import ColonyError, Conflict, InvalidEvent, Late, StaleEpoch, Unauthorized
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces import Admission
from collab.namespaces.lease import LeaseNamespace, LeaseState, check_fence, fence_of, next_grant, standby
from collab.replay import replay

RELAY = Keypair.from_seed(b"r" * 32)
AGENTS = [Keypair.from_seed(bytes([65 + i]) * 32) for i in range(4)]
FEED = "lease/x"
NS = LeaseNamespace()


class Log:
    """A tiny sequencer: admits events as the relay would, at a clock the test moves."""

    def __init__(self) -> None:
        self.state = NS.initial(FEED)
        self.recs: list[Record] = []
        self.now = 1000
        policy = Event.create(RELAY, FEED, "feed.policy", {"policy": "signed"}, ts=0)
        self._append(policy)

    def _append(self, ev: Event) -> Record:
        prev = self.recs[-1].hash if self.recs else GENESIS
        rec = Record.seal(RELAY, ev, len(self.recs) + 1, prev, self.now)
        self.recs.append(rec)
        if ev.kind != "feed.policy":
            self.state = NS.apply(self.state, rec)
        return rec

    def pub(self, key: Keypair, kind: str, body: dict[str, Any]) -> None:
        ev = Event.create(key, FEED, kind, body, ts=self.now)
        if any(r.event.id == ev.id for r in self.recs):
            return  # the same event again: the relay answers dup and stores nothing
        NS.validate(self.state, ev, Admission(self.now, RELAY.public_hex))
        self._append(ev)

    def relay_duties(self) -> None:
        """What the relay's plug-in does: expire a holder past its deadline, grant when free."""
        st_ = self.state
        if st_.holder is not None and self.now > st_.deadline:
            self.pub(RELAY, "lease.expired", {"holder": st_.holder, "epoch": st_.epoch})
        body = next_grant(self.state)
        if body is not None:
            self.pub(RELAY, "lease.granted", body)


def test_grant_renew_expire_and_standby_order() -> None:
    log = Log()
    a, b, c = AGENTS[:3]
    log.pub(a, "lease.campaign", {"ttl_ms": 1000})
    log.relay_duties()
    assert log.state.holder == a.public_hex and log.state.epoch == 1 and log.state.deadline == 2000
    log.pub(b, "lease.campaign", {"ttl_ms": 500})
    log.pub(c, "lease.campaign", {"priority": 5})
    assert [x.key for x in standby(log.state)] == [c.public_hex, b.public_hex]
    with pytest.raises(Conflict):  # no grant while the lease is held
        log.pub(RELAY, "lease.granted", {"holder": c.public_hex, "epoch": 2, "ttl_ms": 10_000})
    log.now = 1900
    log.pub(a, "lease.renew", {"epoch": 1})
    assert log.state.deadline == 2900
    with pytest.raises(Late):  # not before the deadline
        log.pub(RELAY, "lease.expired", {"holder": a.public_hex, "epoch": 1})
    with pytest.raises(StaleEpoch):
        log.pub(a, "lease.renew", {"epoch": 2})
    with pytest.raises(Unauthorized):
        log.pub(a, "lease.expired", {"holder": a.public_hex, "epoch": 1})
    log.now = 2901
    with pytest.raises(Late):  # a renewal after the deadline is refused
        log.pub(a, "lease.renew", {"epoch": 1})
    log.relay_duties()  # expire a, grant c (priority 5)
    assert log.state.holder == c.public_hex and log.state.epoch == 2
    assert [h["end"] for h in log.state.history] == ["expired", None]
    log.pub(c, "lease.resign", {"epoch": 2})
    log.relay_duties()
    assert log.state.holder == b.public_hex and log.state.epoch == 3 and log.state.ttl_ms == 500
    with pytest.raises(Conflict):
        log.pub(b, "lease.withdraw", {})
    res = replay(log.recs)
    assert res.verified, res.anomalies
    assert NS.load(FEED, NS.dump(log.state)) == log.state


def test_fence_checks() -> None:
    log = Log()
    a, b = AGENTS[:2]
    log.pub(a, "lease.campaign", {"ttl_ms": 1000})
    log.relay_duties()
    check_fence(log.state, a.public_hex, 1, 2000)
    for author, epoch, now in ((b.public_hex, 1, 1500), (a.public_hex, 2, 1500), (a.public_hex, 1, 2001)):
        with pytest.raises(StaleEpoch):
            check_fence(log.state, author, epoch, now)
    ev = Event.create(a, "task/t", "task.close", {"status": "completed", "fence": {"lease": FEED, "epoch": 1}})
    assert fence_of(ev) == (FEED, 1)
    for bad in ({"lease": "doc/x", "epoch": 1}, {"lease": FEED, "epoch": 0}, {"lease": FEED}, "x"):
        with pytest.raises(InvalidEvent):
            fence_of(Event.create(a, "task/t", "k", {"fence": bad}))


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["campaign", "renew", "resign", "withdraw", "advance", "grant", "expire"]),
    st.integers(0, len(AGENTS) - 1), st.integers(0, 3), st.integers(0, 1500)), max_size=40)


def holders(recs: list[Record]) -> None:
    """The replay invariants, checked independently of the namespace's own rules."""
    holder: str | None = None
    deadline, ttl, last_epoch = 0, 0, 0
    for rec in recs:
        ev = rec.event
        if ev.kind == "lease.granted":
            assert holder is None, f"grant at {rec.seq} while {holder} holds"
            assert ev.body["epoch"] > last_epoch
            holder, last_epoch, ttl = ev.body["holder"], ev.body["epoch"], ev.body["ttl_ms"]
            deadline = rec.rtime + ttl
        elif ev.kind == "lease.renew":
            assert ev.author == holder and rec.rtime <= deadline
            deadline = rec.rtime + ttl
        elif ev.kind == "lease.expired":
            assert rec.rtime >= deadline and ev.body["holder"] == holder
            holder = None
        elif ev.kind == "lease.resign":
            assert ev.author == holder
            holder = None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_any_interleaving_keeps_the_invariants(actions: list[tuple[str, int, int, int]]) -> None:
    log = Log()
    for what, who, n, dt in actions:
        key = AGENTS[who]
        st_ = log.state
        try:
            if what == "campaign":
                log.pub(key, "lease.campaign", {"priority": n, "ttl_ms": 200 + 300 * n})
            elif what in ("renew", "resign"):
                log.pub(key, f"lease.{what}", {"epoch": max(1, st_.epoch - n % 2)})
            elif what == "withdraw":
                log.pub(key, "lease.withdraw", {})
            elif what == "advance":
                log.now += dt
            elif what == "grant":  # a relay trying a grant of its own choosing
                log.pub(RELAY, "lease.granted", {"holder": key.public_hex, "epoch": st_.epoch + n, "ttl_ms": 500})
            else:
                log.pub(RELAY, "lease.expired", {"holder": st_.holder or key.public_hex, "epoch": st_.epoch})
        except ColonyError:
            assert log.state == st_  # a refusal changes nothing
        if what in ("advance", "resign", "campaign"):
            log.relay_duties()
    holders(log.recs)
    res = replay(log.recs)
    assert res.verified, res.anomalies
    assert res.state == log.state
    state: LeaseState = res.state
    assert state.holder is None or all(c.key != state.holder for c in state.candidates)
