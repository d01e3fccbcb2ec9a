"""Task auction helpers shared by the relay's coordinator and the SDK (docs/coordination.md).

The auction namespace (``collab.namespaces.auction``) is the state machine; this module holds
what sits around it: the ranking rule, the award body the relay signs at the bid deadline, the
check of an award against the trust feed, and the side effects the relay owes after each
auction record (ledger moves, the trust outcome, the timers to schedule). All pure functions of
states and records, so an auditor can recompute what the relay should have done.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .events import Event, Record
from .feedcore import fold_records
from .namespaces.auction import (
    MAX_STAKE,
    SCORINGS,
    TRUST_SCALE,
    AuctionNamespace,
    AuctionState,
    Bid,
    deadline,
    parse_open,
    rank,
    score,
)
from .trust import TrustParams, compute

#: how trust scores are computed from a trust feed's records (``collab.trust.compute``)
TrustFold = Callable[..., Mapping[str, int]]

__all__ = [
    "MAX_STAKE",
    "SCORINGS",
    "TRUST_SCALE",
    "Bid",
    "award_body",
    "award_problem",
    "deadline",
    "expire_body",
    "held",
    "ledger_moves",
    "lock_for",
    "outcome",
    "rank",
    "score",
    "timers",
    "verify_award",
]

def award_body(state: AuctionState, trust: Mapping[str, int], trust_seq: int, now: int) -> dict[str, Any]:
    """The body of the ``auction.award`` the relay signs for an open auction.

    ``trust`` holds the scores of the trust feed at ``trust_seq``. ``result_deadline = now +
    result_window``, and the award is admissible when ``now`` lies between the award event's
    ``ts`` (at least the bid deadline) and its ``rtime``: pass the ``ts`` for a body that is a
    function of the state, or the current time so a winner awarded late (relay down) still
    gets a full window. With scoring "stake" the trust is not used: every trust is 0 and
    ``trust_seq`` is 0.
    """
    p = state.params
    if p is None or state.status != "open":
        raise ValueError("only an open auction can be awarded")
    if p.scoring == "stake":
        trust, trust_seq = {}, 0
    ranking = rank(state.bids, trust, p.scoring)
    keys = [r["key"] for r in ranking]
    return {
        "winner": keys[0] if keys else None,
        "standby": keys[1:1 + p.standby],
        "ranking": ranking,
        "trust_seq": trust_seq,
        "result_deadline": deadline(now, p.result_window) if keys else None,
    }


def expire_body(state: AuctionState) -> dict[str, Any]:
    """The body of the ``auction.expire`` for the current assignee (ts: its result deadline)."""
    if state.assignee is None:
        raise ValueError("no assignee to expire")
    return {"key": state.assignee}


def _as_state(auction: AuctionState | Iterable[Record]) -> AuctionState:
    if isinstance(auction, AuctionState):
        return auction
    records = sorted(auction, key=lambda r: r.seq)
    if not records:
        raise ValueError("no auction records")
    state: AuctionState = fold_records(AuctionNamespace(), records[0].feed, records).state
    return state


def award_problem(auction: AuctionState | Iterable[Record], trust_records: Iterable[Record],
                  params: TrustParams | None = None, *, trust: TrustFold = compute) -> str | None:
    """Why the auction's award is not the one its bids and trust feed give, or None if it is.

    The trust of each bidder is ``collab.trust.compute`` over the trust feed's records 1 ..
    ``trust_seq`` with the default ``at`` and the records' relay key pre-trusted; ``params``
    must be the relay's trust parameters (``--trust-pretrusted``, ``--trust-half-life``).
    ``trust`` is that fold (another implementation of the same scores may be passed in).
    """
    state = _as_state(auction)
    p = state.params
    if p is None or state.trust_seq is None:
        return "the auction has no award"
    if p.scoring == "stake":
        scores: Mapping[str, int] = {}
    else:
        upto = [r for r in trust_records if r.seq <= state.trust_seq]
        if sorted(r.seq for r in upto) != list(range(1, state.trust_seq + 1)):
            return f"the trust records given do not cover seqs 1..{state.trust_seq} exactly"
        if any(r.feed != p.trust for r in upto):
            return f"the trust records are not all from {p.trust}"
        relays = {r.relay for r in upto}
        if len(relays) > 1:
            return "the trust records are signed by several relays"
        scores = trust(upto, params, relay=relays.pop() if relays else None)
    expected = rank(state.bids, scores, p.scoring)
    if [dict(r) for r in state.ranking] != expected:
        return "the award's ranking differs from the one the trust feed gives"
    return None


def verify_award(auction: AuctionState | Iterable[Record], trust_records: Iterable[Record],
                 params: TrustParams | None = None, *, trust: TrustFold = compute) -> bool:
    """True when the award is the ranking of the bids under the trust feed at ``trust_seq``."""
    return award_problem(auction, trust_records, params, trust=trust) is None


# -- the relay's side effects -------------------------------------------------------------------

def lock_for(state: AuctionState, event: Event) -> tuple[str, dict[str, Any]] | None:
    """``(ledger feed, ledger.lock body)`` to make before sequencing an open or a bid, or None.

    Nothing is locked for a zero reward or stake; a malformed open raises ``invalid`` (validate
    the event first). If the auction then refuses the event, the relay releases the same
    ``(key, ref)``.
    """
    amount: Any
    if event.kind == "auction.open":
        p = parse_open(event.body)
        amount, ledger = p.reward, p.ledger
    elif event.kind == "auction.bid" and state.params is not None and isinstance(event.body, dict):
        amount, ledger = event.body.get("stake"), state.params.ledger
    else:
        return None
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return None
    return ledger, {"key": event.author, "amount": amount, "ref": event.feed}


def held(state: AuctionState) -> dict[str, int]:
    """The locks the ledger should hold under ``ref`` = the auction feed, after this state."""
    p = state.params
    if p is None or state.status not in ("open", "awarded"):
        return {}
    out: dict[str, int] = {}
    if p.reward and state.requester:
        out[state.requester] = p.reward
    if state.status == "open":
        keys: Iterable[str] = state.bids
    else:
        keys = [k for k in (state.assignee, *state.queue) if k is not None]
    out.update({k: state.bids[k].stake for k in keys if state.bids[k].stake})
    return out


def _changed(before: AuctionState, after: AuctionState) -> bool:
    return after is not before and len(after.history) > len(before.history)


def ledger_moves(before: AuctionState, after: AuctionState, record: Record) -> list[tuple[str, dict[str, Any]]]:
    """The ``(kind, body)`` ledger events the relay owes after ``record`` took ``before`` to ``after``.

    Locks are made before sequencing (:func:`lock_for`), so these are releases, the escrow's
    reward to a deliverer and slashes of failed assignees' stakes to the requester.
    """
    kind = record.event.kind
    p = after.params
    if p is None or not _changed(before, after):
        return []
    ref, requester = after.feed, after.requester or ""
    moves: list[tuple[str, dict[str, Any]]] = []

    def stake(k: str) -> int:
        return after.bids[k].stake

    def release(k: str) -> None:
        moves.append(("ledger.release", {"key": k, "ref": ref}))

    if kind == "auction.award":
        if after.assignee is None:
            if p.reward:
                release(requester)
        else:
            keep = {after.assignee, *after.queue}
            for row in after.ranking:
                if row["key"] not in keep and row["stake"]:
                    release(row["key"])
    elif before.assignee is None:  # only an awarded auction (with an assignee) accepts, rejects, expires
        return []
    elif kind == "auction.accept":
        a = before.assignee
        if stake(a):
            release(a)
        if p.reward:
            moves.append(("ledger.reward", {"key": requester, "ref": ref, "to": a}))
        for k in before.queue:
            if stake(k):
                release(k)
    elif kind in ("auction.reject", "auction.expire"):
        a = before.assignee
        if stake(a):
            moves.append(("ledger.slash", {"key": a, "ref": ref, "to": requester}))
        if after.status == "failed" and p.reward:
            release(requester)
    return moves


def outcome(before: AuctionState, after: AuctionState, record: Record) -> dict[str, Any] | None:
    """The ``vouch.outcome`` body for the trust feed after ``record``, or None.

    "delivered" when the requester accepts the assignee's result, "slashed" when the assignee
    is rejected or expired; ``ref`` is the auction feed.
    """
    kind = record.event.kind
    if before.assignee is None or not _changed(before, after):
        return None
    if kind == "auction.accept":
        return {"subject": before.assignee, "outcome": "delivered", "ref": after.feed}
    if kind in ("auction.reject", "auction.expire"):
        return {"subject": before.assignee, "outcome": "slashed", "ref": after.feed}
    return None


def timers(state: AuctionState) -> list[tuple[int, str]]:
    """``(earliest admissible rtime, "award"|"expire")`` for the coordinator to schedule.

    An award is admissible from the bid deadline; an expire from one ms after the result
    deadline (it needs ``now > result_deadline``), and only while no result is in.
    """
    p = state.params
    if p is None:
        return []
    if state.status == "open":
        return [(p.bid_deadline, "award")]
    if state.status == "awarded" and state.result is None and state.result_deadline is not None:
        return [(state.result_deadline + 1, "expire")]
    return []
