"""collab/lease.py: ``async with Lease(...)`` campaigns, waits for the grant, renews, hands out the
fence and resigns on exit; a standby takes over; ``lost`` is set when the TTL since the last
acknowledged renewal ends and when the relay grants the lease to someone else."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from collab.client import Client
from collab.keys import Keypair
from collab.lease import Lease

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def test_leader_then_standby_after_resign(relay: Any) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, a, **FAST) as ca, Client(relay.url, b, **FAST) as cb:
        standby = Lease(cb, "lease/sdk", priority=1, ttl_ms=2000)
        async with Lease(ca, "lease/sdk", ttl_ms=600) as lead:
            assert lead.epoch == 1 and lead.is_leader and lead.fenced({"x": 1})["fence"] == lead.fence
            entered = asyncio.ensure_future(standby.__aenter__())
            await lead.wait_for(lambda s: any(c.key == b.public_hex for c in s.candidates), 5)
            renewed = lead.state.deadline
            await lead.wait_for(lambda s: s.deadline > renewed, 5)  # the background renewal
            assert not entered.done() and lead.is_leader
        await asyncio.wait_for(entered, 5)
        assert standby.epoch == 2 and standby.is_leader and lead.lost.is_set()
        assert [h["end"] for h in standby.state.history] == ["resigned", None]
        await standby.__aexit__(None, None, None)
        assert standby.lost.is_set()


async def test_lost_when_renewals_stop_and_the_relay_grants_another(relay: Any) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, a, **FAST) as ca, Client(relay.url, b, **FAST) as cb:
        lazy = Lease(ca, "lease/lazy", ttl_ms=300, renew_every_ms=60_000)  # never renews in time
        async with lazy:
            await asyncio.wait_for(lazy.lost.wait(), 5)  # its own clock: the TTL since the last ack ended
            assert not lazy.is_leader
            async with Lease(cb, "lease/lazy", ttl_ms=2000) as other:
                assert other.epoch == 2
                await lazy.wait_for(lambda s: s.holder == b.public_hex, 5)
