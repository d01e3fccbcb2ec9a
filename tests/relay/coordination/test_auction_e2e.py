"""Task auctions end to end on a real relay (both backends): the ledger gate, the relay's
award and expiry timers, slashing, standby promotion, rewards, trust outcomes, and refusals
of late, duplicate, under-funded and forged bids. Deadlines are real (short) wall-clock
windows; every wait is on a condition of the folded state."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from collab import auction as auction_rules
from collab.auctions import Auction, balances, grant
from collab.client import Client
from collab.errors import RelayError
from collab.events import Event, Record
from collab.keys import Keypair
from collab.replay import fetch_records
from relay.ops.runner import Running
from tests.rawclient import Raw

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}


class World:
    """An operator and clients on one relay."""

    def __init__(self, relay: Running, op: Keypair, stack: contextlib.AsyncExitStack) -> None:
        self.relay, self.op, self.stack = relay, op, stack

    async def client(self, key: Keypair | None = None) -> Client:
        return await self.stack.enter_async_context(Client(self.relay.url, key or Keypair.generate(), **FAST))

    async def funded(self, amount: int) -> Client:
        c = await self.client()
        op = await self.client(self.op)
        await grant(op, c.key.public_hex, amount)  # type: ignore[union-attr]
        return c

    async def auction(self, c: Client, feed: str) -> Auction:
        return await self.stack.enter_async_context(Auction(c, feed))


@pytest.fixture
async def world(start_relay: Callable[..., Any]) -> AsyncIterator[World]:
    op = Keypair.generate()
    relay = await start_relay("a", operators=(op.public_hex,))
    async with contextlib.AsyncExitStack() as stack:
        yield World(relay, op, stack)


async def code_of(coro: Any) -> str:
    with pytest.raises(RelayError) as err:
        await coro
    return err.value.code


async def test_full_lifecycle_with_a_failing_winner_slashing_and_standby_promotion(world: World) -> None:
    requester = await world.funded(100)
    a, b, c = [await world.funded(100) for _ in range(3)]
    poor = await world.client()  # no credits at all
    feed = "auction/lifecycle"
    req = await world.auction(requester, feed)
    await req.open({"title": "summarise the log"}, bid_window_ms=1500, result_window_ms=700,
                   min_stake=5, reward=10, standby=2)
    bidders = {k: await world.auction(k, feed) for k in (a, b, c, poor)}
    await bidders[a].bid(30)
    await bidders[b].bid(20)
    await bidders[c].bid(10)
    assert await code_of(bidders[poor].bid(5)) == "insufficient_funds"
    assert await code_of(bidders[a].bid(31)) == "conflict"  # one live bid per agent
    assert await code_of(bidders[b].bid(3)) in ("invalid", "conflict")  # below min_stake (and a second bid)
    ledger = await balances(world.relay.url)
    assert ledger[a.key.public_hex] == {"available": 70, "locked": 30}  # type: ignore[union-attr]
    assert ledger[requester.key.public_hex] == {"available": 90, "locked": 10}  # type: ignore[union-attr]
    assert poor.key.public_hex not in ledger  # type: ignore[union-attr]

    # the relay awards at the deadline: ranked by stake (nobody has trust yet)
    st = await req.wait_status("awarded", timeout=10)
    ka, kb, kc = (x.key.public_hex for x in (a, b, c))  # type: ignore[union-attr]
    assert (st.winner, st.assignee, list(st.queue)) == (ka, ka, [kb, kc])
    assert [r["key"] for r in st.ranking] == [ka, kb, kc]
    assert await code_of(bidders[poor].bid(0)) in ("late", "insufficient_funds")
    late = await world.funded(50)
    assert await code_of((await world.auction(late, feed)).bid(40)) == "late"

    # a never delivers: the relay expires it, slashes its stake to the requester, promotes b
    st = await req.wait_assigned(kb, timeout=10)
    assert [(h["kind"], h.get("key")) for h in st.history][-2:] == [("expire", ka), ("promote", kb)]
    # b delivers, the requester rejects: b is slashed, c promoted
    await bidders[b].wait_assigned(kb)
    await bidders[b].deliver({"summary": "wrong"})
    await req.wait_for(lambda s: s.result is not None)
    await req.reject("not what I asked for")
    await bidders[c].wait_assigned(kc, timeout=10)
    assert await code_of(bidders[b].deliver({"summary": "again"})) in ("conflict", "unauthorized")
    await bidders[c].deliver({"summary": "right"})
    await req.wait_for(lambda s: s.result is not None)
    await req.accept()
    await req.wait_status("completed")

    async def settled() -> dict[str, Any]:
        while True:  # the relay's ledger moves follow the auction records; poll the view to the end state
            led = await balances(world.relay.url)
            if led.get(kc, {}).get("available") == 110 and led.get(kb, {}).get("locked", 0) == 0:
                return led
            await asyncio.sleep(0.05)

    led = await asyncio.wait_for(settled(), 10)
    kr = requester.key.public_hex  # type: ignore[union-attr]
    assert led[ka] == {"available": 70, "locked": 0}     # slashed 30 (expired)
    assert led[kb] == {"available": 80, "locked": 0}     # slashed 20 (rejected)
    assert led[kc] == {"available": 110, "locked": 0}    # stake back + the reward of 10
    assert led[kr] == {"available": 90 + 30 + 20, "locked": 0}  # paid 10, got both slashed stakes
    total = sum(v["available"] + v["locked"] for v in led.values())
    assert total == 100 * 4 + 50  # grants only: credits are conserved

    # trust outcomes in vouch/global: a and b slashed, c delivered
    async def outcomes() -> list[tuple[str, str]]:
        while True:
            recs = await fetch_records(world.relay.url, "vouch/global")
            out = [(r["event"]["body"]["subject"], r["event"]["body"]["outcome"]) for r in recs
                   if r["event"]["kind"] == "vouch.outcome"]
            if len(out) >= 3:
                return out
            await asyncio.sleep(0.05)

    expected = [(ka, "slashed"), (kb, "slashed"), (kc, "delivered")]
    assert sorted(await asyncio.wait_for(outcomes(), 10)) == sorted(expected)

    # anyone replaying the auction feed gets the same winner, and the award checks out
    records = [Record.from_wire(r) for r in await fetch_records(world.relay.url, feed)]
    trust_records = [Record.from_wire(r) for r in await fetch_records(world.relay.url, "vouch/global")]
    assert auction_rules.award_problem(records, trust_records) is None
    from collab.namespaces.auction import AuctionNamespace

    ns = AuctionNamespace()
    s = ns.initial(feed)
    for r in records:
        s = ns.apply(s, r)
    assert (s.winner, s.status, s.assignee) == (ka, "completed", kc)
    assert [h["kind"] for h in s.history] == ["open", "award", "expire", "promote", "result", "reject", "promote",
                                               "result", "accept"]


async def test_forged_bid_is_refused_and_nothing_is_locked(world: World) -> None:
    requester = await world.funded(10)
    victim = await world.funded(50)
    feed = "auction/forged"
    req = await world.auction(requester, feed)
    await req.open("t", bid_window_ms=5000, result_window_ms=1000)
    mallory = Keypair.generate()
    raw = await Raw.connect(world.relay.ws_url, mallory)
    await raw.hello(mallory)
    ev = Event.create(mallory, feed, "auction.bid", {"stake": 50}).to_wire()
    ev["author"] = victim.key.public_hex  # type: ignore[union-attr]  # claims to be the victim
    reply = await raw.request({"t": "pub", "event": ev, "rid": "f1"}, "f1")
    assert reply["t"] == "error" and reply["code"] == "bad_signature"
    # a correctly signed bid from mallory's own key in the victim's name: unauthorized
    ev2 = Event.create(victim.key, feed, "auction.bid", {"stake": 50}).to_wire()  # type: ignore[arg-type]
    reply = await raw.request({"t": "pub", "event": ev2, "rid": "f2"}, "f2")
    assert reply["t"] == "error" and reply["code"] == "unauthorized"
    await raw.close()
    assert req.state.bids == {}
    led = await balances(world.relay.url)
    assert led[victim.key.public_hex] == {"available": 50, "locked": 0}  # type: ignore[union-attr]


async def test_a_hundred_agents_bid_in_one_auction(world: World) -> None:
    requester = await world.funded(1)
    op = await world.client(world.op)
    keys = [Keypair.generate() for _ in range(100)]
    await asyncio.gather(*(grant(op, k.public_hex, 1000) for k in keys))
    clients = await asyncio.gather(*(world.client(k) for k in keys))
    feed = "auction/crowd"
    req = await world.auction(requester, feed)
    await req.open("crowd work", bid_window_ms=4000, result_window_ms=10_000, standby=3)
    stakes = {k.public_hex: 10 + (i * 37) % 500 for i, k in enumerate(keys)}
    acks = await asyncio.gather(*(c.publish(feed, "auction.bid", {"stake": stakes[c.key.public_hex]})  # type: ignore[union-attr]
                                  for c in clients))
    assert sorted(a.seq for a in acks) == list(range(2, 102))
    st = await req.wait_status("awarded", timeout=15)
    assert len(st.ranking) == 100
    bid_seq = {b.key: b.seq for b in st.bids.values()}
    expected = sorted(stakes, key=lambda k: (-stakes[k], bid_seq[k]))
    assert [r["key"] for r in st.ranking] == expected
    assert st.winner == expected[0] and list(st.queue) == expected[1:4]
    led = await asyncio.wait_for(_until_released(world.relay.url, set(expected[4:])), 15)
    for k in expected[4:]:
        assert led[k] == {"available": 1000, "locked": 0}
    for k in expected[:4]:
        assert led[k] == {"available": 1000 - stakes[k], "locked": stakes[k]}


async def _until_released(url: str, keys: set[str]) -> dict[str, Any]:
    while True:
        led = await balances(url)
        if all(led.get(k, {}).get("locked", 1) == 0 for k in keys):
            return led
        await asyncio.sleep(0.05)


async def test_grants_only_by_operators_and_ledger_closed_to_agents(world: World) -> None:
    agent = await world.client()
    assert await code_of(grant(agent, agent.key.public_hex, 10)) == "unauthorized"  # type: ignore[union-attr]
    assert await code_of(agent.publish("ledger/main", "ledger.lock",
                                       {"key": agent.key.public_hex, "amount": 1, "ref": "x"})) == "unauthorized"  # type: ignore[union-attr]
    rows = await world.relay.relay.storage.read("ledger/main", 0, 10)
    kinds = [json.loads(r.data)["event"]["kind"] for r in rows]
    assert "ledger.grant" not in kinds and "ledger.lock" not in kinds
