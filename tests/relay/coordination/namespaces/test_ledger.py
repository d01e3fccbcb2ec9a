"""relay/coordination/namespaces/ledger.py: lazy ledger opening (with the first grant), lock-then-
sequence with its release on refusal, and follow-up moves that log instead of raising."""
from __future__ import annotations

import json
import logging

import pytest

from collab.errors import ColonyError, InsufficientFunds
from collab.events import Event
from collab.keys import Keypair
from relay.coordination.namespaces import ledger
from relay.server import Relay
from tests.relay.coordination.namespaces.conftest import OPERATOR

LEDGER = "ledger/test"


async def stored_kinds(site: Relay, feed: str) -> list[str]:
    rows = await site.hub.storage.read(feed, 0, 1000)
    return [json.loads(r.data)["event"]["kind"] for r in rows]


async def test_a_ledger_opens_once_with_the_operators(site: Relay) -> None:
    ctx = site.coordinator
    await ledger.ensure_ledger(ctx, LEDGER)
    await ledger.ensure_ledger(ctx, LEDGER)
    rt = await site.hub.runtime(LEDGER)
    assert rt.seq == 1 and rt.state.operators == (OPERATOR.public_hex,)
    assert await stored_kinds(site, LEDGER) == ["ledger.open"]


async def test_a_grant_opens_its_ledger_first(site: Relay) -> None:
    to = Keypair.generate().public_hex
    grant = Event.create(OPERATOR, LEDGER, "ledger.grant", {"to": to, "amount": 50})
    seq, dup = await site.hub.publish(grant, OPERATOR.public_hex)
    assert (seq, dup) == (2, False)
    assert await stored_kinds(site, LEDGER) == ["ledger.open", "ledger.grant"]
    assert (await site.hub.runtime(LEDGER)).state.available_of(to) == 50


async def test_lock_then_sequence_and_release_when_the_event_is_refused(site: Relay) -> None:
    ctx, bidder = site.coordinator, Keypair.generate()
    await site.hub.publish(Event.create(OPERATOR, LEDGER, "ledger.grant", {"to": bidder.public_hex, "amount": 30}),
                           OPERATOR.public_hex)
    feed = "auction/ledger-test"
    rt = await site.hub.runtime(feed)
    bid = Event.create(bidder, feed, "auction.bid", {"stake": 10})  # no auction.open: the auction refuses it
    with pytest.raises(ColonyError):
        await ledger.publish_locked(ctx, rt, bid, bidder.public_hex, LEDGER,
                                    {"key": bidder.public_hex, "amount": 10, "ref": feed})
    assert await stored_kinds(site, LEDGER) == ["ledger.open", "ledger.grant", "ledger.lock", "ledger.release"]
    state = (await site.hub.runtime(LEDGER)).state
    assert state.available_of(bidder.public_hex) == 30 and state.locked_of(bidder.public_hex) == 0
    assert rt.seq == 0
    # more than the bidder has: the lock itself is refused, nothing is sequenced or released
    with pytest.raises(InsufficientFunds):
        await ledger.publish_locked(ctx, rt, bid, bidder.public_hex, LEDGER,
                                    {"key": bidder.public_hex, "amount": 31, "ref": feed})
    assert len(await stored_kinds(site, LEDGER)) == 4


async def test_a_refused_follow_up_move_is_logged_not_raised(site: Relay, caplog: pytest.LogCaptureFixture) -> None:
    nobody = Keypair.generate().public_hex
    caplog.set_level(logging.INFO, logger="relay.coordination.coordinator")
    await ledger.move(site.coordinator, LEDGER, "ledger.release", {"key": nobody, "ref": "auction/none"}, ts=1)
    assert await stored_kinds(site, LEDGER) == ["ledger.open"]
    assert any("ledger.release" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


async def test_the_plugin_opens_ledgers_and_gates_nothing(site: Relay) -> None:
    p = ledger.LedgerPlugin()
    assert p.namespace == "ledger" and not p.gated_kinds and not p.follows
    ev = p.opening(site.coordinator, LEDGER)
    assert ev == ledger.ledger_open(site.coordinator, LEDGER)  # ts 0: the same on every process
    assert (ev.kind, ev.body, ev.ts, ev.author) == ("ledger.open", {"operators": [OPERATOR.public_hex]}, 0,
                                                   site.hub.relay_key.public_hex)
