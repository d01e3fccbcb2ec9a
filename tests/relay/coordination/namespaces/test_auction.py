"""relay/coordination/namespaces/auction.py: the bid gate (escrow and stakes locked before the
event is sequenced, nothing locked for zero), the award timer with its ledger follow-ups, and
the follow-ups replayed as duplicates when the relay restarts over the same log."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from collab.events import Event, Record, now_ms
from collab.keys import Keypair
from relay.coordination.namespaces.auction import AuctionPlugin
from relay.server import Relay
from tests.conftest import make_config
from tests.relay.coordination.namespaces.conftest import OPERATOR

LEDGER = "ledger/main"


async def stored(site: Relay, feed: str) -> list[Record]:
    rows = await site.hub.storage.read(feed, 0, 1000)
    return [Record.from_wire(json.loads(r.data), verify_sigs=False) for r in rows]


async def fund(site: Relay, key: Keypair, amount: int) -> None:
    ev = Event.create(OPERATOR, LEDGER, "ledger.grant", {"to": key.public_hex, "amount": amount})
    await site.hub.publish(ev, OPERATOR.public_hex)


def open_body(deadline: int, reward: int) -> dict[str, object]:
    return {"task": "t", "bid_deadline": deadline, "result_window": 60_000, "min_stake": 0, "reward": reward}


async def test_gate_locks_escrow_and_stakes_before_sequencing_and_the_timer_awards(tmp_path: Path) -> None:
    req, rich, poor = Keypair.generate(), Keypair.generate(), Keypair.generate()
    feed = "auction/gate"
    cfg = make_config(tmp_path / "site", operators=(OPERATOR.public_hex,))
    async with Relay(cfg) as site:
        hub = site.hub
        awarded = asyncio.Event()
        hub.listeners.append(lambda rec, _j: awarded.set() if rec.event.kind == "auction.award" else None)
        await fund(site, req, 100)
        await fund(site, rich, 40)
        opened = Event.create(req, feed, "auction.open", open_body(now_ms() + 400, 25))
        assert await hub.publish(opened, req.public_hex) == (1, False)
        assert await hub.publish(opened, req.public_hex) == (1, True)  # a retried copy: no second lock
        await hub.publish(Event.create(rich, feed, "auction.bid", {"stake": 30}), rich.public_hex)
        await hub.publish(Event.create(poor, feed, "auction.bid", {"stake": 0}), poor.public_hex)  # nothing to lock
        ledger = await hub.runtime(LEDGER)
        assert ledger.state.locked_of(req.public_hex) == 25 and ledger.state.locked_of(rich.public_hex) == 30
        locks = [r.event.body for r in await stored(site, LEDGER) if r.event.kind == "ledger.lock"]
        assert locks == [{"key": req.public_hex, "amount": 25, "ref": feed},
                         {"key": rich.public_hex, "amount": 30, "ref": feed}]
        await asyncio.wait_for(awarded.wait(), 20)
        award = next(r for r in await stored(site, feed) if r.event.kind == "auction.award")
        assert award.event.author == hub.relay_key.public_hex and award.event.body["winner"] == rich.public_hex
        n_ledger = len(await stored(site, LEDGER))
    # a restart replays the follow-ups of the whole log (in start, before it returns): all
    # duplicates, so the ledger is unchanged
    async with Relay(cfg) as again:
        assert len(await stored(again, LEDGER)) == n_ledger
        state = (await again.hub.runtime(feed)).state
        assert state.status == "awarded" and state.assignee == rich.public_hex


async def test_hooks_for_timers(site: Relay) -> None:
    p = AuctionPlugin()
    assert p.follows and p.replay_on_start and p.gated_kinds == {"auction.open", "auction.bid"}
    rt = await site.hub.runtime("auction/empty")
    assert list(p.timers(rt.state)) == []  # not open: nothing to schedule
    assert await p.on_timer(site.coordinator, rt, 1, "expire") is None  # no assignee to expire
    assert await p.on_timer(site.coordinator, rt, 1, "something else") is None
