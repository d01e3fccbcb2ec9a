#!/usr/bin/env python3
"""Many agents per process (issue 17, item 4): N authenticated agent connections held by one
relay process, each subscribed to its own feed and to one shared feed.

For each system (this tree's relay, and with ``--baseline-ref`` the relay of another git ref,
interleaved) a fresh ``colony serve`` is started and:

1. a warm-up client process connects ``--warm`` agents (imports, first-connection caches, the
   shared feed loaded), then the relay's RSS is read once it stops moving (``before``);
2. ``--procs`` client processes (``benchmarks/harness/conns.py``: lean sans-I/O WebSocket
   clients, no task per connection) connect N more agents, at most ``--parallel`` handshakes
   in flight per process. Every agent does the real handshake: ``challenge``, a ``hello``
   signed with its own Ed25519 key, ``sub`` to ``note/own-<i>`` and to ``note/shared``, both
   answered by ``synced``. **Connect time** = from starting the processes until the last agent
   has both ``synced``; then the RSS once settled (``after``): **KiB per idle connection** =
   (after - before) / N (the agent's own feed loaded in the relay included);
3. a publisher (``collab.client.Client``) publishes ``--events`` signed events to the shared
   feed, one every ``--interval`` seconds. Every agent timestamps each shared record on
   receipt (``time.monotonic_ns``, system-wide); **fan-out latency** of an event = the last
   agent's receive time - the publisher's send time; p50/p99 over the events. The run checks
   that every agent received every event, in order, exactly once (else it fails); relay CPU
   per delivery over the fan-out phase is reported too.

    python benchmarks/bench_conns.py --quick                       # CI smoke: 300 agents, 20 events
    python benchmarks/bench_conns.py                               # 10,000 agents, 60 events
    python benchmarks/bench_conns.py --baseline-ref main --json out.json

The relay's per-address connection cap is lifted (all agents come from 127.0.0.1) and
``max_loaded_feeds`` raised (every agent's own feed stays loaded while it is subscribed); the
open-file limit is raised to its hard limit for the relay and the client processes.
docs/benchmarks.md ("Many agents per process") records the figures with the command.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import COLONY, ServerProc, machine, median, proc_rss_kb, ratio
from harness import ab
from harness.conns import SHARED_FEED, client_proc, raise_nofile
from harness.procs import proc_cpu_s

RELAY_ARGS = ["--max-connections-per-ip", "1000000", "--max-loaded-feeds", "1000000"]


def settled_rss(pid: int, seconds: float = 5.0) -> int:
    """The RSS once it stops moving (three equal readings 0.2 s apart, or after ``seconds``)."""
    end, last, same = time.monotonic() + seconds, -1, 0
    while time.monotonic() < end and same < 3:
        time.sleep(0.2)
        now = proc_rss_kb(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


def pct(vals: list[float], p: float) -> float:
    v = sorted(vals)
    return v[min(len(v) - 1, max(0, round(p / 100.0 * (len(v) - 1))))] if v else float("nan")


class Clients:
    """Client processes, each holding a share of the agents."""

    def __init__(self, port: int, indices: list[int], procs: int, parallel: int) -> None:
        ctx = mp.get_context("fork")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for k in range(procs):
            share = indices[k::procs]
            if not share:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(target=client_proc, args=(child, "127.0.0.1", port, share, parallel), daemon=True)
            self.pipes.append(parent)
            self.procs.append(p)

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def wait_connected(self, timeout: float) -> list[float]:
        took: list[float] = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError("a client process did not finish connecting in time")
            msg = pipe.recv()
            if msg[0] != "connected":
                raise RuntimeError(f"a client process failed to connect: {msg[1]}")
            took += msg[2]
        return took

    def report(self) -> list[tuple[Any, ...]]:
        for pipe in self.pipes:
            pipe.send(("report",))
        return [pipe.recv() for pipe in self.pipes]

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("close",))
        for pipe, p in zip(self.pipes, self.procs, strict=True):
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(10):
                    pipe.recv()
            p.join(10)
            if p.is_alive():
                p.kill()


async def _publish(port: int, events: int, interval: float) -> list[tuple[int, int]]:
    """Publish ``events`` to the shared feed, one every ``interval`` s: (seq, send time ns) each."""
    from collab.client import Client
    from collab.keys import Keypair

    sent: list[tuple[int, int]] = []
    async with Client(f"http://127.0.0.1:{port}", Keypair.generate(), reconnect=False) as client:
        start = time.monotonic()
        for n in range(events):
            t = time.monotonic_ns()
            ack = await client.publish(SHARED_FEED, "bench.note", {"n": n})
            sent.append((ack.seq, t))
            delay = start + (n + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the publishing pace (a load pattern, not a wait for the relay)
    return sent


def _collect(all_clients: list[Clients], seqs: list[int], agents: int, timeout: float) -> dict[str, Any]:
    """Poll the client processes until every agent has every event (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        reports = [r for c in all_clients for r in c.report()]
        count: dict[int, int] = {}
        last: dict[int, int] = {}
        errors: list[str] = []
        n_errors = closed = 0
        for _, cnt, lst, errs, nerr, ncl in reports:
            for s, k in cnt.items():
                count[s] = count.get(s, 0) + k
            for s, t in lst.items():
                last[s] = max(last.get(s, 0), t)
            errors += errs
            n_errors += nerr
            closed += ncl
        complete = all(count.get(s, 0) >= agents for s in seqs)
        if complete or n_errors or time.monotonic() > deadline:
            return {"count": count, "last": last, "errors": errors, "n_errors": n_errors, "closed": closed,
                    "complete": complete}
        time.sleep(0.2)  # no event reaches this process from the client processes: poll with a deadline


def run_one(system: str, workdir: Path, args: argparse.Namespace, code_dir: Path | None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProc(COLONY, workdir, name=system, extra_args=RELAY_ARGS, code_dir=code_dir)
    server.start()
    clients: list[Clients] = []
    try:
        pid = server.pid
        warm = Clients(server.port, list(range(args.warm)), 1, args.parallel)
        clients.append(warm)
        warm.start()
        warm.wait_connected(120)
        asyncio.run(_publish(server.port, 1, 0))  # the shared feed exists (seq 1) before the rest connect
        before = settled_rss(pid)
        n = args.connections
        main = Clients(server.port, list(range(args.warm, args.warm + n)), args.procs, args.parallel)
        clients.append(main)
        cpu0 = proc_cpu_s(pid)
        t0 = time.perf_counter()
        main.start()
        took = main.wait_connected(args.connect_timeout)
        connect_s = time.perf_counter() - t0
        connect_cpu = proc_cpu_s(pid) - cpu0
        after = settled_rss(pid)
        agents = args.warm + n
        cpu1 = proc_cpu_s(pid)
        sent = asyncio.run(_publish(server.port, args.events, args.interval))
        seqs = [s for s, _ in sent]
        got = _collect(clients, seqs, agents, timeout=60)
        fan_cpu = proc_cpu_s(pid) - cpu1
        rss_end = proc_rss_kb(pid)
        if got["n_errors"] or not got["complete"]:
            short = {s: got["count"].get(s, 0) for s in seqs if got["count"].get(s, 0) != agents}
            raise RuntimeError(f"{system}: delivery incomplete or wrong: {got['n_errors']} errors "
                               f"{got['errors'][:5]}; events short of {agents} agents: {dict(list(short.items())[:5])}")
        extra = {s: k for s, k in got["count"].items() if s in seqs and k != agents}
        if extra:
            raise RuntimeError(f"{system}: some events delivered more than once: {extra}")
        lat_ms = [(got["last"][s] - t) / 1e6 for s, t in sent]
        delivered = sum(got["count"][s] for s in seqs)
    finally:
        for c in clients:
            c.close()
        server.stop()
    return {
        "system": system, "connections": n, "warm": args.warm, "agents": agents,
        "rss_before_kb": before, "rss_after_kb": after, "rss_end_kb": rss_end,
        "kb_per_connection": (after - before) / n,
        "connect_s": connect_s, "connects_per_s": n / connect_s, "connect_cpu_s": connect_cpu,
        "handshake_ms": {"p50": pct(took, 50) * 1e3, "p99": pct(took, 99) * 1e3, "max": max(took) * 1e3},
        "events": len(sent), "deliveries": delivered,
        "fanout_ms": {"p50": pct(lat_ms, 50), "p99": pct(lat_ms, 99), "max": max(lat_ms)},
        "fanout_cpu_us_per_delivery": fan_cpu * 1e6 / (len(sent) * agents),
    }


def _agg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kb_per_connection": median([r["kb_per_connection"] for r in runs]),
        "connect_s": median([r["connect_s"] for r in runs]),
        "fanout_p50_ms": median([r["fanout_ms"]["p50"] for r in runs]),
        "fanout_p99_ms": median([r["fanout_ms"]["p99"] for r in runs]),
        "fanout_cpu_us_per_delivery": median([r["fanout_cpu_us_per_delivery"] for r in runs]),
    }


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 300 agents, 20 events, one run")
    ap.add_argument("--connections", type=int, default=None, help="agents measured (default 10000, quick 300)")
    ap.add_argument("--warm", type=int, default=20, help="agents connected before the 'before' RSS (default 20)")
    ap.add_argument("--procs", type=int, default=None, help="client processes (default 4, quick 2)")
    ap.add_argument("--parallel", type=int, default=64, help="handshakes in flight per client process")
    ap.add_argument("--events", type=int, default=None, help="shared-feed events published (default 60, quick 20)")
    ap.add_argument("--interval", type=float, default=None, help="seconds between them (default 0.5, quick 0.05)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per system (default 1)")
    ap.add_argument("--connect-timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, default=None)
    ab.add_argument(ap)
    args = ap.parse_args()
    args.connections = args.connections or (300 if args.quick else 10_000)
    args.procs = args.procs or (2 if args.quick else 4)
    args.events = args.events or (20 if args.quick else 60)
    args.interval = args.interval if args.interval is not None else (0.05 if args.quick else 0.5)
    repeat = args.repeat or 1
    nofile = raise_nofile()  # the relay inherits it
    systems = ab.with_baseline([COLONY], args.baseline_ref)
    results: dict[str, dict[str, Any]] = {}
    loads = {"before": load()}
    with contextlib.ExitStack() as stack:
        baseline = ab.open_baseline(stack, args.baseline_ref)
        code_dirs = ab.code_dirs(baseline)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-conns-")))
        for r in range(repeat):
            for system in systems if r % 2 == 0 else systems[::-1]:  # interleaved
                run = run_one(system, tmp / f"{system}-{r}", args, code_dirs.get(system))
                run["load"] = load()
                results.setdefault(system, {"runs": []})["runs"].append(run)
                print(f"[conns] {system} run {r + 1}: {run['connections']} agents connected in "
                      f"{run['connect_s']:.1f} s "
                      f"({run['connects_per_s']:.0f}/s, handshake p99 {run['handshake_ms']['p99']:.0f} ms); "
                      f"{run['kb_per_connection']:.1f} KiB per idle connection "
                      f"({run['rss_before_kb']} -> {run['rss_after_kb']} KiB); fan-out to {run['agents']}: "
                      f"p50 {run['fanout_ms']['p50']:.1f} ms, p99 {run['fanout_ms']['p99']:.1f} ms, "
                      f"{run['fanout_cpu_us_per_delivery']:.2f} µs relay CPU/delivery; load {run['load']}", flush=True)
    loads["after"] = load()
    for agg in results.values():
        agg.update(_agg(agg["runs"]))
    ratios: dict[str, float | None] = {}
    if ab.BASELINE in results:
        cur, base = results[COLONY], results[ab.BASELINE]
        ratios = {k: ratio(cur[k], base[k]) for k in ("kb_per_connection", "connect_s", "fanout_p50_ms",
                                                     "fanout_p99_ms", "fanout_cpu_us_per_delivery")}
    print(f"\nMany agents per process ({args.connections} agents + {args.warm} warm-up, {args.events} shared events; "
          f"RLIMIT_NOFILE {nofile}; load {loads['before']} -> {loads['after']}):")
    for system, agg in results.items():
        print(f"  {system:16s} {agg['kb_per_connection']:7.1f} KiB/idle connection, connect {agg['connect_s']:6.1f} s, "
              f"fan-out p50 {agg['fanout_p50_ms']:7.1f} ms p99 {agg['fanout_p99_ms']:7.1f} ms, "
              f"{agg['fanout_cpu_us_per_delivery']:.2f} µs CPU/delivery")
    for k, q in ratios.items():
        print(f"  ratio colony/baseline {k}: {q:.2f}x" if q is not None else f"  ratio {k}: n/a")
    if args.json:
        args.json.write_text(json.dumps({
            "mode": "quick" if args.quick else "full", "connections": args.connections, "warm": args.warm,
            "events": args.events, "interval": args.interval, "procs": args.procs, "nofile": nofile,
            "results": results, "ratios": ratios, "load": loads, "machine": machine(),
            "baseline": {"ref": baseline.ref, "commit": baseline.commit} if baseline is not None else None,
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
