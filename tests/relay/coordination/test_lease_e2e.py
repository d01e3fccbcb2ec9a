"""Leases end to end on a real relay, with real agent processes (tests/relay/coordination/lease_agent.py):
failover after SIGKILL (20 candidates, 5 rounds, verified by ``colony replay --verify``), a holder
paused past its TTL whose fenced writes are refused, and a task tree led through a lease that a
standby finishes after its leader's death."""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any

import pytest

from collab.client import Client
from collab.errors import RelayError
from collab.events import now_ms
from collab.keys import Keypair
from collab.lease import Lease
from collab.namespaces.lease import LeaseState
from collab.replay import fetch_records
from collab.tasks import TaskLeader, TaskWorker
from tests.relay.coordination.leaseprocs import FAST, Agent, replay_verify

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@sqlite_only
async def test_twenty_candidates_one_holder_and_failover_after_sigkill(relay: Any) -> None:
    feed, ttl = "lease/coordinator", 1500
    keys = [Keypair.generate() for _ in range(5)]
    procs = [await Agent.start(relay.url, feed, k, 10, ttl) for k in keys]  # first in the standby order
    standbys = [Keypair.generate() for _ in range(15)]
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(Client(relay.url, Keypair.generate(), **FAST))
        view = Lease(watcher, feed)
        await view.start()
        try:
            st = await view.wait_for(lambda s: s.holder is not None and len(s.candidates) == 4, 30)
            for k in standbys:
                c = await stack.enter_async_context(Client(relay.url, k, **FAST))
                await Lease(c, feed, ttl_ms=ttl).start()
                await c.publish(feed, "lease.campaign", {"ttl_ms": ttl})
            st = await view.wait_for(lambda s: len(s.candidates) == 19, 10)
            by_key = {k.public_hex: p for k, p in zip(keys, procs, strict=True)}
            for rnd in range(5):
                holder = st.holder
                assert holder in by_key and st.epoch == rnd + 1
                await by_key[holder].line(lambda x: x.startswith("granted"))
                killed = now_ms()
                await by_key[holder].kill()
                st = await view.wait_for(lambda s, e=st.epoch: s.epoch > e and s.holder is not None, 10)
                assert st.epoch == rnd + 2
                granted = st.history[-1]["granted"]
                assert st.history[-2]["end"] == "expired"
                assert granted - killed <= ttl + 500, (granted - killed)  # TTL plus a timer tick (loaded CI)
            assert st.holder == standbys[0].public_hex  # the first in-process standby, by campaign order
            assert [h["epoch"] for h in st.history] == [1, 2, 3, 4, 5, 6]
        finally:
            for p in procs:
                await p.kill()
            await view.close()
    await replay_verify(relay.url, feed)


@sqlite_only
async def test_paused_holder_cannot_write_under_its_old_epoch(relay: Any) -> None:
    feed, notes, ttl = "lease/writer", "notes/out", 1000
    writer = await Agent.start(relay.url, feed, Keypair.generate(), 0, ttl, "write", notes)
    try:
        await writer.line(lambda x: x == "wrote 3")
        async with Client(relay.url, Keypair.generate(), **FAST) as sc:
            standby = Lease(sc, feed, ttl_ms=5000)
            await standby.start()
            await standby.campaign()
            writer.proc.send_signal(signal.SIGSTOP)
            try:
                epoch = await standby.acquire(10)  # the writer's TTL ran out: the standby holds epoch 2
                assert epoch == 2
            finally:
                writer.proc.send_signal(signal.SIGCONT)
            assert await writer.line(lambda x: x.startswith("refused")) == "refused stale_epoch"
            await sc.publish(notes, "note", standby.fenced({"n": "standby"}))
            with pytest.raises(RelayError) as exc:  # the standby's fence cannot be borrowed either
                await sc.publish(notes, "note", {"fence": {"lease": feed, "epoch": 1}})
            assert exc.value.code == "stale_epoch"
            lease_log = await fetch_records(relay.url, feed)
            expired = next(r for r in lease_log if r["event"]["kind"] == "lease.expired")
            stored = await fetch_records(relay.url, notes)
            mine = [r for r in stored if r["event"]["body"]["fence"]["epoch"] == 1]
            assert mine and all(r["rtime"] < expired["rtime"] for r in mine)
            assert [r["event"]["body"]["n"] for r in stored if r["event"]["body"]["fence"]["epoch"] == 2] == ["standby"]
            await standby.release()
            await standby.close()
    finally:
        await writer.kill()


async def tree_survives_its_leaders_death(lead_url: str, standby_url: str, feed: str) -> None:
    """A leader process (on ``lead_url``) opens a tree led through ``feed`` and is SIGKILLed; the
    standby (on ``standby_url``) is granted the lease, escalates the stalled subtask and finishes."""
    tree = feed.replace("lease/", "task/")
    worker, standby_key = Keypair.generate(), Keypair.generate()
    idle = Keypair.generate()  # assigned part b, never works: it stalls and is escalated
    lead = await Agent.start(lead_url, feed, Keypair.generate(), 5, 1000, "lead", tree,
                             "a", worker.public_hex, "b", idle.public_hex)
    try:
        await lead.line(lambda x: x == "opened")
        async with Client(standby_url, standby_key, **FAST) as sc, Client(standby_url, worker, **FAST) as wc:
            standby = Lease(sc, feed, ttl_ms=3000)
            await standby.start()
            await standby.campaign()
            await lead.kill()
            await standby.acquire(10)
            async with TaskLeader(sc, tree, lease=standby) as leader:
                leader.supervise(lambda sub: worker.public_hex if sub.sub == "b" else None)
                a = TaskWorker(wc, tree, "a")
                await a.start_work()
                await a.done({"a": 1})
                b = TaskWorker(wc, tree, "b")
                await b.start_work(15)  # after the stall and the standby leader's escalation
                await b.done({"b": 2})
                await leader.wait_all_done(10)
                await leader.finish("completed", {"parts": 2})
                st = await leader.wait_for(lambda s: s.closed, 5)
                assert st.leader == standby_key.public_hex and st.fence_epoch == 2
                assert leader.escalations == [("b", idle.public_hex, worker.public_hex)]
                assert st.subs["b"].previous == (idle.public_hex,)
                await a.close()
                await b.close()
            lstate: LeaseState = standby.state
            assert lstate.epoch == 2 and lstate.holder == standby_key.public_hex
            await standby.release()
            await standby.close()
    finally:
        await lead.kill()
    kinds = [r["event"]["kind"] for r in await fetch_records(standby_url, feed)]
    assert kinds.count("lease.granted") == 2 and kinds.count("lease.expired") == 1  # each made once
    await replay_verify(standby_url, feed)


@sqlite_only
async def test_task_tree_led_through_a_lease_survives_its_leaders_death(relay: Any) -> None:
    await tree_survives_its_leaders_death(relay.url, relay.url, "lease/tree-lead")


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # one site, two relay processes
async def test_on_a_two_process_site_the_standby_takes_the_tree_over(start_relay: Callable[..., Any]) -> None:
    a = await start_relay("a", site="s")
    b = await start_relay("b", site="s")
    await tree_survives_its_leaders_death(a.url, b.url, "lease/site-tree")
