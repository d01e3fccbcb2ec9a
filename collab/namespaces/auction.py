"""``auction/`` feeds: one Contract Net task auction per feed (docs/coordination.md, "Task auction").

A requester opens the auction, agents bid stake, the relay awards the best-ranked bidder at
the bid deadline (and a queue of standbys), the assignee delivers a result, the requester
accepts or rejects it, and the relay expires an assignee that misses its result deadline; a
failed assignee is replaced by the next standby. Stake and escrow live in the ledger feed: the
relay moves them as this state changes (``collab.auction.ledger_moves``). Deadlines are judged
on ``rtime`` (``adm.now``), and ``apply`` re-checks every record, so a replayer verifies the
relay's awards (the ranking is recomputed from the bids and the award's trust values).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..canonical import MAX_SAFE_INT, canonical, parse_json
from ..errors import ColonyError, Conflict, InvalidEvent, Late, Unauthorized
from ..events import Event, Record, check_feed, namespace_of
from .base import Admission, Namespace
from .ledger import body_fields, check_int, check_key, check_str

KINDS = ("auction.open", "auction.bid", "auction.award", "auction.result", "auction.accept",
         "auction.reject", "auction.expire")
DEFAULT_STANDBY = 2
DEFAULT_LEDGER = "ledger/main"
DEFAULT_TRUST = "vouch/global"
MAX_STANDBY = 16
MAX_NOTE = 1000
MAX_WINDOW = 2**52
OPEN_FIELDS = {"task", "bid_deadline", "result_window", "min_stake", "reward"}
OPEN_OPTIONAL = {"standby", "scoring", "ledger", "trust"}
AWARD_FIELDS = {"winner", "standby", "ranking", "trust_seq", "result_deadline"}
RANK_FIELDS = {"key", "stake", "trust", "score"}


# -- the ranking rule (the award is re-checked against it on every replay) ----------------------
SCORINGS = ("stake_trust", "stake")
TRUST_SCALE = 1_000_000_000
#: the largest stake whose score fits the canonical integer range (trust factor <= 2_000_000)
MAX_STAKE = MAX_SAFE_INT // 2_000_000


@dataclass(frozen=True, slots=True)
class Bid:
    """One sequenced bid: ``seq`` is its record's seq, the last tie-break of the ranking."""

    key: str
    stake: int
    seq: int


def score(stake: int, trust_ppb: int, scoring: str = "stake_trust") -> int:
    """``stake * (1_000_000 + trust_ppb // 1000)``, or just ``stake`` with scoring "stake"."""
    return stake if scoring == "stake" else stake * (1_000_000 + trust_ppb // 1000)


def rank(bids: Mapping[str, Bid] | Iterable[Bid], trust: Mapping[str, int],
         scoring: str = "stake_trust") -> list[dict[str, Any]]:
    """All bids ranked: score descending, then stake descending, then seq ascending.

    A key missing from ``trust`` counts as 0, so an unknown bidder still ranks by stake.
    """
    items = bids.values() if isinstance(bids, Mapping) else bids
    rows = [(b, trust.get(b.key, 0)) for b in items]
    scored = [(b, t, score(b.stake, t, scoring)) for b, t in rows]
    scored.sort(key=lambda r: (-r[2], -r[0].stake, r[0].seq))
    return [{"key": b.key, "stake": b.stake, "trust": t, "score": s} for b, t, s in scored]


def deadline(start: int, window: int) -> int:
    """``start + window``, capped so it stays a canonical integer."""
    return min(start + window, MAX_SAFE_INT)


@dataclass(frozen=True, slots=True)
class Params:
    """The ``auction.open`` body with its defaults filled in."""

    task: Any
    bid_deadline: int
    result_window: int
    min_stake: int
    reward: int
    standby: int = DEFAULT_STANDBY
    scoring: str = "stake_trust"
    ledger: str = DEFAULT_LEDGER
    trust: str = DEFAULT_TRUST

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "bid_deadline": self.bid_deadline, "result_window": self.result_window,
                "min_stake": self.min_stake, "reward": self.reward, "standby": self.standby,
                "scoring": self.scoring, "ledger": self.ledger, "trust": self.trust}


def _feed_in(value: Any, name: str, namespace: str) -> str:
    try:
        feed = check_feed(value)
    except InvalidEvent as exc:
        raise InvalidEvent(f"{name}: {exc}") from exc
    if namespace_of(feed) != namespace:
        raise InvalidEvent(f"{name} must be a {namespace}/ feed")
    return feed


def parse_open(body: Any) -> Params:
    """The parameters of an ``auction.open`` body, or ``invalid``."""
    b = body_fields(body, OPEN_FIELDS, OPEN_OPTIONAL)
    scoring = b.get("scoring", "stake_trust")
    if scoring not in SCORINGS:
        raise InvalidEvent(f"scoring must be one of {list(SCORINGS)}")
    return Params(
        b["task"], check_int(b["bid_deadline"], "bid_deadline"),
        check_int(b["result_window"], "result_window", 1, MAX_WINDOW),
        check_int(b["min_stake"], "min_stake", 0, MAX_STAKE), check_int(b["reward"], "reward"),
        check_int(b.get("standby", DEFAULT_STANDBY), "standby", 0, MAX_STANDBY), scoring,
        _feed_in(b.get("ledger", DEFAULT_LEDGER), "ledger", "ledger"),
        _feed_in(b.get("trust", DEFAULT_TRUST), "trust", "vouch"),
    )


@dataclass(frozen=True, slots=True)
class AuctionState:
    """One auction. ``status``: new → open → awarded → completed | failed; or open → unawarded.

    ``assignee`` is who works now (the winner, then promoted standbys), ``queue`` the standbys
    left, ``result`` the current assignment's result (``{key, result, seq}``) or None. Never
    mutated: ``apply`` builds a new value (``bids`` and the tuples are copied on write).
    """

    feed: str
    status: str = "new"
    requester: str | None = None
    params: Params | None = None
    bids: Mapping[str, Bid] = field(default_factory=dict)
    ranking: tuple[Mapping[str, Any], ...] = ()
    trust_seq: int | None = None
    winner: str | None = None
    assignee: str | None = None
    result_deadline: int | None = None
    queue: tuple[str, ...] = ()
    result: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()

    @property
    def ledger(self) -> str:
        """The ledger feed holding this auction's stakes and escrow."""
        return self.params.ledger if self.params else DEFAULT_LEDGER

    @property
    def trust(self) -> str:
        """The vouch feed that ranks the bidders and receives the outcomes."""
        return self.params.trust if self.params else DEFAULT_TRUST


def _opened(state: AuctionState) -> Params:
    if state.params is None:
        raise Conflict("the auction is not open (auction.open must be its first event)")
    return state.params


def _by_requester(state: AuctionState, ev: Event) -> None:
    if ev.author != state.requester:
        raise Unauthorized(f"only the requester may write {ev.kind}")


def _check_open(state: AuctionState, ev: Event, adm: Admission) -> None:
    if state.status != "new":
        raise Conflict("the auction is already open")
    if parse_open(ev.body).bid_deadline <= adm.now:
        raise Late("bid_deadline has already passed")


def _check_bid(state: AuctionState, ev: Event, adm: Admission) -> None:
    p = _opened(state)
    if ev.author == state.requester:
        raise Unauthorized("the requester may not bid on its own auction")
    b = body_fields(ev.body, {"stake"}, {"note"})
    stake = check_int(b["stake"], "stake", 0, MAX_STAKE)
    if "note" in b:
        check_str(b["note"], "note", MAX_NOTE)
    if state.status != "open" or adm.now > p.bid_deadline:
        raise Late("bidding is closed")
    if ev.author in state.bids:
        raise Conflict("this key has already bid")
    if stake < p.min_stake:
        raise InvalidEvent(f"stake {stake} is below min_stake {p.min_stake}")


def _check_award(state: AuctionState, ev: Event, adm: Admission) -> None:
    if ev.author != adm.relay:
        raise Unauthorized("auction.award is written by the relay only")
    p = _opened(state)
    if state.status != "open":
        raise Conflict("the auction is already awarded")
    if adm.now < p.bid_deadline:
        raise Late("the bid deadline has not passed yet")
    if not p.bid_deadline <= ev.ts <= adm.now:
        raise InvalidEvent("an award's ts must lie between the bid deadline and its receipt time")
    b = body_fields(ev.body, AWARD_FIELDS)
    trust_seq = check_int(b["trust_seq"], "trust_seq")
    ranking = b["ranking"]
    if not isinstance(ranking, list):
        raise InvalidEvent("ranking must be a list")
    trust: dict[str, int] = {}
    for row in ranking:
        body_fields(row, RANK_FIELDS)
        check_key(row["key"], "ranking key")
        check_int(row["stake"], "ranking stake")
        check_int(row["score"], "ranking score")
        trust[row["key"]] = check_int(row["trust"], "ranking trust", 0, TRUST_SCALE)
    if p.scoring == "stake" and (trust_seq or any(trust.values())):
        raise InvalidEvent('with scoring "stake" every trust and trust_seq must be 0')
    if len(trust) != len(ranking) or set(trust) != set(state.bids):
        raise InvalidEvent("the ranking must list every bid once")
    if ranking != rank(state.bids, trust, p.scoring):
        raise InvalidEvent("the ranking does not follow from the bids and trust values")
    keys = [row["key"] for row in ranking]
    if b["winner"] != (keys[0] if keys else None) or b["standby"] != keys[1:1 + p.standby]:
        raise InvalidEvent("winner and standby must be the head of the ranking")
    due = b["result_deadline"]
    if not keys:
        if due is not None:
            raise InvalidEvent("an award without a winner has result_deadline null")
    elif not (isinstance(due, int) and not isinstance(due, bool)
              and deadline(ev.ts, p.result_window) <= due <= deadline(adm.now, p.result_window)):
        raise InvalidEvent("result_deadline must lie in ts + result_window ..= rtime + result_window")


def _check_result(state: AuctionState, ev: Event, adm: Admission) -> None:
    _opened(state)
    body_fields(ev.body, {"result"})
    if state.status != "awarded" or ev.author != state.assignee:
        raise Conflict("only the current assignee of an awarded auction may post a result")
    if state.result is not None:
        raise Conflict("this assignment already has a result")
    if state.result_deadline is not None and adm.now > state.result_deadline:
        raise Late("the result deadline has passed")


def _check_decision(state: AuctionState, ev: Event, adm: Admission) -> None:
    _opened(state)
    _by_requester(state, ev)
    b = body_fields(ev.body, set(), {"reason"} if ev.kind == "auction.reject" else set())
    if "reason" in b:
        check_str(b["reason"], "reason", MAX_NOTE)
    if state.status != "awarded" or state.result is None:
        raise Conflict(f"{ev.kind} needs a result from the assignee first")


def _check_expire(state: AuctionState, ev: Event, adm: Admission) -> None:
    if ev.author != adm.relay:
        raise Unauthorized("auction.expire is written by the relay only")
    _opened(state)
    key = check_key(body_fields(ev.body, {"key"})["key"], "key")
    if state.status != "awarded" or key != state.assignee:
        raise Conflict("only the current assignee can expire")
    if state.result is not None:
        raise Conflict("the assignee has delivered a result; the requester decides")
    if state.result_deadline is None or adm.now <= state.result_deadline:
        raise Late("the result deadline has not passed yet")


_CHECKS: dict[str, Callable[[AuctionState, Event, Admission], None]] = {
    "auction.open": _check_open, "auction.bid": _check_bid, "auction.award": _check_award,
    "auction.result": _check_result, "auction.accept": _check_decision, "auction.reject": _check_decision,
    "auction.expire": _check_expire,
}


def _log(state: AuctionState, rec: Record, kind: str, **extra: Any) -> tuple[Mapping[str, Any], ...]:
    return (*state.history, {"seq": rec.seq, "at": rec.rtime, "kind": kind, **extra})


def _fail_assignee(state: AuctionState, rec: Record, kind: str, extra: dict[str, Any]) -> AuctionState:
    """Reject or expire: the assignee is out, the next standby (if any) takes over."""
    if state.params is None or state.assignee is None:  # validate() admits this only for an assigned auction
        raise InvalidEvent("no assignee to reject or expire")
    history = _log(state, rec, kind, key=state.assignee, **extra)
    if not state.queue:
        return replace(state, status="failed", assignee=None, result_deadline=None, result=None,
                       history=(*history, {"seq": rec.seq, "at": rec.rtime, "kind": "failed"}))
    nxt, due = state.queue[0], deadline(rec.rtime, state.params.result_window)
    history += ({"seq": rec.seq, "at": rec.rtime, "kind": "promote", "key": nxt, "result_deadline": due},)
    return replace(state, assignee=nxt, queue=state.queue[1:], result_deadline=due, result=None, history=history)


class AuctionNamespace(Namespace[AuctionState]):
    name = "auction"
    kinds = frozenset(KINDS)

    def initial(self, feed: str) -> AuctionState:
        return AuctionState(feed)

    def validate(self, state: AuctionState, event: Event, adm: Admission) -> None:
        check = _CHECKS.get(event.kind)
        if check is None:
            raise InvalidEvent(f"auction feeds accept kinds {sorted(KINDS)}")
        check(state, event, adm)

    def apply(self, state: AuctionState, record: Record) -> AuctionState:
        """Fold a record; one that would not validate (an untrusted log) is ignored (same state)."""
        ev = record.event
        try:
            self.validate(state, ev, Admission.of(record))
        except ColonyError:
            return state
        kind, body = ev.kind, ev.body
        if kind == "auction.open":
            return replace(state, status="open", requester=ev.author, params=parse_open(body),
                           history=_log(state, record, "open", key=ev.author))
        if kind == "auction.bid":
            return replace(state, bids={**state.bids, ev.author: Bid(ev.author, body["stake"], record.seq)})
        if kind == "auction.award":
            winner = body["winner"]
            history = _log(state, record, "award", winner=winner, standby=list(body["standby"]))
            return replace(state, status="awarded" if winner else "unawarded", ranking=tuple(body["ranking"]),
                           trust_seq=body["trust_seq"], winner=winner, assignee=winner,
                           result_deadline=body["result_deadline"], queue=tuple(body["standby"]), history=history)
        if kind == "auction.result":
            return replace(state, result={"key": ev.author, "result": body["result"], "seq": record.seq},
                           history=_log(state, record, "result", key=ev.author))
        if kind == "auction.accept":
            return replace(state, status="completed", queue=(), result_deadline=None,
                           history=_log(state, record, "accept", key=state.assignee))
        extra = {"reason": body["reason"]} if "reason" in body else {}
        return _fail_assignee(state, record, kind.split(".", 1)[1], extra)

    def dump(self, state: AuctionState) -> bytes:
        return canonical({
            "status": state.status, "requester": state.requester,
            "params": state.params.to_json() if state.params else None,
            "bids": [[b.key, b.stake, b.seq] for b in sorted(state.bids.values(), key=lambda b: b.seq)],
            "ranking": list(state.ranking), "trust_seq": state.trust_seq, "winner": state.winner,
            "assignee": state.assignee, "result_deadline": state.result_deadline, "queue": list(state.queue),
            "result": state.result, "history": list(state.history),
        })

    def load(self, feed: str, data: bytes) -> AuctionState:
        d = parse_json(data)
        if not isinstance(d, dict) or "params" not in d:
            raise ValueError("not an auction snapshot")
        params = Params(**d["params"]) if d["params"] is not None else None
        bids = {k: Bid(k, stake, seq) for k, stake, seq in d["bids"]}
        return AuctionState(feed, d["status"], d["requester"], params, bids, tuple(d["ranking"]), d["trust_seq"],
                            d["winner"], d["assignee"], d["result_deadline"], tuple(d["queue"]), d["result"],
                            tuple(d["history"]))

    def view(self, state: AuctionState) -> dict[str, Any]:
        p = state.params
        return {
            "feed": state.feed, "status": state.status, "requester": state.requester,
            "task": p.task if p else None, "params": p.to_json() if p else None,
            "deadlines": {"bid": p.bid_deadline if p else None, "result": state.result_deadline},
            "bids": [{"key": b.key, "stake": b.stake, "seq": b.seq}
                     for b in sorted(state.bids.values(), key=lambda b: b.seq)],
            "ranking": [dict(r) for r in state.ranking], "trust_seq": state.trust_seq,
            "winner": state.winner, "assignee": state.assignee, "standby": list(state.queue),
            "result": dict(state.result) if state.result is not None else None,
            "history": [dict(h) for h in state.history],
        }
