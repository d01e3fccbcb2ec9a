"""collab/tasks.py: the leader's and the workers' handles on a task tree, against a real relay.
(A killed worker process and an auctioned subtask: tests/relay/coordination/test_task_tree_e2e.py.)"""
from __future__ import annotations

import asyncio

import pytest

from collab.client import Client
from collab.keys import Keypair
from collab.namespaces.task import SubState
from collab.tasks import TaskLeader, TaskWorker
from relay.ops.runner import Running

pytestmark = pytest.mark.timeout(60)

def client(url: str, key: Keypair) -> Client:
    return Client(url, key, backoff_base=0.02, backoff_max=0.2)


async def test_a_worker_asks_the_leader_answers_and_progress_adds_up(relay: Running) -> None:
    lk, wk = Keypair.generate(), Keypair.generate()
    feed = "task/ask"
    async with client(relay.url, lk) as lc, TaskLeader(lc, feed) as leader, \
            client(relay.url, wk) as wc:
        await leader.open("translate", input={"lang": "fr"})
        await leader.spawn("a", wk.public_hex, "part a", input={"pages": 4}, heartbeat_ms=60_000)
        await leader.spawn("b", wk.public_hex, "part b", parent="a", heartbeat_ms=60_000)
        st = await leader.wait_for(lambda s: "b" in s.subs, 10)
        assert st.subs["a"].input == {"pages": 4} and st.subs["b"].parent == "a"
        worker = TaskWorker(wc, feed, "a")
        assert await worker.start_work() is None
        await worker.progress(1, 4, "started")
        answer = asyncio.create_task(worker.ask("formal or informal?"))
        st = await leader.wait_for(lambda s: s.subs["a"].status == "input-required", 10)
        assert st.subs["a"].question == "formal or informal?"
        await leader.reply("a", "formal")
        assert await asyncio.wait_for(answer, 10) == "formal"
        await worker.progress(4, 4)
        await worker.done({"words": 1200})
        other = TaskWorker(wc, feed, "b")
        await other.start_work()
        await other.progress(1, 4)
        await other.failed("source missing")
        st = await leader.wait_all_done(10)
        assert (st.subs["a"].status, st.subs["a"].result) == ("completed", {"words": 1200})
        assert (st.subs["b"].status, st.subs["b"].reason) == ("failed", "source missing")
        p = leader.progress()
        assert (p["subtasks"], p["done"], p["total"], p["percent"]) == (2, 5, 8, 62)
        assert p["by_status"]["completed"] == 1 and p["by_status"]["failed"] == 1
        await leader.finish("failed", {"why": "b failed"})
        st = await leader.wait_for(lambda s: s.status == "failed", 10)
        await worker.close()
        await other.close()


async def test_heartbeats_keep_a_subtask_alive_and_silence_escalates(relay: Running) -> None:
    lk, busy, quiet, spare = (Keypair.generate() for _ in range(4))
    feed = "task/beat"
    choices: list[str] = []

    async def choose(x: SubState) -> str | None:  # an async chooser; None leaves a subtask alone
        choices.append(x.sub)
        return spare.public_hex if x.sub == "quiet" else None

    async with client(relay.url, lk) as lc, TaskLeader(lc, feed) as leader, \
            client(relay.url, busy) as bc, client(relay.url, quiet) as qc:
        await leader.open("stay alive")
        await leader.spawn("busy", busy.public_hex, "keeps beating", heartbeat_ms=900)
        await leader.spawn("quiet", quiet.public_hex, "goes silent", heartbeat_ms=900)
        leader.supervise(choose)
        with pytest.raises(RuntimeError):
            leader.supervise(choose)
        beating = TaskWorker(bc, feed, "busy")
        await beating.start_work()  # heartbeats every 300 ms from here on
        silent = TaskWorker(qc, feed, "quiet")
        await silent.start_work()
        await silent.close()  # stops beating
        st = await leader.wait_for(lambda s: s.subs["quiet"].assignee == spare.public_hex, 15)
        assert not st.subs["busy"].stalled and st.subs["busy"].assignee == busy.public_hex
        assert leader.escalations == [("quiet", quiet.public_hex, spare.public_hex)]
        assert choices == ["quiet"]
        await leader.cancel("busy")
        st = await leader.wait_for(lambda s: s.subs["busy"].status == "cancelled", 10)
        await beating.close()
