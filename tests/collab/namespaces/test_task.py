"""Task trees (collab/namespaces/task.py): lifecycle, authority, stall windows, replay."""
from __future__ import annotations

from typing import Any

import pytest

from collab.errors import ColonyError, Conflict, InvalidEvent, Unauthorized
from collab.events import GENESIS, Event, Record
from collab.keys import Keypair
from collab.namespaces.base import Admission, Registry
from collab.namespaces.generic import GenericNamespace
from collab.namespaces.task import (
    COMPLETED, INPUT_REQUIRED, SUBMITTED, WORKING, TaskNamespace, TaskState, progress, stall_deadlines,
)
from collab.replay import replay

RELAY = Keypair.from_seed(b"R" * 32)
LEADER = Keypair.from_seed(b"L" * 32)
A = Keypair.from_seed(b"A" * 32)
B = Keypair.from_seed(b"B" * 32)
FEED = "task/t1"


class Feed:
    """A relay in miniature: validate with an Admission, seal, apply; check apply is pure."""

    def __init__(self) -> None:
        self.ns = TaskNamespace()
        self.state: TaskState = self.ns.initial(FEED)
        self.records: list[Record] = []

    def publish(self, key: Keypair, kind: str, body: Any, now: int) -> Record:
        ev = Event.create(key, FEED, kind, body, ts=now)
        self.ns.validate(self.state, ev, Admission(now, RELAY.public_hex))
        return self.force(ev, now)

    def force(self, ev: Event, now: int) -> Record:
        """Sequence without validation (a misbehaving relay)."""
        before, dumped = self.state, self.ns.dump(self.state)
        rec = Record.seal(RELAY, ev, len(self.records) + 1, self.records[-1].hash if self.records else GENESIS, now)
        self.state = self.ns.apply(self.state, rec)
        assert self.ns.dump(before) == dumped and self.state is not before  # input untouched
        self.records.append(rec)
        return rec

    def refuse(self, exc: type[ColonyError], key: Keypair, kind: str, body: Any, now: int) -> ColonyError:
        ev = Event.create(key, FEED, kind, body, ts=now)
        with pytest.raises(exc) as info:
            self.ns.validate(self.state, ev, Admission(now, RELAY.public_hex))
        assert type(info.value) is exc  # exactly: a Conflict is not an acceptable "invalid"
        return info.value

    def sub(self, name: str = "s1") -> Any:
        return self.state.subs[name]


def opened(hb: int = 1000, assignee: Keypair = A) -> Feed:
    f = Feed()
    f.publish(LEADER, "task.open", {"title": "build it", "input": {"repo": "x"}}, 1000)
    f.publish(LEADER, "task.spawn", {"sub": "s1", "assignee": assignee.public_hex, "title": "part 1",
                                     "heartbeat_ms": hb}, 1000)
    return f


def test_stall_reassign_resume_complete() -> None:
    f = opened(hb=1000)
    assert f.sub().status == SUBMITTED and f.sub().last_seen == 1000
    f.publish(A, "task.heartbeat", {"sub": "s1"}, 1500)
    assert f.sub().status == WORKING and f.sub().last_seen == 1500
    cp = f.publish(A, "task.checkpoint", {"sub": "s1", "state": {"step": 3}}, 1800)
    f.publish(A, "task.progress", {"sub": "s1", "done": 3, "total": 10}, 1900)
    assert stall_deadlines(f.state) == [(2900, "s1")]

    stalled = {"sub": "s1", "assignee": A.public_hex, "last_seen": 1900}
    err = f.refuse(InvalidEvent, RELAY, "task.stalled", stalled, 2900)  # inside the window: not yet
    assert err.code == "invalid"
    assert f.refuse(Unauthorized, A, "task.stalled", stalled, 5000).code == "unauthorized"
    assert f.refuse(Unauthorized, LEADER, "task.stalled", stalled, 5000).code == "unauthorized"
    stale = {**stalled, "last_seen": 1500}
    assert f.refuse(Conflict, RELAY, "task.stalled", stale, 5000).code == "conflict"
    f.publish(RELAY, "task.stalled", stalled, 2901)
    assert f.sub().stalled and f.sub().status == WORKING and f.sub().last_seen == 1900
    assert stall_deadlines(f.state) == []
    assert f.refuse(Conflict, RELAY, "task.stalled", stalled, 6000).code == "conflict"  # flagged once

    f.publish(LEADER, "task.reassign", {"sub": "s1", "assignee": B.public_hex}, 3000)
    s = f.sub()
    assert (s.assignee, s.status, s.stalled, s.last_seen) == (B.public_hex, SUBMITTED, False, 3000)
    assert (s.checkpoint, s.checkpoint_seq) == ({"step": 3}, cp.seq)  # the new assignee resumes from it
    assert (s.done, s.total, s.previous) == (3, 10, (A.public_hex,))
    assert f.ns.view(f.state)["subtasks"][0]["checkpoint"] == {"state": {"step": 3}, "seq": cp.seq}
    assert stall_deadlines(f.state) == [(4000, "s1")]

    assert f.refuse(Unauthorized, A, "task.heartbeat", {"sub": "s1"}, 3100).code == "unauthorized"
    assert f.refuse(Unauthorized, A, "task.done", {"sub": "s1"}, 3100).code == "unauthorized"
    f.publish(B, "task.heartbeat", {"sub": "s1"}, 3200)
    f.publish(B, "task.progress", {"sub": "s1", "done": 10, "total": 10, "note": "all"}, 3300)
    f.publish(B, "task.done", {"sub": "s1", "result": {"ok": True}}, 3400)
    assert (f.sub().status, f.sub().result) == (COMPLETED, {"ok": True})
    assert stall_deadlines(f.state) == []
    assert f.refuse(Conflict, B, "task.heartbeat", {"sub": "s1"}, 3500).code == "conflict"
    f.publish(LEADER, "task.close", {"status": "completed", "result": 42}, 3600)
    assert (f.state.status, f.state.result, f.state.closed_at) == ("completed", 42, 3600)
    view = f.ns.view(f.state)
    assert view["status"] == "completed" and view["progress"]["percent"] == 100


def test_stall_from_spawn_without_any_report() -> None:
    f = opened(hb=500)
    assert stall_deadlines(f.state) == [(1500, "s1")]
    body = {"sub": "s1", "assignee": A.public_hex, "last_seen": 1000}
    f.refuse(InvalidEvent, RELAY, "task.stalled", body, 1500)
    f.publish(RELAY, "task.stalled", body, 1501)
    assert f.sub().stalled and f.sub().status == SUBMITTED
    f.publish(A, "task.heartbeat", {"sub": "s1"}, 1600)  # the assignee's report clears the flag
    assert not f.sub().stalled and f.sub().status == WORKING
    assert stall_deadlines(f.state) == [(2100, "s1")]


@pytest.mark.parametrize("report", [
    ("task.heartbeat", {}), ("task.progress", {"done": 0, "total": 5}), ("task.checkpoint", {"state": None}),
])
def test_submitted_to_working_on_any_report(report: tuple[str, dict[str, Any]]) -> None:
    f = opened()
    kind, extra = report
    f.publish(A, kind, {"sub": "s1", **extra}, 1200)
    assert f.sub().status == WORKING and f.sub().last_seen == 1200
    if kind == "task.checkpoint":
        assert f.sub().checkpoint is None and f.sub().checkpoint_seq == 3  # a null checkpoint still counts


def test_input_required_round_trip() -> None:
    f = opened(hb=1000)
    f.publish(A, "task.input", {"sub": "s1", "question": "which branch?"}, 1100)  # straight from submitted
    assert (f.sub().status, f.sub().question) == (INPUT_REQUIRED, "which branch?")
    assert stall_deadlines(f.state) == []  # waiting on the leader: no heartbeat expected
    f.refuse(Conflict, RELAY, "task.stalled", {"sub": "s1", "assignee": A.public_hex, "last_seen": 1100}, 9000)
    f.refuse(Conflict, A, "task.input", {"sub": "s1", "question": "again?"}, 1200)
    f.publish(A, "task.heartbeat", {"sub": "s1"}, 1300)  # reports keep it input-required
    assert f.sub().status == INPUT_REQUIRED
    f.refuse(Unauthorized, A, "task.reply", {"sub": "s1", "answer": "main"}, 1400)
    f.publish(LEADER, "task.reply", {"sub": "s1", "answer": {"branch": "main"}}, 5000)
    s = f.sub()
    assert (s.status, s.answer, s.question, s.last_seen) == (WORKING, {"branch": "main"}, None, 5000)
    assert stall_deadlines(f.state) == [(6000, "s1")]  # the window restarts at the reply
    f.refuse(Conflict, LEADER, "task.reply", {"sub": "s1", "answer": "twice"}, 5100)
    f.publish(A, "task.input", {"sub": "s1", "question": "and now?"}, 5200)
    f.publish(A, "task.done", {"sub": "s1"}, 5300)  # an assignee may finish from input-required
    assert f.sub().status == COMPLETED and f.sub().result is None


@pytest.mark.parametrize("end", [
    (A, "task.done", {"result": 1}, "completed"), (A, "task.failed", {"reason": "disk full"}, "failed"),
    (LEADER, "task.cancel", {}, "cancelled"),
])
@pytest.mark.parametrize("start", ["submitted", "working", "input-required"])
def test_terminal_transitions_and_refusals(end: tuple[Keypair, str, dict[str, Any], str], start: str) -> None:
    f = opened()
    if start == "working":
        f.publish(A, "task.heartbeat", {"sub": "s1"}, 1100)
    elif start == "input-required":
        f.publish(A, "task.input", {"sub": "s1", "question": "?"}, 1100)
    assert f.sub().status == start
    key, kind, extra, status = end
    f.publish(key, kind, {"sub": "s1", **extra}, 1200)
    assert f.sub().status == status
    assert stall_deadlines(f.state) == []
    for key, kind, body in [
        (A, "task.heartbeat", {}), (A, "task.progress", {"done": 1, "total": 2}), (A, "task.checkpoint", {"state": 1}),
        (A, "task.input", {"question": "?"}), (A, "task.done", {}), (A, "task.failed", {"reason": "x"}),
        (LEADER, "task.reply", {"answer": 1}), (LEADER, "task.cancel", {}),
        (LEADER, "task.reassign", {"assignee": B.public_hex}),
        (RELAY, "task.stalled", {"assignee": A.public_hex, "last_seen": 1000}),
        (LEADER, "task.spawn", {"sub": "child", "assignee": B.public_hex, "title": "c", "parent": "s1"}),
    ]:
        full = {"sub": "s1", **body} if kind != "task.spawn" else body
        assert f.refuse(Conflict, key, kind, full, 99_000).code == "conflict", kind


def test_closed_task_refuses_everything() -> None:
    f = opened()
    f.publish(A, "task.heartbeat", {"sub": "s1"}, 1100)
    f.publish(LEADER, "task.close", {"status": "cancelled"}, 1200)
    assert f.state.closed and f.sub().status == WORKING
    assert stall_deadlines(f.state) == []  # no timers for a closed task
    for key, kind, body in [
        (LEADER, "task.close", {"status": "completed"}),
        (LEADER, "task.spawn", {"sub": "s2", "assignee": B.public_hex, "title": "late"}),
        (A, "task.heartbeat", {"sub": "s1"}), (A, "task.done", {"sub": "s1"}),
        (LEADER, "task.cancel", {"sub": "s1"}),
        (RELAY, "task.stalled", {"sub": "s1", "assignee": A.public_hex, "last_seen": 1100}),
    ]:
        assert f.refuse(Conflict, key, kind, body, 99_000).code == "conflict", kind
    f.refuse(Conflict, LEADER, "task.open", {"title": "again"}, 99_000)


def test_authority() -> None:
    f = opened()
    for kind, body in [
        ("task.spawn", {"sub": "s2", "assignee": A.public_hex, "title": "t"}),
        ("task.reply", {"sub": "s1", "answer": 1}),
        ("task.cancel", {"sub": "s1"}), ("task.reassign", {"sub": "s1", "assignee": A.public_hex}),
        ("task.close", {"status": "failed"}),
    ]:
        assert f.refuse(Unauthorized, A, kind, body, 1100).code == "unauthorized", kind
    for who in (LEADER, B, RELAY):  # reports only by the current assignee, not even the leader
        f.refuse(Unauthorized, who, "task.heartbeat", {"sub": "s1"}, 1100)
        f.refuse(Unauthorized, who, "task.failed", {"sub": "s1", "reason": "no"}, 1100)


def test_structure_rules() -> None:
    f = Feed()
    f.refuse(InvalidEvent, LEADER, "task.spawn", {"sub": "s1", "assignee": A.public_hex, "title": "t"}, 1000)
    f.publish(LEADER, "task.open", {"title": ""}, 1000)
    assert f.state.leader == LEADER.public_hex and f.state.status == "open"
    f.refuse(Conflict, A, "task.open", {"title": "mine"}, 1000)
    f.publish(LEADER, "task.spawn", {"sub": "root", "assignee": A.public_hex, "title": "r"}, 1000)
    assert f.sub("root").heartbeat_ms == 30_000
    f.refuse(Conflict, LEADER, "task.spawn", {"sub": "root", "assignee": B.public_hex, "title": "dup"}, 1000)
    orphan = {"sub": "c", "assignee": B.public_hex, "title": "c", "parent": "nope"}
    f.refuse(Conflict, LEADER, "task.spawn", orphan, 1000)
    f.publish(LEADER, "task.spawn", {"sub": "c.1", "assignee": B.public_hex, "title": "c", "parent": "root",
                                     "input": [1, 2]}, 1000)
    assert (f.sub("c.1").parent, f.sub("c.1").input) == ("root", [1, 2])
    f.refuse(Conflict, A, "task.heartbeat", {"sub": "ghost"}, 1000)
    f.refuse(Conflict, LEADER, "task.cancel", {"sub": "ghost"}, 1000)
    f.publish(LEADER, "task.reassign", {"sub": "root", "assignee": B.public_hex, "auction": "auction/a1"}, 1100)
    assert f.sub("root").auction == "auction/a1"


KEY = "ab" * 32


@pytest.mark.parametrize(("kind", "body"), [
    ("task.bogus", {"sub": "s1"}),
    ("task.heartbeat", ["s1"]),
    ("task.heartbeat", {"sub": "s1", "extra": 1}),
    ("task.heartbeat", {}),
    ("task.heartbeat", {"sub": "bad id"}),
    ("task.heartbeat", {"sub": "x" * 65}),
    ("task.spawn", {"sub": "s2", "assignee": KEY.upper(), "title": "t"}),
    ("task.spawn", {"sub": "s2", "assignee": KEY, "title": "t" * 201}),
    ("task.spawn", {"sub": "s2", "assignee": KEY, "title": "t", "heartbeat_ms": 499}),
    ("task.spawn", {"sub": "s2", "assignee": KEY, "title": "t", "heartbeat_ms": 86_400_001}),
    ("task.spawn", {"sub": "s2", "assignee": KEY, "title": "t", "heartbeat_ms": True}),
    ("task.spawn", {"sub": "s2", "assignee": KEY, "title": "t", "parent": "a/b"}),
    ("task.progress", {"sub": "s1", "done": 11, "total": 10}),
    ("task.progress", {"sub": "s1", "done": 0, "total": 0}),
    ("task.progress", {"sub": "s1", "done": -1, "total": 3}),
    ("task.progress", {"sub": "s1", "done": 1, "total": 3, "note": "n" * 1001}),
    ("task.checkpoint", {"sub": "s1"}),
    ("task.input", {"sub": "s1", "question": 7}),
    ("task.failed", {"sub": "s1"}),
    ("task.reassign", {"sub": "s1", "assignee": KEY, "auction": "ledger/main"}),
    ("task.reassign", {"sub": "s1", "assignee": KEY, "auction": "not a feed"}),
    ("task.stalled", {"sub": "s1", "assignee": KEY, "last_seen": -1}),
    ("task.close", {"status": "open"}),
    ("task.open", {"title": "t", "extra": None}),
])
def test_body_validation(kind: str, body: Any) -> None:
    f = opened()
    key = {"task.heartbeat": A, "task.progress": A, "task.checkpoint": A, "task.input": A,
           "task.failed": A, "task.stalled": RELAY}.get(kind, LEADER)
    assert f.refuse(InvalidEvent, key, kind, body, 1100).code == "invalid"


def test_progress_aggregation() -> None:
    f = opened()
    for sub, who in [("s2", B), ("s3", A), ("s4", B), ("s5", A)]:
        f.publish(LEADER, "task.spawn", {"sub": sub, "assignee": who.public_hex, "title": sub,
                                         "heartbeat_ms": 1000}, 1000)
    f.publish(A, "task.progress", {"sub": "s1", "done": 2, "total": 4}, 1100)
    f.publish(B, "task.progress", {"sub": "s2", "done": 5, "total": 5}, 1100)
    f.publish(B, "task.done", {"sub": "s2"}, 1200)
    f.publish(A, "task.input", {"sub": "s3", "question": "?"}, 1200)
    f.publish(LEADER, "task.cancel", {"sub": "s4"}, 1200)
    f.publish(RELAY, "task.stalled", {"sub": "s5", "assignee": A.public_hex, "last_seen": 1000}, 2001)
    assert progress(f.state) == {
        "subtasks": 5, "stalled": 1, "done": 7, "total": 9, "percent": 77,
        "by_status": {"submitted": 1, "working": 1, "input-required": 1, "completed": 1, "failed": 0,
                      "cancelled": 1},
    }
    assert progress(TaskState())["percent"] == 0
    assert f.ns.view(f.state)["progress"] == progress(f.state)
    assert stall_deadlines(f.state) == [(2100, "s1")]


def scenario() -> Feed:
    f = opened(hb=1000)
    f.publish(LEADER, "task.spawn", {"sub": "s2", "assignee": B.public_hex, "title": "two", "parent": "s1"}, 1000)
    f.publish(A, "task.checkpoint", {"sub": "s1", "state": {"k": [1, "x", None]}}, 1100)
    f.publish(RELAY, "task.stalled", {"sub": "s1", "assignee": A.public_hex, "last_seen": 1100}, 2200)
    f.publish(LEADER, "task.reassign", {"sub": "s1", "assignee": B.public_hex}, 2300)
    f.publish(B, "task.input", {"sub": "s2", "question": "é?"}, 2400)
    f.publish(LEADER, "task.reply", {"sub": "s2", "answer": None}, 2500)
    f.publish(B, "task.progress", {"sub": "s1", "done": 1, "total": 2, "note": "half"}, 2600)
    return f


def test_dump_load_and_replay_equality() -> None:
    f = scenario()
    ns = f.ns
    loaded = ns.load(FEED, ns.dump(f.state))
    assert loaded == f.state and ns.view(loaded) == ns.view(f.state)
    assert [s.sub for s in loaded.subs.values()] == ["s1", "s2"]  # spawn order survives

    state = ns.initial(FEED)
    for rec in f.records:
        state = ns.apply(state, rec)
    assert state == f.state

    for cut in range(len(f.records) + 1):  # snapshot at any seq, then the rest of the log
        state = ns.initial(FEED)
        for rec in f.records[:cut]:
            state = ns.apply(state, rec)
        state = ns.load(FEED, ns.dump(state))
        for rec in f.records[cut:]:
            state = ns.apply(state, rec)
        assert state == f.state

    reg = Registry(GenericNamespace())
    reg.register(ns)
    result = replay([r.to_wire() for r in reversed(f.records)], registry=reg)
    assert result.state == f.state and result.kinds() == {"unordered"}
    result = replay(f.records, registry=reg)
    assert result.verified and result.state == f.state and result.view() == ns.view(f.state)


def test_apply_skips_an_inadmissible_record() -> None:
    f = opened()
    before = f.state
    f.force(Event.create(B, FEED, "task.done", {"sub": "s1"}, ts=1100), 1100)  # not the assignee
    f.force(Event.create(RELAY, FEED, "task.stalled", {"sub": "s1", "assignee": A.public_hex,
                                                       "last_seen": 1000}, ts=1200), 1200)  # too early
    assert f.state.subs == before.subs and f.state.seq == 4
    reg = Registry(GenericNamespace())
    reg.register(f.ns)
    result = replay(f.records, registry=reg)
    assert not result.verified and [(a.seq, a.kind) for a in result.anomalies] == [(3, "unauthorized"), (4, "invalid")]
    assert result.state == f.state


def test_apply_is_copy_on_write() -> None:
    f = opened()
    before = f.state
    subs_before = dict(before.subs)
    f.publish(A, "task.heartbeat", {"sub": "s1"}, 1100)
    assert before.subs == subs_before and before.subs["s1"].status == SUBMITTED
    assert f.state.subs is not before.subs and f.state.subs["s1"].status == WORKING
