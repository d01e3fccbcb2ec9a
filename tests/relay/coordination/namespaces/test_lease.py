"""relay/coordination/namespaces/lease.py: the relay grants a free lease to the head of the standby
order at once, expires a silent holder after its deadline and grants the next; a renewal moves
the timer; grants and expiries are relay-signed with deterministic ids."""
from __future__ import annotations

import asyncio

from collab.events import Event
from collab.keys import Keypair
from relay.coordination.namespaces.lease import EXPIRE, LeasePlugin
from relay.server import Relay


async def test_grant_renew_expire_and_grant_the_next(site: Relay) -> None:
    hub, a, b = site.hub, Keypair.generate(), Keypair.generate()
    feed = "lease/unit"
    kinds: list[str] = []
    moved = asyncio.Event()

    def seen(rec: object, _j: str) -> None:
        kinds.append(rec.event.kind)  # type: ignore[attr-defined]
        moved.set()

    hub.listeners.append(seen)
    await hub.publish(Event.create(a, feed, "lease.campaign", {"ttl_ms": 400}), a.public_hex)
    rt = await hub.runtime(feed)
    await asyncio.wait_for(_until(moved, lambda: rt.state.holder == a.public_hex), 10)
    await hub.publish(Event.create(b, feed, "lease.campaign", {"ttl_ms": 400, "priority": 3}), b.public_hex)
    p = LeasePlugin()
    (deadline, what), = p.timers(rt.state)
    assert what == EXPIRE and deadline == rt.state.deadline
    await hub.publish(Event.create(a, feed, "lease.renew", {"epoch": 1}), a.public_hex)
    assert rt.state.deadline > deadline  # renewed: the old timer finds nothing to expire
    assert await p.on_timer(site.coordinator, rt, deadline, EXPIRE) is None
    assert rt.state.holder == a.public_hex
    await asyncio.wait_for(_until(moved, lambda: rt.state.holder == b.public_hex), 10)
    assert rt.state.epoch == 2
    assert kinds == ["feed.policy", "lease.campaign", "lease.granted", "lease.campaign", "lease.renew",
                     "lease.expired", "lease.granted"]
    assert rt.state.history[0]["end"] == "expired"
    # the same grant made again (another process of the site) is a duplicate, not a second grant
    first_grant = next(ev for ev in [r.event for r in await _records(site, feed)] if ev.kind == "lease.granted")
    again = Event.create(hub.relay_key, feed, "lease.granted", first_grant.body, ts=first_grant.ts)
    assert again.id == first_grant.id and (await hub.publish(again, None))[1] is True


async def _until(ev: asyncio.Event, pred: object) -> None:
    while not pred():  # type: ignore[operator]
        ev.clear()
        await ev.wait()


async def _records(site: Relay, feed: str) -> list:  # type: ignore[type-arg]
    import json

    from collab.events import Record
    return [Record.from_wire(json.loads(r.data), verify_sigs=False) for r in await site.hub.storage.read(feed, 0, 100)]


def test_the_plugin_follows_lease_feeds() -> None:
    p = LeasePlugin()
    assert p.namespace == "lease" and p.follows and not p.gated_kinds
    assert not p.replay_on_start  # what a restart owes is made when the feed loads (on_load)
