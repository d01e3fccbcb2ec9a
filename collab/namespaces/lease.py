"""``lease/`` feeds: leader election with fencing (docs/coordination.md, "Leases").

Agents campaign (``lease.campaign``, optionally with a priority and a TTL of their own), the
relay grants the lease to one candidate (``lease.granted``, relay-signed) with an **epoch**,
the fencing token, strictly increasing per lease. The holder renews (``lease.renew``) before
its deadline or resigns (``lease.resign``); the relay expires it once its deadline has passed
(``lease.expired``, judged on the relay's receipt time) and grants the next candidate: the
standby order is priority (highest first), then campaign order. Candidates may withdraw.

The rules a replay checks are the validation rules themselves: a grant only when nobody holds
the lease, to the head of the standby order, with epoch = last epoch + 1; an expiry only after
the deadline (rtime > deadline); renewals only by the holder of the current epoch before the
deadline. So at every seq at most one key holds the lease and epochs strictly increase.

A *fence* (``{"lease": "lease/x", "epoch": n}``) is the ``fence`` member of an object body in
any feed: the relay admits such an event only if its author holds ``lease/x`` at epoch ``n``
when it is admitted (:func:`check_fence`; ``stale_epoch`` otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..canonical import canonical, parse_json
from ..errors import ColonyError, Conflict, InvalidEvent, Late, StaleEpoch, Unauthorized
from ..events import Event, Record, check_feed, namespace_of
from .base import Admission, Namespace
from .ledger import body_fields, check_int, check_key

KINDS = ("lease.campaign", "lease.withdraw", "lease.renew", "lease.resign", "lease.granted", "lease.expired")
RELAY_KINDS = frozenset(("lease.granted", "lease.expired"))
MIN_TTL_MS, MAX_TTL_MS, DEFAULT_TTL_MS = 200, 3_600_000, 10_000
MAX_PRIORITY = 1_000_000
MAX_CANDIDATES = 1000
MAX_HISTORY = 64


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str
    priority: int
    ttl_ms: int
    seq: int  # the campaign's record seq: the tie-break after priority


@dataclass(frozen=True, slots=True)
class LeaseState:
    """One lease. ``holder`` is None when nobody holds it; ``deadline`` is the rtime (ms) after
    which the relay may expire the holder; ``candidates`` are the standbys (the holder is not
    among them) in campaign order; ``history`` the last holders ``{epoch, holder, granted,
    ended, end}`` (``end``: resigned | expired; ``ended`` 0 while holding)."""

    feed: str
    epoch: int = 0
    holder: str | None = None
    ttl_ms: int = 0
    granted: int = 0
    deadline: int = 0
    candidates: tuple[Candidate, ...] = ()
    history: tuple[dict[str, Any], ...] = ()
    seq: int = 0


def standby(state: LeaseState) -> list[Candidate]:
    """The candidates in the order the relay grants them: priority descending, campaign order."""
    return sorted(state.candidates, key=lambda c: (-c.priority, c.seq))


def next_grant(state: LeaseState) -> dict[str, Any] | None:
    """The ``lease.granted`` body the relay owes now, or None (held, or no candidate)."""
    if state.holder is not None or not state.candidates:
        return None
    c = standby(state)[0]
    return {"holder": c.key, "epoch": state.epoch + 1, "ttl_ms": c.ttl_ms}


def expiry(state: LeaseState) -> tuple[int, dict[str, Any]] | None:
    """``(deadline, lease.expired body)`` for the current holder, or None."""
    if state.holder is None:
        return None
    return state.deadline, {"holder": state.holder, "epoch": state.epoch}


# -- fences ----------------------------------------------------------------------------------------
def fence_of(event: Event) -> tuple[str, int] | None:
    """``(lease feed, epoch)`` of an event's fence (``body.fence``), None without one; ``invalid``
    when the member is malformed."""
    body = event.body
    if not isinstance(body, dict) or "fence" not in body:
        return None
    return parse_fence(body["fence"])


def parse_fence(value: Any) -> tuple[str, int]:
    f = body_fields(value, {"lease", "epoch"})
    try:
        lease = check_feed(f["lease"])
    except InvalidEvent as exc:
        raise InvalidEvent(f"fence.lease: {exc}") from exc
    if namespace_of(lease) != "lease":
        raise InvalidEvent("fence.lease must be a lease/ feed")
    return lease, check_int(f["epoch"], "fence.epoch", 1)


def check_fence(state: LeaseState, author: str, epoch: int, now: int) -> None:
    """Raise ``stale_epoch`` unless ``author`` holds the lease at ``epoch`` and ``now`` is not past
    its deadline (an expired holder is refused even before the relay's timer writes the expiry)."""
    if state.holder is None or epoch != state.epoch:
        raise StaleEpoch(f"epoch {epoch} of {state.feed} is not current (current {state.epoch}, "
                         f"{'held' if state.holder else 'not held'})")
    if author != state.holder:
        raise StaleEpoch(f"the author does not hold {state.feed} at epoch {epoch}")
    if now > state.deadline:
        raise StaleEpoch(f"epoch {epoch} of {state.feed} ran out at {state.deadline}")


def strip_fence(body: Any) -> Any:
    """The body without its ``fence`` member (for namespaces whose body rules predate fences)."""
    if isinstance(body, dict) and "fence" in body:
        return {k: v for k, v in body.items() if k != "fence"}
    return body


# -- validation ------------------------------------------------------------------------------------
def _find(state: LeaseState, key: str) -> Candidate | None:
    return next((c for c in state.candidates if c.key == key), None)


def check(state: LeaseState, ev: Event, adm: Admission) -> None:
    kind, author = ev.kind, ev.author
    if kind in RELAY_KINDS and author != adm.relay:
        raise Unauthorized(f"{kind} is written by the relay only")
    if kind == "lease.campaign":
        b = body_fields(ev.body, set(), {"priority", "ttl_ms"})
        check_int(b.get("priority", 0), "priority", 0, MAX_PRIORITY)
        check_int(b.get("ttl_ms", DEFAULT_TTL_MS), "ttl_ms", MIN_TTL_MS, MAX_TTL_MS)
        if author == state.holder or _find(state, author) is not None:
            raise Conflict("this key is already a candidate or the holder")
        if len(state.candidates) >= MAX_CANDIDATES:
            raise Conflict(f"the lease has {MAX_CANDIDATES} candidates already")
    elif kind == "lease.withdraw":
        body_fields(ev.body, set())
        if author == state.holder:
            raise Conflict("the holder resigns (lease.resign) instead of withdrawing")
        if _find(state, author) is None:
            raise Conflict("this key is not a candidate")
    elif kind in ("lease.renew", "lease.resign"):
        epoch = check_int(body_fields(ev.body, {"epoch"})["epoch"], "epoch", 1)
        if state.holder is None or author != state.holder:
            raise Conflict(f"only the holder may {kind.split('.')[1]}")
        if epoch != state.epoch:
            raise StaleEpoch(f"epoch {epoch} is not the current epoch {state.epoch}")
        if kind == "lease.renew" and adm.now > state.deadline:
            raise Late(f"the lease ran out at {state.deadline}")
    elif kind == "lease.granted":
        b = body_fields(ev.body, {"holder", "epoch", "ttl_ms"})
        check_key(b["holder"], "holder")
        if ev.body != next_grant(state):
            raise Conflict("a grant needs a free lease and names the head of the standby order, "
                           "its ttl_ms and the next epoch")
    elif kind == "lease.expired":
        b = body_fields(ev.body, {"holder", "epoch"})
        if state.holder is None or b != {"holder": state.holder, "epoch": state.epoch}:
            raise Conflict("lease.expired names another holder or epoch than the current one")
        if adm.now <= state.deadline:
            raise Late(f"the lease runs until {state.deadline}")
    else:
        raise InvalidEvent(f"lease feeds accept kinds {sorted(KINDS)}")


def _end(state: LeaseState, rtime: int, how: str) -> tuple[dict[str, Any], ...]:
    hist = [dict(h) for h in state.history]
    if hist and hist[-1]["epoch"] == state.epoch:
        hist[-1].update(ended=rtime, end=how)
    return tuple(hist)


def fold(state: LeaseState, ev: Event, rtime: int, seq: int) -> LeaseState:
    kind, b, author = ev.kind, ev.body, ev.author
    if kind == "lease.campaign":
        c = Candidate(author, b.get("priority", 0), b.get("ttl_ms", DEFAULT_TTL_MS), seq)
        return replace(state, candidates=(*state.candidates, c), seq=seq)
    if kind == "lease.withdraw":
        return replace(state, candidates=tuple(c for c in state.candidates if c.key != author), seq=seq)
    if kind == "lease.renew":
        return replace(state, deadline=rtime + state.ttl_ms, seq=seq)
    if kind in ("lease.resign", "lease.expired"):
        how = "resigned" if kind == "lease.resign" else "expired"
        return replace(state, holder=None, ttl_ms=0, deadline=0, history=_end(state, rtime, how), seq=seq)
    # lease.granted
    cands = tuple(c for c in state.candidates if c.key != b["holder"])
    entry = {"epoch": b["epoch"], "holder": b["holder"], "granted": rtime, "ended": 0, "end": None}
    history = (*state.history, entry)[-MAX_HISTORY:]
    return replace(state, epoch=b["epoch"], holder=b["holder"], ttl_ms=b["ttl_ms"], granted=rtime,
                   deadline=rtime + b["ttl_ms"], candidates=cands, history=history, seq=seq)


class LeaseNamespace(Namespace[LeaseState]):
    name = "lease"
    kinds = frozenset(KINDS)
    relay_owned = True  # the relay opens it: nobody squats a lease with a policy of their own

    def initial(self, feed: str) -> LeaseState:
        return LeaseState(feed)

    def validate(self, state: LeaseState, event: Event, adm: Admission) -> None:
        check(state, event, adm)

    def apply(self, state: LeaseState, record: Record) -> LeaseState:
        """Fold a record; one that would not validate (an untrusted log) is skipped."""
        try:
            check(state, record.event, Admission.of(record))
        except ColonyError:
            return replace(state, seq=record.seq)
        return fold(state, record.event, record.rtime, record.seq)

    def dump(self, state: LeaseState) -> bytes:
        return canonical({"epoch": state.epoch, "holder": state.holder, "ttl_ms": state.ttl_ms,
                          "granted": state.granted, "deadline": state.deadline,
                          "candidates": [[c.key, c.priority, c.ttl_ms, c.seq] for c in state.candidates],
                          "history": list(state.history), "seq": state.seq})

    def load(self, feed: str, data: bytes) -> LeaseState:
        d = parse_json(data)
        if not isinstance(d, dict) or "candidates" not in d:
            raise ValueError("not a lease snapshot")
        cands = tuple(Candidate(k, p, t, s) for k, p, t, s in d["candidates"])
        return LeaseState(feed, d["epoch"], d["holder"], d["ttl_ms"], d["granted"], d["deadline"], cands,
                          tuple(d["history"]), d["seq"])

    def view(self, state: LeaseState) -> dict[str, Any]:
        return {"feed": state.feed, "holder": state.holder, "epoch": state.epoch, "ttl_ms": state.ttl_ms,
                "granted": state.granted or None, "deadline": state.deadline or None,
                "standby": [{"key": c.key, "priority": c.priority, "ttl_ms": c.ttl_ms, "seq": c.seq}
                            for c in standby(state)],
                "history": [dict(h) for h in state.history], "seq": state.seq}
