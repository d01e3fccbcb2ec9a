"""``auction/`` on the relay's side: stake locked before a bid, ledger moves and trust outcomes
after each record, and the award and expiry at their deadlines.

The rules are pure functions in ``collab/auction.py`` (what to lock, which moves and outcome a
record implies, which deadlines a state has, the award body), so an auditor recomputes what
the relay should have done; this module only carries them out.
"""
from __future__ import annotations

from typing import Any

from collab import auction
from collab.events import Event, Record, now_ms
from collab.namespaces.base import Admission

from relay.coordination.hooks import Context, Plugin
from relay.coordination.namespaces import ledger, vouch
from relay.core.worker import FeedRuntime


class AuctionPlugin(Plugin):
    namespace = "auction"
    gated_kinds = frozenset(("auction.open", "auction.bid"))
    follows = True
    replay_on_start = True  # a restart re-issues follow-ups it may have missed (duplicates are harmless)
    sdk = "collab.auctions"

    async def gate(self, ctx: Context, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Lock the stake (or the reward's escrow) in the ledger, then sequence the event."""
        rt = await ctx.hub.runtime(event.feed)
        if event.id in rt.ids:
            return rt.ids[event.id], True
        adm = Admission(now_ms(), ctx.relay)  # the relay's clock, never the author's ts
        rt.access.check_write(event, session_key, rt.seq + 1, adm.now)
        rt.ns.validate(rt.state, event, adm)  # refuse early, lock nothing
        lock = auction.lock_for(rt.state, event)
        if lock is None:
            return await rt.publish(event, session_key)  # nothing to lock (a zero stake or reward)
        feed, body = lock
        return await ledger.publish_locked(ctx, rt, event, session_key, feed, body)

    async def on_commit(self, ctx: Context, rec: Record, before: Any, after: Any) -> None:
        for kind, body in auction.ledger_moves(before, after, rec):
            await ledger.move(ctx, after.ledger, kind, body, rec.rtime)
        outcome = auction.outcome(before, after, rec)
        if outcome is not None:
            await vouch.record_outcome(ctx, after.trust, outcome, rec.rtime)

    def timers(self, state: Any) -> list[tuple[int, str]]:
        return auction.timers(state)

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        key = ctx.hub.relay_key
        if what == "award":
            trust_seq, scores = await vouch.current_scores(ctx, rt.state.trust)
            body = auction.award_body(rt.state, scores, trust_seq, max(deadline, now_ms()))
            return Event.create(key, rt.feed, "auction.award", body, ts=deadline)
        if what == "expire":
            if rt.state.assignee is None:
                return None
            return Event.create(key, rt.feed, "auction.expire", auction.expire_body(rt.state), ts=deadline)
        return None
