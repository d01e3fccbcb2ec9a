"""An agent as its own process, for the lease tests: it campaigns for LEASE (priority, TTL) and
prints ``granted <epoch>`` when it holds it, then renews until killed. Modes:

* ``hold``: only that;
* ``write FEED``: also writes a fenced ``note`` to FEED every 50 ms, whether or not it still
  holds the lease (a naive deposed leader), printing ``wrote <n>`` and, once, ``refused <code>``;
* ``lead FEED SUB_A KEY_A SUB_B KEY_B``: opens the task FEED led through the lease, spawns two
  subtasks (heartbeat 1500 ms) and prints ``opened``.

URL may be several, comma-separated (the client fails over between them).

Usage: ``python -m tests.relay.coordination.lease_agent URL[,URL...] LEASE SEED_HEX PRIORITY TTL_MS MODE [ARGS]``.
"""
from __future__ import annotations

import asyncio
import sys

from collab.client import Client
from collab.errors import ColonyError
from collab.keys import Keypair
from collab.lease import Lease
from collab.tasks import TaskLeader


async def main(url: str, lease: str, seed: str, priority: int, ttl_ms: int, mode: str, args: list[str]) -> None:
    key = Keypair.from_seed(bytes.fromhex(seed))
    async with Client(url.split(","), key, backoff_base=0.02, backoff_max=0.2) as client:
        async with Lease(client, lease, priority=priority, ttl_ms=ttl_ms) as lead:
            print(f"granted {lead.epoch}", flush=True)
            if mode == "write":
                n, refused = 0, False
                while True:
                    try:
                        await client.publish(args[0], "note", lead.fenced({"n": n}))
                        print(f"wrote {n}", flush=True)
                    except ColonyError as exc:
                        if not refused:
                            print(f"refused {getattr(exc, 'code', '')}", flush=True)
                        refused = True
                    n += 1
                    await asyncio.sleep(0.05)  # the writer's own cadence
            if mode == "lead":
                feed, sub_a, key_a, sub_b, key_b = args
                leader = TaskLeader(client, feed, lease=lead)
                await leader.start()
                await leader.open("a tree led through a lease")
                await leader.spawn(sub_a, key_a, "part a", heartbeat_ms=1500)
                await leader.spawn(sub_b, key_b, "part b", heartbeat_ms=1500)
                print("opened", flush=True)
            await asyncio.Event().wait()  # renewing in the background until killed


if __name__ == "__main__":
    u, le, k, p, t, m = sys.argv[1:7]
    asyncio.run(main(u, le, k, int(p), int(t), m, sys.argv[7:]))
