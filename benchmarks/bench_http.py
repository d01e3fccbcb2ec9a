#!/usr/bin/env python3
"""HTTP doors benchmark: publishing with ``POST`` and reading Server-Sent Events, beside the
same load over the native WebSocket, against one Colony relay, in the same invocation.

Two ways into the same relay (``colony serve`` on the embedded SQLite store, FULL sync):

* ``colony``: writers publish ``pub`` frames on ``/ws`` (one connection each, at most
  ``window`` unacknowledged), subscribers ``sub`` on ``/ws``;
* ``colony-http``: writers ``POST /feeds/{feed}/events`` (one request per event on a
  keep-alive pool, at most ``window`` in flight), subscribers read
  ``GET /feeds/{feed}/stream`` (SSE).

The events are generic ``bench.note`` events on ``bench/http`` (not Yjs updates: a doc update's
engine check would dominate the relay's CPU and hide what the door itself costs). Writers publish
at a fixed rate; subscribers time every delivery (``time.monotonic_ns``, matched by event id).

Reported per scenario and door: accepted events/s, deliveries/s, publish->deliver p50/p99,
relay CPU per accepted event (all the relay's CPU in the window divided by the events acked in
it: what one event costs, fan-out included) and per delivery, and the ratio http/ws:

* ``publish``: N=2 subscribers, K=10 writers at 50 events/s each (the writer's door dominates);
* ``deliver``: N=100 subscribers, K=2 writers at 10 events/s each (the reader's door dominates);
* ``mixed``: N=40 subscribers, K=10 writers at 10 events/s (the issue's "K writers, N readers").

Goals (issue 14): HTTP publish within 2x the ``/ws`` CPU per accepted event (``publish``), SSE
delivery within 1.5x the ``/ws`` CPU per delivery (``deliver``).

    python benchmarks/bench_http.py --quick              # CI smoke run, < 60 s
    python benchmarks/bench_http.py                      # full: three scenarios, 3 repeats each
    python benchmarks/bench_http.py --scenario deliver --repeat 5 --json out.json

See docs/benchmarks.md ("HTTP doors") for the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_doc import aggregate
from harness import COLONY, RESULTS_DIR, Scenario, ServerProc, fmt, machine, ratio, run_workload, wait_quiet
from harness.common import COLONY_HTTP

FEED = "bench/http"
DOORS = (COLONY, COLONY_HTTP)
FULL = {
    "publish": Scenario("publish", subscribers=2, writers=10, rate=50.0, window=64, duration=10.0, warmup=3.0,
                        feed=FEED),
    "deliver": Scenario("deliver", subscribers=100, writers=2, rate=10.0, window=64, duration=10.0, warmup=3.0,
                        feed=FEED),
    "mixed": Scenario("mixed", subscribers=40, writers=10, rate=10.0, window=64, duration=10.0, warmup=3.0,
                      feed=FEED),
}
QUICK = {
    "publish": Scenario("publish", subscribers=1, writers=4, rate=20.0, window=16, duration=2.0, warmup=0.5,
                        feed=FEED),
    "deliver": Scenario("deliver", subscribers=10, writers=1, rate=10.0, window=16, duration=2.0, warmup=0.5,
                        feed=FEED),
}


def run_one(door: str, sc: Scenario, workdir: Path, sub_procs: int) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProc(COLONY, workdir, name=door)
    server.start()
    try:
        result = run_workload(door, sc, None, [server], sub_procs=sub_procs)
    finally:
        rc = server.stop()
    result["system"] = door
    result["server"]["exit_code"] = rc
    acked = result["publish_per_s"]
    result["server"]["cpu_us_per_event"] = (result["server"]["cpu_cores"] * 1e6 / acked) if acked else None
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    agg = aggregate(runs)
    per_event = sorted(r["server"]["cpu_us_per_event"] for r in runs if r["server"]["cpu_us_per_event"])
    agg["server"]["cpu_us_per_event"] = per_event[len(per_event) // 2] if per_event else None
    return agg


def ratios(http: dict[str, Any], ws: dict[str, Any]) -> dict[str, float | None]:
    return {
        "cpu_us_per_event": ratio(http["server"]["cpu_us_per_event"], ws["server"]["cpu_us_per_event"]),
        "cpu_us_per_delivery": ratio(http["server"]["cpu_us_per_delivery"], ws["server"]["cpu_us_per_delivery"]),
        "latency_p50": ratio(http["latency_ms"]["p50"], ws["latency_ms"]["p50"]),
        "latency_p99": ratio(http["latency_ms"]["p99"], ws["latency_ms"]["p99"]),
    }


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ("scenario", "door", "N", "K", "acked/s", "deliv/s", "p50 ms", "p99 ms", "CPU µs/event",
            "CPU µs/dlv", "srv cores", "lost")
    rows = [head]
    for label, by in results.items():
        for door in DOORS:
            r = by.get(door)
            if r is None:
                continue
            p, s = r["params"], r["server"]
            rows.append((label, "http+sse" if door == COLONY_HTTP else "ws", str(p["subscribers"]), str(p["writers"]),
                         fmt(r["publish_per_s"], ".0f"), fmt(r["delivered_per_s"], ".0f"),
                         fmt(r["latency_ms"]["p50"], ".2f"), fmt(r["latency_ms"]["p99"], ".2f"),
                         fmt(s["cpu_us_per_event"], ".1f"), fmt(s["cpu_us_per_delivery"], ".1f"),
                         fmt(s["cpu_cores"], ".2f"), str(r["loss"]["missing_total"])))
        if len(by) == 2:
            q = ratios(by[COLONY_HTTP], by[COLONY])
            rows.append((label, "http/ws", "", "", "", "", fmt(q["latency_p50"], ".2f") + "x",
                         fmt(q["latency_p99"], ".2f") + "x", fmt(q["cpu_us_per_event"], ".2f") + "x",
                         fmt(q["cpu_us_per_delivery"], ".2f") + "x", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths,
                                                                                                 strict=True))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Colony: HTTP publish + SSE vs the WebSocket, same relay, same run")
    ap.add_argument("--quick", action="store_true", help="tiny CI smoke run (< 60 s)")
    ap.add_argument("--scenario", choices=["publish", "deliver", "mixed", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=None, help="runs per door and scenario (default 3 full, 1 quick)")
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each run wait up to this many s for the machine to be idle (default 120 full)")
    ap.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    base = QUICK if args.quick else FULL
    names = list(base) if args.scenario == "all" else [args.scenario]
    for n in names:
        if n not in base:
            ap.error(f"scenario {n!r} is not in the {'quick' if args.quick else 'full'} set")
    repeat = args.repeat or (1 if args.quick else 3)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 120.0)
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="colony-bench-http-") as tmp:
        for name in names:
            sc = base[name]
            runs: dict[str, list[dict[str, Any]]] = {d: [] for d in DOORS}
            for rep in range(repeat):
                for door in (DOORS if rep % 2 == 0 else DOORS[::-1]):  # alternate who goes first
                    print(f"[bench] {name} #{rep + 1}/{repeat}: {door} (N={sc.subscribers}, K={sc.writers}, "
                          f"{sc.rate:g}/s per writer, {sc.warmup:g}+{sc.duration:g} s)", flush=True)
                    if quiet_wait > 0:
                        wait_quiet(0.15, quiet_wait)
                    try:
                        r = run_one(door, sc, Path(tmp) / f"{name}-{door}-{rep}", args.sub_procs)
                    except Exception as exc:  # noqa: BLE001 - a failed run is reported; the next one goes on
                        failures.append(f"{name}/{door}#{rep + 1}: {exc}")
                        print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
                        continue
                    runs[door].append(r)
                    print(f"[bench]   {r['publish_per_s']:.0f} acked/s, {r['delivered_per_s']:.0f} deliveries/s, "
                          f"p99 {r['latency_ms']['p99']:.2f} ms, {fmt(r['server']['cpu_us_per_event'])} µs CPU/event, "
                          f"{fmt(r['server']['cpu_us_per_delivery'])} µs CPU/delivery, "
                          f"lost {r['loss']['missing_total']}", flush=True)
            results[name] = {d: summary(v) for d, v in runs.items() if v}
    out: dict[str, Any] = {
        "benchmark": "bench_http", "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1), "machine": machine(), "results": results,
        "ratios": {n: ratios(by[COLONY_HTTP], by[COLONY]) for n, by in results.items() if len(by) == 2},
        "failures": failures,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / time.strftime("bench_http-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(table(results))
    print(f"\n[bench] {out['elapsed_s']} s; results in {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
