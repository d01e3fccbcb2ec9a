"""Leases under federation (three relay processes): the lease's home relay grants; a holder whose
relay is cut off from the home by a partition loses the lease when its renewals stop arriving,
the standby on the home's side is granted the next epoch, and after the heal the old holder's
fenced writes are refused (``stale_epoch``)."""
from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from collab.client import Client
from collab.errors import RelayError
from collab.keys import Keypair
from collab.lease import Lease
from tests.relay.federation.test_federation import FAST, Fed, _linked, fed  # noqa: F401 (the fixture)

LEASE = "lease/fed-lead"


def _homed(f: Fed, namespace: str, node: Any) -> str:
    """A feed of ``namespace`` whose home is ``node``."""
    return next(feed for i in itertools.count() if f.home_of(feed := f"{namespace}/n{i}") is node)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_holder_cut_off_from_the_home_loses_the_lease_to_the_home_side(fed: Any) -> None:  # noqa: F811
    def cut_path(f: Fed) -> tuple[tuple[str, str], ...]:  # the holder's relay reaches the home through a proxy
        home = f.home_of(LEASE)
        return ((f.others(home)[0].name, home.name),)

    f: Fed = await fed(proxied=cut_path)
    (far_name, _), proxy = next(iter(f.proxies.items()))
    home, far = f.home_of(LEASE), f.nodes[far_name]
    notes = _homed(f, "notes", home)
    await _linked(f)
    ttl = 1500
    async with Client(far.url, Keypair.generate(), **FAST) as xc, Client(home.url, Keypair.generate(), **FAST) as yc:
        holder = Lease(xc, LEASE, ttl_ms=ttl)
        await holder.start()
        await holder.campaign()
        assert await holder.acquire(15) == 1  # granted by the home, through the far relay's forward
        await xc.publish(notes, "note", holder.fenced({"n": "before"}))
        standby = Lease(yc, LEASE, ttl_ms=5000)
        await standby.start()
        await standby.campaign()
        await standby.wait_for(lambda s: any(c.key == yc.key.public_hex for c in s.candidates), 10)  # type: ignore[union-attr]

        proxy.cut()
        cut_at = time.monotonic()
        assert await standby.acquire(15) == 2  # the home expired the silent holder and granted the next
        assert time.monotonic() - cut_at < ttl / 1000 + 3
        await holder.lost.wait()  # its renewals stopped arriving (refused or timed out): it knows
        assert not holder.is_leader

        proxy.heal()
        await _linked(f)
        with pytest.raises(RelayError) as exc:  # the deposed holder writes under its old epoch
            await xc.publish(notes, "note", holder.fenced({"n": "after"}))
        assert exc.value.code == "stale_epoch"
        await yc.publish(notes, "note", standby.fenced({"n": "new leader"}))
        await standby.release()
        for lease in (holder, standby):
            await lease.close()
