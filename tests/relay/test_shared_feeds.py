"""Shared coordination feeds belong to the relay (issue 13, item 3; docs/protocol.md 12.1).

An agent cannot be seq 1 of a ``ledger/`` or ``vouch/`` feed: its attempt to squat one (a
``feed.policy`` of its own, making itself the owner) is refused ``unauthorized``, the relay opens
the feed itself (``ledger.open`` with the operators, ``feed.policy signed`` for a trust topic) and
everyone else's grants and vouches go through. On a Redis site of two processes the feed is opened
once, whichever process sequences first.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab import auctions, trust
from collab.client import Client
from collab.events import Record
from collab.keys import Keypair
from collab.errors import RelayError
from collab.replay import fetch_records
from tests.conftest import Backend

FAST = {"backoff_base": 0.02, "backoff_max": 0.3}


async def records(url: str, feed: str) -> list[Record]:
    return [Record.from_wire(d) for d in await fetch_records(url, feed)]


async def refused(client: Client, feed: str, kind: str, body: Any) -> str:
    with pytest.raises(RelayError) as info:
        await client.publish(feed, kind, body)
    return info.value.code


async def test_an_agent_cannot_squat_the_ledger_or_the_trust_feed(start_relay: Callable[..., Any]) -> None:
    op, attacker, alice, bob = (Keypair.generate() for _ in range(4))
    relay = await start_relay("a", operators=(op.public_hex,))
    rkey = relay.relay.hub.relay_key.public_hex
    async with Client(relay.url, attacker, **FAST) as evil, Client(relay.url, op, **FAST) as oper, \
            Client(relay.url, alice, **FAST) as a, Client(relay.url, bob, **FAST) as b:
        for feed in ("ledger/main", "vouch/global"):  # first, before the relay opened either
            for policy in ("members", "signed", "open"):
                assert await refused(evil, feed, "feed.policy", {"policy": policy}) == "unauthorized", (feed, policy)
            assert await relay.relay.storage.head(feed) is None  # a refused event opens nothing
        assert await refused(evil, "ledger/main", "ledger.open", {"operators": [attacker.public_hex]}) \
            == "unauthorized"

        # the ledger still opens, with the configured operators, and operator grants work
        ack = await auctions.grant(oper, alice.public_hex, 40)
        assert (ack.seq, ack.dup) == (2, False)
        assert (await auctions.balances(relay.url))[alice.public_hex] == {"available": 40, "locked": 0}
        ledger = await records(relay.url, "ledger/main")
        assert [(r.event.kind, r.event.author) for r in ledger] == [("ledger.open", rkey),
                                                                    ("ledger.grant", op.public_hex)]
        assert ledger[0].event.body == {"operators": [op.public_hex]}
        assert await refused(evil, "ledger/main", "feed.policy", {"policy": "members"}) == "unauthorized"  # later too

        # everyone's vouches are accepted; the attacker's own vouch is just one of them
        assert (await trust.vouch(evil, alice.public_hex, 900)).seq == 2  # after the relay's opening
        await trust.vouch(a, bob.public_hex, 800)
        await trust.vouch(b, alice.public_hex, 700)
        log = await records(relay.url, "vouch/global")
        assert [(r.event.kind, r.event.author) for r in log] == [
            ("feed.policy", rkey), ("vouch.set", attacker.public_hex), ("vouch.set", alice.public_hex),
            ("vouch.set", bob.public_hex)]
        assert log[0].event.body == {"policy": "signed"}
        assert await refused(evil, "vouch/global", "acl.grant", {"key": attacker.public_hex}) == "unauthorized"
        scores = await trust.fetch_scores(relay.url)
        assert set(scores) == {attacker.public_hex, alice.public_hex, bob.public_hex}
        assert scores == trust.compute(log, relay=rkey)


async def test_one_opening_per_feed_on_every_process_of_a_site(start_relay: Callable[..., Any], backend: Backend,
                                                               tmp_path: Path) -> None:
    op, site_key = Keypair.generate(), tmp_path / "site.key"
    first = await start_relay("a", site="s", operators=(op.public_hex,), relay_key_file=site_key)
    second = first
    if backend.name == "redis":  # a second process of the same site (one Redis, one relay key)
        second = await start_relay("b", site="s", operators=(op.public_hex,), relay_key_file=site_key)
    agents = [Keypair.generate() for _ in range(6)]
    async with contextlib.AsyncExitStack() as stack:
        op_a = await stack.enter_async_context(Client(first.url, op, **FAST))
        op_b = await stack.enter_async_context(Client(second.url, op, **FAST))
        clients = [await stack.enter_async_context(Client(r.url, k, **FAST))
                   for r, k in zip((first, second) * 3, agents, strict=True)]
        squat = [clients[1].publish(f, "feed.policy", {"policy": "members"}) for f in ("ledger/main", "vouch/global")]
        work = [auctions.grant(op_a, agents[1].public_hex, 5), auctions.grant(op_b, agents[2].public_hex, 7)]
        work += [trust.vouch(c, agents[(i + 1) % 6].public_hex, 100 + i) for i, c in enumerate(clients)]
        results = await asyncio.gather(*squat, *work, return_exceptions=True)
    for r in results[:2]:
        assert isinstance(r, RelayError) and r.code == "unauthorized", r
    assert not [r for r in results[2:] if isinstance(r, BaseException)]
    key = first.relay.hub.relay_key.public_hex
    for feed, opening, n in (("ledger/main", "ledger.open", 2), ("vouch/global", "feed.policy", 6)):
        log = await records(second.url, feed)
        assert [(r.event.kind, r.event.author) for r in log[:1]] == [(opening, key)], feed
        assert len(log) == 1 + n and all(r.event.author != key for r in log[1:]), feed
    assert (await auctions.balances(first.url))[agents[2].public_hex]["available"] == 7
