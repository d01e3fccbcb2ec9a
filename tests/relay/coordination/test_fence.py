"""relay/coordination/fence.py: fenced publishes are admitted only from the lease's holder at its
current epoch; malformed fences are ``invalid``; on a two-process Redis site the process that
sequences the fenced feed reads the lease as the other process last appended it."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from collab.client import Client
from collab.errors import RelayError
from collab.keys import Keypair
from collab.lease import Lease

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}


async def _refused(c: Client, feed: str, body: Any) -> str:
    with pytest.raises(RelayError) as exc:
        await c.publish(feed, "note", body)
    return exc.value.code


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_only_the_holder_at_the_current_epoch_writes(relay: Any) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with Client(relay.url, a, **FAST) as ca, Client(relay.url, b, **FAST) as cb:
        assert await _refused(ca, "notes/x", {"fence": {"lease": "lease/f", "epoch": 1}}) == "stale_epoch"
        for bad in ({"lease": "doc/f", "epoch": 1}, {"lease": "lease/f", "epoch": 0}, {"lease": "lease/f"}, 7):
            assert await _refused(ca, "notes/x", {"fence": bad}) == "invalid"
        async with Lease(ca, "lease/f", ttl_ms=5000) as lead:
            ack = await ca.publish("notes/x", "note", lead.fenced({"n": 1}))
            again = await ca.publish_event(ca.create_event("notes/x", "note", lead.fenced({"n": 2})))
            assert again.seq == ack.seq + 1
            assert await _refused(cb, "notes/x", {"fence": lead.fence}) == "stale_epoch"  # not the holder
            assert await _refused(ca, "notes/x", {"fence": {"lease": "lease/f", "epoch": 2}}) == "stale_epoch"
            task = {"title": "t", "lease": "lease/f", "fence": lead.fence}
            await ca.publish("task/fenced", "task.open", task)
        assert lead.lost.is_set()  # resigned on exit
        assert await _refused(ca, "notes/x", {"fence": {"lease": "lease/f", "epoch": 1}}) == "stale_epoch"
        with pytest.raises(RelayError) as exc:  # a leased task refuses leader events without the fence
            await ca.publish("task/fenced", "task.close", {"status": "cancelled"})
        assert exc.value.code == "unauthorized"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # one site, two processes
async def test_a_fence_is_checked_against_the_lease_as_the_other_process_left_it(
        start_relay: Callable[..., Awaitable[Any]]) -> None:
    p1 = await start_relay("a", site="s")
    p2 = await start_relay("b", site="s")
    key = Keypair.generate()
    async with Client(p1.url, key, **FAST) as c1, Client(p2.url, key, **FAST) as c2:
        lead = Lease(c1, "lease/site", ttl_ms=5000)
        await lead.__aenter__()
        await c2.publish("notes/site", "note", lead.fenced({"via": "b"}))  # b reads the grant a appended
        await lead.__aexit__(None, None, None)  # resigned on a
        assert await _refused(c2, "notes/site", {"fence": lead.fence}) == "stale_epoch"
