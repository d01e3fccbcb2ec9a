"""collab/auctions.py: the SDK's Auction helper, grant and balances against a real relay. The
relay's own rules are tested in tests/relay/coordination/test_auction_e2e.py; here, what an
agent sees through the helper."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from collab.auctions import DEFAULT_LEDGER, Auction, balances, grant
from collab.client import Client
from collab.errors import RelayError
from collab.keys import Keypair

FAST: dict[str, Any] = {"backoff_base": 0.02, "backoff_max": 0.2}


async def test_open_bid_award_deliver_accept(start_relay: Callable[..., Any]) -> None:
    op, req_key, a_key, b_key = (Keypair.generate() for _ in range(4))
    relay = await start_relay("a", operators=(op.public_hex,))
    async with contextlib.AsyncExitStack() as stack:
        op_c, req, a, b = [await stack.enter_async_context(Client(relay.url, k, **FAST))
                           for k in (op, req_key, a_key, b_key)]
        assert await balances(relay.url) == {}  # no ledger yet
        for k, amount in ((req_key, 10), (a_key, 50), (b_key, 50)):
            await grant(op_c, k.public_hex, amount)
        feed = "auction/sdk"
        ra = await stack.enter_async_context(Auction(req, feed))
        assert ra.status == "new" and ra.assignee is None
        await ra.open({"do": "it"}, bid_window_ms=400, result_window_ms=30_000, reward=10, standby=1)
        aa = await stack.enter_async_context(Auction(a, feed))
        ab = await stack.enter_async_context(Auction(b, feed))
        await aa.wait_status("open")
        await aa.bid(20, note="fast")
        await ab.bid(10)
        with pytest.raises(RelayError) as err:
            await aa.bid(5)
        assert err.value.code == "conflict"
        ledger = await balances(relay.url, DEFAULT_LEDGER)
        assert ledger[a_key.public_hex] == {"available": 30, "locked": 20}
        assert ledger[req_key.public_hex] == {"available": 0, "locked": 10}
        state = await aa.wait_assigned(a_key.public_hex)  # the relay's award at the bid deadline
        assert state.queue == (b_key.public_hex,) and aa.assignee == a_key.public_hex
        assert (await ra.wait_status("awarded")).winner == a_key.public_hex  # every view folds the same
        await aa.deliver({"answer": 42})
        await ra.wait_for(lambda s: s.result is not None)
        await ra.accept()
        final = await ab.wait_status("completed")
        assert final.result is not None and final.result["seq"] == 5
        assert final.result == {"key": a_key.public_hex, "result": {"answer": 42}, "seq": 5}
        assert [r.event.kind for r in ra.records] == [
            "auction.open", "auction.bid", "auction.bid", "auction.award", "auction.result", "auction.accept"]


async def test_a_requester_rejects_and_the_standby_is_promoted(start_relay: Callable[..., Any]) -> None:
    op, req_key, a_key, b_key = (Keypair.generate() for _ in range(4))
    relay = await start_relay("a", operators=(op.public_hex,))
    async with contextlib.AsyncExitStack() as stack:
        op_c, req, a, b = [await stack.enter_async_context(Client(relay.url, k, **FAST))
                           for k in (op, req_key, a_key, b_key)]
        for k in (a_key, b_key):
            await grant(op_c, k.public_hex, 20)
        feed = "auction/reject"
        ra = await stack.enter_async_context(Auction(req, feed))
        await ra.open("t", bid_window_ms=400, result_window_ms=30_000, standby=1)
        aa, ab = Auction(a, feed), Auction(b, feed)
        await stack.enter_async_context(aa)
        await stack.enter_async_context(ab)
        await aa.bid(15)
        await ab.bid(5)
        await aa.wait_assigned(a_key.public_hex)
        await aa.deliver("wrong")
        await ra.wait_for(lambda s: s.result is not None)
        await ra.reject("not it")
        await ab.wait_assigned(b_key.public_hex)
        ledger = await balances(relay.url)
        assert ledger[a_key.public_hex] == {"available": 5, "locked": 0}  # slashed to the requester
        assert ledger[req_key.public_hex]["available"] == 15
