"""A subagent as its own process, for the task-tree crash test: it takes subtask SUB of FEED,
resumes from the checkpoint if there is one, works STEPS steps (progress + checkpoint each),
prints ``checkpointed <n>`` after each, and after step STOP_AFTER just keeps heartbeating
until it is killed (the test SIGKILLs it there). Usage:
``python -m tests.relay.coordination.task_worker URL FEED SUB SEED_HEX STEPS STOP_AFTER``."""
from __future__ import annotations

import asyncio
import sys

from collab.client import Client
from collab.keys import Keypair
from collab.tasks import TaskWorker


async def main(url: str, feed: str, sub: str, seed: str, steps: int, stop_after: int) -> None:
    async with Client(url, Keypair.from_seed(bytes.fromhex(seed)), backoff_base=0.02, backoff_max=0.2) as client:
        worker = TaskWorker(client, feed, sub)
        resume = await worker.start_work()
        start = resume["step"] if resume else 0
        for step in range(start + 1, steps + 1):
            await worker.progress(step, steps, f"step {step}")
            await worker.checkpoint({"step": step, "partial": [f"part{i}" for i in range(1, step + 1)]})
            print(f"checkpointed {step}", flush=True)
            if step == stop_after:
                await asyncio.Event().wait()  # hang here, heartbeating, until killed
        await worker.done({"parts": steps})
        print("done", flush=True)


if __name__ == "__main__":
    u, f, s, k, n, stop = sys.argv[1:7]
    asyncio.run(main(u, f, s, k, int(n), int(stop)))
