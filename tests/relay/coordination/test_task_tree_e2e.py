"""Task trees end to end: a subagent *process* is killed mid-task; the relay emits
``task.stalled`` when its heartbeat window passes; the leader's supervisor reassigns the
subtask; another agent resumes from the last checkpoint and the tree completes."""
from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from collab.client import Client
from collab.keys import Keypair
from collab.namespaces.task import TaskNamespace
from collab.replay import fetch_records, replay
from collab.tasks import TaskLeader, TaskWorker

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
ROOT = Path(__file__).resolve().parents[3]  # the repository (tests/relay/coordination/..)


async def _line(proc: asyncio.subprocess.Process, want: str, timeout: float = 30.0) -> None:
    async def read() -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"worker exited before printing {want!r}")
            if line.decode().strip() == want:
                return

    await asyncio.wait_for(read(), timeout)


async def test_killed_subagent_is_detected_and_another_resumes_from_its_checkpoint(
        start_relay: Callable[..., Any]) -> None:
    relay = await start_relay("t")
    leader_key, crashy, steady = Keypair.generate(), Keypair.generate(), Keypair.generate()
    feed = "task/report"
    async with Client(relay.url, leader_key, **FAST) as lc, TaskLeader(lc, feed) as leader:
        await leader.open("write the report")
        await leader.spawn("intro", steady.public_hex, "write the intro", heartbeat_ms=60_000)
        # the window must outlast the worker process's start on a loaded machine: a worker that
        # is not up in time is (rightly) stalled and reassigned before it ever checkpoints
        await leader.spawn("body", crashy.public_hex, "write the body", heartbeat_ms=4000)
        leader.supervise(lambda sub: steady.public_hex if sub.assignee == crashy.public_hex else None)

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.relay.coordination.task_worker", relay.url, feed, "body",
            crashy.seed.hex(), "5", "3",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            await _line(proc, "checkpointed 3")
            await leader.wait_for(lambda s: s.subs["body"].checkpoint_seq > 0
                                  and s.subs["body"].checkpoint["step"] == 3, 10)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        # the relay notices the silence, the supervisor hands the subtask to steady
        st = await leader.wait_for(lambda s: s.subs["body"].assignee == steady.public_hex, 15)
        body = st.subs["body"]
        assert body.previous == (crashy.public_hex,) and body.status == "submitted"
        assert leader.escalations == [("body", crashy.public_hex, steady.public_hex)]

        async with Client(relay.url, steady, **FAST) as sc:
            intro = TaskWorker(sc, feed, "intro")
            assert await intro.start_work() is None  # a fresh start
            await intro.done({"text": "Hello"})
            worker = TaskWorker(sc, feed, "body")
            resume = await worker.start_work()
            assert resume == {"step": 3, "partial": ["part1", "part2", "part3"]}
            for step in (4, 5):
                await worker.progress(step, 5)
                await worker.checkpoint({"step": step})
            await worker.done({"parts": 5})
            await intro.close()
            await worker.close()

        st = await leader.wait_all_done(10)
        assert {k: x.status for k, x in st.subs.items()} == {"intro": "completed", "body": "completed"}
        assert leader.progress()["percent"] == 100
        await leader.finish("completed", {"ok": True})
        await leader.wait_for(lambda s: s.status == "completed", 10)

    # the log tells the whole story, and it replays to the same state
    recs = await fetch_records(relay.url, feed)
    kinds = [r["event"]["kind"] for r in recs]
    assert kinds.count("task.stalled") == 1
    stalled = next(r for r in recs if r["event"]["kind"] == "task.stalled")
    assert stalled["event"]["author"] == stalled["relay"]  # relay-signed
    assert stalled["event"]["body"]["assignee"] == crashy.public_hex
    i_stall, i_reassign = kinds.index("task.stalled"), kinds.index("task.reassign")
    assert i_stall < i_reassign
    result = replay(recs)
    assert result.verified and result.anomalies == []
    ns = TaskNamespace()
    assert ns.view(result.state) == ns.view(st) | {"status": "completed", "result": {"ok": True},
                                                    "closed": result.state.closed_at, "seq": result.state.seq}
    assert result.state.status == "completed"


async def test_leader_puts_a_stalled_subtask_up_for_auction_and_the_winner_resumes(
        start_relay: Callable[..., Any]) -> None:
    relay = await start_relay("u")
    leader_key, quitter, bidder_lo, bidder_hi = (Keypair.generate() for _ in range(4))
    feed = "task/migrate"
    async with Client(relay.url, leader_key, **FAST) as lc, TaskLeader(lc, feed) as leader:
        await leader.open("migrate the database")
        await leader.spawn("copy", quitter.public_hex, "copy the tables", heartbeat_ms=600)
        async with Client(relay.url, quitter, **FAST) as qc:
            w = TaskWorker(qc, feed, "copy")
            await w.start_work()
            await w.checkpoint({"tables": 7})
            await w.close()  # stops heartbeating: a silent worker
        await leader.wait_for(lambda s: s.subs["copy"].stalled, 15)
        auction_feed = "auction/migrate-copy"
        async with Client(relay.url, bidder_lo, **FAST) as lo, Client(relay.url, bidder_hi, **FAST) as hi:
            from collab.auctions import Auction

            async def bid(c: Client, stake: int) -> None:
                async with Auction(c, auction_feed) as a:
                    await a.wait_for(lambda s: s.status == "open", 15)
                    await a.bid(stake)

            winner = asyncio.create_task(leader.auction_subtask("copy", auction_feed, bid_window_ms=1500,
                                                                result_window_ms=60_000))
            await asyncio.gather(bid(lo, 0), bid(hi, 0))  # zero stakes: no ledger needed
            got = await asyncio.wait_for(winner, 20)
            # equal stakes: the earlier bid wins (seq tie-break)
            st = await leader.wait_for(lambda s: s.subs["copy"].assignee == got, 10)
            assert got in (bidder_lo.public_hex, bidder_hi.public_hex)
            assert st.subs["copy"].auction == auction_feed and st.subs["copy"].previous == (quitter.public_hex,)
            assert leader.escalations == [("copy", quitter.public_hex, got)]
            wc = lo if got == bidder_lo.public_hex else hi
            resumed = TaskWorker(wc, feed, "copy")
            assert await resumed.start_work() == {"tables": 7}
            await resumed.done({"tables": 12})
            await resumed.close()
        st = await leader.wait_all_done(10)
        assert st.subs["copy"].status == "completed" and st.subs["copy"].result == {"tables": 12}
