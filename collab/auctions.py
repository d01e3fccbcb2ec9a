"""Task auctions and stake from an agent's side (docs/coordination.md, Contract Net).

``Auction`` follows one ``auction/<id>`` feed and folds it locally with the same state machine
the relay runs, so an agent sees the award, its promotion or its slashing from verified
records rather than from the relay's word; the relay only adds what needs its clock and its
authority (awards, expiries, ledger moves). The ledger helpers talk to ``ledger/<name>``.

    async with Auction(requester, "auction/fix-bug") as a:
        await a.open("fix the parser", bid_window_ms=2_000, result_window_ms=60_000, reward=10)
        await a.wait_status("awarded")
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from .events import now_ms
from .feedview import FeedView
from .namespaces.auction import AuctionNamespace, AuctionState

if TYPE_CHECKING:
    from .client import Client
    from .protocol import Ack

DEFAULT_LEDGER = "ledger/main"


class Auction(FeedView[AuctionState]):
    """One auction feed, live: open it, bid, deliver, decide; ``state`` is the verified fold."""

    def __init__(self, client: Client, feed: str) -> None:
        super().__init__(client, feed, AuctionNamespace())

    async def __aenter__(self) -> Auction:
        await self.start()
        await self.wait_synced(30)
        return self

    # -- requester ---------------------------------------------------------------------------
    async def open(self, task: Any, *, bid_window_ms: int, result_window_ms: int, min_stake: int = 0,
                   reward: int = 0, standby: int = 2, scoring: str = "stake_trust", ledger: str = DEFAULT_LEDGER,
                   trust: str = "vouch/global") -> Ack:
        """Open the auction; the relay escrows ``reward`` from the requester's balance first."""
        body = {"task": task, "bid_deadline": now_ms() + bid_window_ms, "result_window": result_window_ms,
                "min_stake": min_stake, "reward": reward, "standby": standby, "scoring": scoring,
                "ledger": ledger, "trust": trust}
        return await self.client.publish(self.feed, "auction.open", body)

    async def accept(self) -> Ack:
        return await self.client.publish(self.feed, "auction.accept", {})

    async def reject(self, reason: str = "") -> Ack:
        return await self.client.publish(self.feed, "auction.reject", {"reason": reason} if reason else {})

    # -- bidder ------------------------------------------------------------------------------
    async def bid(self, stake: int, note: str | None = None) -> Ack:
        """Bid; refused with ``insufficient_funds``, ``late`` or ``conflict`` (a second bid)."""
        body: dict[str, Any] = {"stake": stake}
        if note:
            body["note"] = note
        return await self.client.publish(self.feed, "auction.bid", body)

    async def deliver(self, result: Any) -> Ack:
        """Post the result (only the current assignee, before its result deadline)."""
        return await self.client.publish(self.feed, "auction.result", {"result": result})

    # -- waiting -----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.state.status

    @property
    def assignee(self) -> str | None:
        return self.state.assignee

    async def wait_status(self, *statuses: str, timeout: float | None = 30.0) -> AuctionState:
        return await self.wait_for(lambda s: s.status in statuses, timeout)

    async def wait_assigned(self, key: str, timeout: float | None = 30.0) -> AuctionState:
        """Until ``key`` has the task (awarded, or promoted from the standby queue)."""
        return await self.wait_for(lambda s: s.assignee == key and s.status == "awarded", timeout)


async def grant(client: Client, to: str, amount: int, ledger: str = DEFAULT_LEDGER) -> Ack:
    """An operator's grant of stake credits (the relay refuses keys it was not started with)."""
    return await client.publish(ledger, "ledger.grant", {"to": to, "amount": amount})


async def balances(url: str, ledger: str = DEFAULT_LEDGER) -> dict[str, dict[str, int]]:
    """``{key: {available, locked}}`` from the relay's view of the ledger (``GET /feeds/{ledger}``)."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        resp = await http.get(f"{url.rstrip('/')}/feeds/{ledger}")
        if resp.status_code == 404:
            return {}
        resp.raise_for_status()
        state = resp.json().get("state") or {}
        return dict(state.get("balances", {}))
