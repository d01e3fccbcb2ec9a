#!/usr/bin/env python3
"""Doc fan-out benchmark: Colony vs pycrdt-websocket on one shared Yjs document.

K writers and N subscribers share ONE document. Each writer inserts a short unique marker
(``wKKnSSSSSSSS;``, 13 characters) into the Yjs ``Text`` root "text" of its own pycrdt
``Doc`` and publishes the resulting Yjs update, either at a fixed rate (scenario
``target``) or as fast as it can with at most ``window`` unacknowledged updates in flight
(scenario ``saturation``). Subscribers time every delivery with ``time.monotonic_ns``
(system-wide on Linux, so comparable across processes) and match it to the send time
of the same update:

* Colony: native protocol on ``/ws``; an update is a signed ``doc.update`` event, acked by
  ``{"t":"ok"}`` after the durable SQLite append; the marker is the event id (subscribers
  take it from the end of each ``rec`` frame with ``rfind``, no JSON parsing).
* pycrdt-websocket: y-protocol (sync step 1/2, then update messages); the marker is the
  inserted text, which appears verbatim in the Yjs update bytes (a regex over the raw
  message). The protocol has no ack: a writer counts its update as acked when the server
  echoes it back (the room broadcasts every update to every client, writers included).

Each server runs in its own subprocess; subscribers run in ``--sub-procs`` processes and the
writers in one more process, each with its own (uvloop) event loop. Server CPU
(utime+stime from ``/proc/<pid>/stat``, all threads) and RSS (``VmRSS``) are sampled at the
start and the end of the measured window, after a warm-up.

    python benchmarks/bench_doc.py --quick            # CI smoke test, both systems, < 60 s
    python benchmarks/bench_doc.py                    # full: target + saturation
    python benchmarks/bench_doc.py --scenario target --duration 20 --json out.json
    python benchmarks/bench_doc.py --scenario target --systems colony --profile

See docs/benchmarks.md for the numbers and how to read them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness package, when imported from elsewhere

from harness import (  # noqa: F401  -- shared with bench_scaleout.py; re-exported for old importers
    COLONY, COLONY_ARGS, FEED, HERE, MARK_RE, NS, PEER, RESULTS_DIR, ROOM, ROOT, SYSTEMS, Profiler, Scenario,
    ServerProc, fmt, lat_summary, machine, machine_cpu, now_ns, pct, proc_cpu_s, proc_rss_kb, ratio,
    run_workload, subscriber_proc, summarize_profile, thread_cpu_s, timeline, wait_quiet, writer_proc,
)
from harness import median as _median
import harness
from harness import ab

NOTE_FEED = "note/bench"  # --kind note: a generic feed (collab.namespaces.generic)

FULL = {
    "target": Scenario("target", subscribers=100, writers=10, rate=20.0, window=1000, duration=15.0, warmup=5.0),
    "saturation": Scenario("saturation", subscribers=20, writers=10, rate=None, window=4, duration=15.0, warmup=5.0),
}
QUICK = {
    "target": Scenario("target", subscribers=10, writers=2, rate=20.0, window=1000, duration=2.0, warmup=0.5),
    "saturation": Scenario("saturation", subscribers=5, writers=2, rate=None, window=4, duration=2.0, warmup=0.5),
}


def run_one(system: str, sc: Scenario, compression: str | None, args: argparse.Namespace,
            workdir: Path, code_dir: Path | None = None) -> dict[str, Any]:
    """One run of ``system``; the A/B baseline (``ab.BASELINE``) is Colony from ``code_dir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    kind = COLONY if system == ab.BASELINE else system
    diag = args.server_diag if system == COLONY else None
    server = ServerProc(kind, workdir, diag, name=system, code_dir=code_dir)
    server.start()
    try:
        prof = [RESULTS_DIR / f"profile-{system}-{sc.name}.txt"] if args.profile else None
        result = run_workload(kind, sc, compression, [server], sub_procs=args.sub_procs, profile_paths=prof)
    finally:
        rc = server.stop()
        if diag:
            shutil.copy(server.log_path, RESULTS_DIR / f"server-{system}-{sc.name}.log")
    result["system"] = system
    result["server"]["exit_code"] = rc
    result["server"]["code_dir"] = str(server.code_dir) if kind == COLONY else None
    return result


def per_event_cpu(r: dict[str, Any]) -> float | None:
    """Server CPU per accepted (published and acked) event in the measured window, in µs."""
    pub = r.get("publish_per_s")
    return r["server"]["cpu_cores"] * 1e6 / pub if pub else None


def ratios(colony: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    return {
        "delivered_per_s": ratio(colony["delivered_per_s"], peer["delivered_per_s"]),
        "latency_p50": ratio(colony["latency_ms"]["p50"], peer["latency_ms"]["p50"]),
        "latency_p99": ratio(colony["latency_ms"]["p99"], peer["latency_ms"]["p99"]),
        "cpu_us_per_delivery": ratio(colony["server"]["cpu_us_per_delivery"], peer["server"]["cpu_us_per_delivery"]),
        "rss_after": ratio(colony["server"]["rss_kb_after"], peer["server"]["rss_kb_after"]),
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each headline figure over the repeats; every run is kept under "runs"."""
    first = runs[0]

    def med(*path: str) -> Any:
        vals = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v[k]
            vals.append(v)
        return _median(vals)

    p99s = [r["latency_ms"]["p99"] for r in runs]
    cpus = [r["server"]["cpu_us_per_delivery"] for r in runs if r["server"]["cpu_us_per_delivery"] is not None]
    return {
        "system": first["system"], "scenario": first["scenario"], "params": first["params"],
        "repeats": len(runs),
        "publish_per_s": med("publish_per_s"),
        "delivered_per_s": med("delivered_per_s"),
        "latency_ms": {
            "p50": med("latency_ms", "p50"), "p90": med("latency_ms", "p90"), "p99": med("latency_ms", "p99"),
            "p99_min": min(p99s), "p99_max": max(p99s),
            "max": max(r["latency_ms"]["max"] for r in runs),
        },
        "ack_latency_ms": {"p50": med("ack_latency_ms", "p50"), "p99": med("ack_latency_ms", "p99")},
        "server": {
            "cpu_us_per_delivery": _median(cpus), "cpu_us_per_delivery_min": min(cpus, default=None),
            "cpu_us_per_delivery_max": max(cpus, default=None),
            "cpu_cores": med("server", "cpu_cores"),
            "main_thread_cores": _median([r["server"]["cpu_cores_by_thread"].get("main") for r in runs]),
            "rss_kb_before": med("server", "rss_kb_before"), "rss_kb_after": med("server", "rss_kb_after"),
        },
        "loadgen_cpu_cores": med("loadgen_cpu_cores"),
        "machine_busy_cores": med("machine", "busy_cores"),
        "machine_steal_cores": med("machine", "steal_cores"),
        "foreign_cores": med("foreign_cores"),
        "contaminated_runs": sum(1 for r in runs if r.get("contaminated")),
        "messages": {k: med("messages", k) for k in first["messages"]},
        "loss": {
            "ok": all(r["loss"]["ok"] for r in runs),
            "subscribers": first["loss"]["subscribers"],
            "missing_total": sum(r["loss"]["missing_total"] for r in runs),
            "duplicates_total": sum(r["loss"]["duplicates_total"] for r in runs),
            "unacked_total": sum(r["unacked"] for r in runs),
        },
        "runs": runs,
    }


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ("scenario", "system", "N", "K", "pub/s", "CPU µs/pub", "ack p99", "deliv/s", "p50 ms", "p99 ms",
            "p99 range", "CPU µs/dlv",
            "srv cores", "RSS MB", "box cores", "lost")
    rows = [head]
    for label, by_sys in results.items():
        for system in (*SYSTEMS, ab.BASELINE):
            r = by_sys.get(system)
            if r is None:
                continue
            p, lat = r["params"], r["latency_ms"]
            rows.append((
                label, system, str(p["subscribers"]), str(p["writers"]), fmt(r["publish_per_s"], ".0f"),
                fmt(per_event_cpu(r), ".1f"), fmt(r["ack_latency_ms"]["p99"], ".2f"),
                fmt(r["delivered_per_s"], ".0f"), fmt(lat["p50"], ".2f"), fmt(lat["p99"], ".2f"),
                f"{fmt(lat['p99_min'], '.0f')}-{fmt(lat['p99_max'], '.0f')}",
                fmt(r["server"]["cpu_us_per_delivery"], ".1f"), fmt(r["server"]["cpu_cores"], ".2f"),
                fmt(r["server"]["rss_kb_after"] / 1024, ".0f"), fmt(r["machine_busy_cores"], ".2f"),
                str(r["loss"]["missing_total"]),
            ))
        if COLONY in by_sys and PEER in by_sys:
            q = ratios(by_sys[COLONY], by_sys[PEER])
            rows.append((label, "colony/peer", "", "", "", "", "", fmt(q["delivered_per_s"], ".2f") + "x",
                         fmt(q["latency_p50"], ".2f") + "x", fmt(q["latency_p99"], ".2f") + "x", "",
                         fmt(q["cpu_us_per_delivery"], ".2f") + "x", "", fmt(q["rss_after"], ".2f") + "x", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(cells)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Colony vs pycrdt-websocket doc fan-out benchmark")
    ap.add_argument("--quick", action="store_true", help="tiny CI smoke run (both systems, < 60 s)")
    ap.add_argument("--scenario", choices=["target", "saturation", "all"], default="all")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per system and scenario; figures are medians (default: 3 full, 1 quick)")
    ap.add_argument("--compression", choices=["deflate", "none", "both"], default=None,
                    help="whether clients offer permessage-deflate (browsers and the websockets library do by "
                         "default; both servers accept it by default). Default: both (full), deflate (quick)")
    ap.add_argument("--subscribers", type=int, default=None, help="override N")
    ap.add_argument("--writers", type=int, default=None, help="override K")
    ap.add_argument("--rate", type=float, default=None, help="override edits/s per writer (target scenario)")
    ap.add_argument("--window", type=int, default=None, help="override in-flight window (saturation)")
    ap.add_argument("--kind", choices=["doc", "note"], default="doc",
                    help="what the writers publish: Yjs updates as doc.update events on doc/bench (default), or "
                         "generic bench.note events on note/bench (Colony only: a feed of no namespace of its own)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of: " + ", ".join(SYSTEMS))
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (default 2)")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the server during each measured window (skews its numbers a little)")
    ap.add_argument("--server-diag", choices=["lag", "cprofile", "no-deflate"], default=None,
                    help="run Colony through benchmarks/colony_diag_server.py: log event-loop stalls, slow "
                         "GCs, slow appends and snapshots (lag), cProfile it (cprofile), or turn off "
                         "permessage-deflate on the server side (no-deflate); the server log is copied "
                         "to benchmarks/results/")
    ap.add_argument("--max-foreign", type=float, default=None,
                    help="CPU cores of other work on the machine tolerated during a measured window; a run "
                         "above it is redone (default 0.15 full, off in quick mode)")
    ap.add_argument("--retries", type=int, default=None, help="redo a disturbed run this often (default 2 full)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each run wait up to this many s for the machine to be idle (default 300 full)")
    ap.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    ab.add_argument(ap)
    args = ap.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    systems = ab.with_baseline(systems, args.baseline_ref)
    base = QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.quick else 3)
    comp_mode = args.compression or ("deflate" if args.quick else "both")
    compressions = ["deflate", "none"] if comp_mode == "both" else [comp_mode]
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    max_foreign = args.max_foreign if args.max_foreign is not None else (0.0 if args.quick else 0.15)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 300.0)
    names = ["target", "saturation"] if args.scenario == "all" else [args.scenario]
    scenarios = harness.scenarios_from_args(base, names, args, ap)
    if args.kind == "note":
        if PEER in systems:
            ap.error("--kind note publishes Colony events: use --systems colony")
        scenarios = [replace(sc, feed=NOTE_FEED) for sc in scenarios]

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="colony-bench-") as tmp, contextlib.ExitStack() as stack:
        baseline = ab.open_baseline(stack, args.baseline_ref)
        code_dirs = ab.code_dirs(baseline)
        for sc in scenarios:
            for comp in compressions:
                label = f"{sc.name}/{comp}"
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
                for rep in range(repeat):
                    order = systems if rep % 2 == 0 else systems[::-1]  # alternate who goes first
                    for system in order:
                        workdir = Path(tmp) / f"{sc.name}-{comp}-{system}-{rep}"
                        workdir.mkdir()
                        print(f"[bench] {label} #{rep + 1}/{repeat}: {system} (N={sc.subscribers}, K={sc.writers}, "
                              f"{f'{sc.rate:g}/s' if sc.rate else f'window {sc.window}'} per writer, "
                              f"{sc.warmup:g}+{sc.duration:g} s)", flush=True)
                        r = None
                        for attempt in range(1 + retries):
                            if quiet_wait > 0:
                                wait_quiet(max_foreign, quiet_wait)
                            try:
                                cand = run_one(system, sc, None if comp == "none" else "deflate", args,
                                               workdir / f"try{attempt}", code_dirs.get(system))
                            except Exception as exc:  # noqa: BLE001 - a failed run is reported; the next one goes on
                                failures.append(f"{label}/{system}#{rep + 1}: {exc}")
                                print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
                                break
                            cand["contaminated"] = max_foreign > 0 and cand["foreign_cores"] > max_foreign
                            if r is None or cand["foreign_cores"] < r["foreign_cores"]:
                                r = cand
                            if not cand["contaminated"]:
                                break
                            print(f"[bench]   other work used {cand['foreign_cores']:.2f} cores during the window;"
                                  f" {'retrying' if attempt < retries else 'keeping the least disturbed run'}",
                                  flush=True)
                        if r is None:
                            continue
                        runs[system].append(r)
                        print(f"[bench]   {r['publish_per_s']:.0f} accepted/s "
                              f"({fmt(per_event_cpu(r))} µs relay CPU each, "
                              f"ack p99 {r['ack_latency_ms']['p99']:.2f} ms), "
                              f"{r['delivered_per_s']:.0f} deliveries/s, p50 {r['latency_ms']['p50']:.2f} ms,"
                              f" p99 {r['latency_ms']['p99']:.2f} ms, "
                              f"{fmt(r['server']['cpu_us_per_delivery'])} µs CPU/delivery, "
                              f"lost {r['loss']['missing_total']}, other work {r['foreign_cores']:.2f} cores",
                              flush=True)
                        if "profile_summary" in r:
                            print(r["profile_summary"], flush=True)
                results[label] = {s: aggregate(v) for s, v in runs.items() if v}

    out: dict[str, Any] = {
        "benchmark": "bench_doc",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine(),
        "results": results,
        "ratios": {lb: ratios(by[COLONY], by[PEER]) for lb, by in results.items() if COLONY in by and PEER in by},
        "baseline": ab.summary(results, ab.current_tree(), baseline) if baseline is not None else None,
        "failures": failures,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / time.strftime("bench_doc-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(table(results))
    if out["baseline"] is not None:
        print("\n".join(ab.report(out["baseline"])))
    print(f"\n[bench] {out['elapsed_s']} s; results in {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
