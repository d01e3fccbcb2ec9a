"""The faults of a chaos run, chosen from the seed: which fault, on what, for how long, and the
pause before the next one. Every fault is healed before :func:`inject` returns, so the run
always ends with everything up.

* ``kill``: SIGKILL a relay process (a site process or the federated relay) and start it
  again on the same data (its proxy follows the new port);
* ``redis_restart``: SIGKILL redis-server and start it again on its AOF (``appendfsync always``);
* ``pause_redis`` / ``pause_relay``: SIGSTOP for a while, then SIGCONT;
* ``cut``: cut a relay's proxied links (its clients and its federation links) for a while;
* ``cut_fed``: cut the federation link both ways for a while.
"""
from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.cluster import Cluster

KINDS = ("kill", "redis_restart", "pause_redis", "pause_relay", "cut", "cut_fed")
WEIGHTS = (3, 1, 2, 2, 3, 2)


@dataclass
class FaultLog:
    counts: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)

    def note(self, t0: float, kind: str, target: str, length: float) -> None:
        self.counts[kind] += 1
        self.timeline.append(f"{time.monotonic() - t0:7.2f}s {kind} {target} {length:.2f}s")


async def _hold(seconds: float) -> None:
    await asyncio.sleep(seconds)  # a fault's length, chosen by the seed (not a wait for a condition)


async def one(c: Cluster, rng: random.Random, log: FaultLog, t0: float, kind: str | None = None, *,
              only: str | None = None, avoid: str | None = None) -> None:
    kind = kind or rng.choices(KINDS, WEIGHTS)[0]
    node = rng.choice([n for n in c.nodes if n.name != avoid and only in (None, n.name)])
    length = rng.uniform(0.3, 3.0)
    if kind == "kill":
        log.note(t0, kind, node.name, 0)
        await node.kill_and_restart()
    elif kind == "redis_restart":
        log.note(t0, kind, "redis", 0)
        await c.redis_restart()
    elif kind == "pause_redis":
        log.note(t0, kind, "redis", length)
        c.redis_signal(signal.SIGSTOP)
        try:
            await _hold(length)
        finally:
            c.redis_signal(signal.SIGCONT)
    elif kind == "pause_relay":
        log.note(t0, kind, node.name, length)
        node.signal(signal.SIGSTOP)
        try:
            await _hold(length)
        finally:
            node.signal(signal.SIGCONT)
    else:
        proxies = c.fed_links if kind == "cut_fed" else [node.proxy]
        log.note(t0, kind, "fed link" if kind == "cut_fed" else node.name, length)
        for p in proxies:
            p.cut()
        try:
            await _hold(length)
        finally:
            for p in proxies:
                p.heal()


async def inject(c: Cluster, seed: int, seconds: float, log: FaultLog) -> None:
    """Faults one after another (sometimes two at once) for ``seconds``, then everything healed."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)  # every kind once first (in the seed's order), then at random
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await _hold(rng.uniform(0.2, 2.0))
        if first:
            await one(c, rng, log, t0, first.pop())
        elif rng.random() < 0.25:  # two faults overlapping: a process fault and a cut elsewhere
            sub = random.Random(rng.random())
            kind = rng.choice(("kill", "pause_relay"))
            target = rng.choice(c.nodes).name
            await asyncio.gather(one(c, rng, log, t0, kind, only=target), one(c, sub, log, t0, "cut", avoid=target))
        else:
            await one(c, rng, log, t0)
    for n in c.nodes:  # belt and braces: nothing stays stopped or cut
        n.signal(signal.SIGCONT)
        n.proxy.heal()
    for p in c.fed_links:
        p.heal()
    c.redis_signal(signal.SIGCONT)
