"""One chaos run: start the parts, run the workload while faults are injected for ``seconds``,
heal, wait until everything has converged, check the invariants. ``python -m
tests.chaos.engine --minutes N [--seed S]`` (``scripts/chaos``) runs it from the shell."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos import faults, invariants
from tests.chaos.cluster import start_cluster
from tests.chaos.workload import STEP, Workload



def timer_pending(view: dict[str, object]) -> bool:
    """The relay still owes this auction an award or an expiry (a result waits on the requester)."""
    return view.get("status") == "open" or (view.get("status") == "awarded" and view.get("result") is None)


@dataclass
class Outcome:
    seed: int
    seconds: float
    violations: list[str]
    figures: dict[str, int]
    faults: faults.FaultLog
    steps: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0

    def report(self) -> str:
        lines = [f"chaos seed {self.seed}: {self.seconds:g} s of faults, {self.wall:.0f} s in all",
                 "faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.counts.items()))
                 + f" (total {sum(self.faults.counts.values())})",
                 "workload steps: " + ", ".join(f"{k} {v}" for k, v in sorted(self.steps.items())),
                 invariants.summary(self.figures)]
        if self.violations:
            lines += ["VIOLATIONS:", *(f"  {v}" for v in self.violations[:40]),
                      "fault timeline:", *(f"  {t}" for t in self.faults.timeline)]
        return "\n".join(lines)


async def quiet(w: Workload, http: httpx.AsyncClient) -> str | None:
    """None when every relay agrees and no auction has a timer left to fire."""
    differs = await invariants.converged(w, http)
    if differs:
        return f"{len(differs)} differences: " + "; ".join(differs[:12])
    for f in sorted(x for x in w.feeds if x.startswith("auction/")):
        r = await http.get(f"{w.cluster.site[0].url}/feeds/{f}")
        if r.status_code == 200 and timer_pending(r.json().get("state") or {}):
            return f"{f} still waits for a relay timer"
    return None


async def settle(w: Workload, timeout: float) -> None:
    await w.settle(timeout / 2)
    deadline = time.monotonic() + timeout
    last: str | None = "not checked yet"
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = await quiet(w, http)
                if last is None:
                    return
            await asyncio.sleep(0.2)  # polling other processes' state (no event to await)
    raise TimeoutError(f"the relays did not converge in {timeout:g} s: {last}")


async def run(seed: int, seconds: float, tmp: Path) -> Outcome:
    t0 = time.monotonic()
    log = faults.FaultLog()
    cluster = await start_cluster(tmp)
    w = Workload(cluster, seed, seconds)
    try:
        await w.start()
        ready = time.monotonic()
        stop = asyncio.Event()
        agents = asyncio.create_task(w.run(stop))
        try:
            await faults.inject(cluster, seed, seconds, log)
        finally:
            stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(agents), STEP + 10)
            if not agents.done():
                agents.cancel()
        faulted = time.monotonic()
        unsettled: list[str] = []
        try:
            await settle(w, 120)
        except TimeoutError as exc:
            unsettled = [str(exc)]
        bad, figures = await invariants.check(w)  # even unsettled: what was acked and lost
        bad = unsettled + bad
        print(f"chaos: setup {ready - t0:.1f} s, faults {faulted - ready:.1f} s, "
              f"settle and check {time.monotonic() - faulted:.1f} s", flush=True)
    finally:
        await w.close()
        await cluster.close()
    return Outcome(seed, seconds, bad, figures, log, dict(w.steps), time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    p.add_argument("--minutes", type=float, default=1.0, help="length of the fault phase")
    p.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2**31)
    logging.basicConfig(level=logging.CRITICAL)  # the SDK logs every reconnect; the report says what counts
    print(f"chaos: seed {seed}, {a.minutes:g} min of faults", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="colony-chaos-"))
    out = asyncio.run(run(seed, a.minutes * 60, tmp))
    print(out.report(), flush=True)
    if out.violations:
        print(f"the relays' logs and data are kept in {tmp}", flush=True)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
