#!/usr/bin/env python3
"""Scale-out benchmark: the doc workload of ``bench_doc.py`` against Colony deployments.

The same document workload (K writers publishing signed Yjs updates to one doc feed, or to D
doc feeds, N subscribers timing every delivery, see ``bench_doc.py``) against:

* ``sqlite-1``: one relay process on the embedded SQLite store (``--data DIR``, FULL sync);
* ``redis-1``:  one relay process on Redis;
* ``redis-2``:  two relay processes on one Redis (one site: same ``--redis-prefix``, same
  ``--relay-key``); subscribers and writers are split evenly over the two processes (client
  ``i`` connects to process ``i % 2``).

Every run gets a fresh private ``redis-server`` on a free port (never 6379) with
``appendonly yes`` and ``appendfsync always`` (the durability of SQLite's ``synchronous=FULL``:
an ack means the append is on disk); ``--everysec`` adds the same two Redis configurations with
``appendfsync everysec`` (may lose up to a second of acked events if the Redis host crashes),
labelled ``redis-1-everysec`` / ``redis-2-everysec``.

Reported per configuration and scenario: delivered records/s, publish->deliver p50/p99,
relay CPU per delivery (summed over the relay processes), redis-server's CPU separately, RSS,
and Redis round trips per published event (``GET /health`` ``storage.round_trips`` and
``storage.appends`` deltas over the measured window, summed over the processes), with ratios
to ``sqlite-1`` measured in the same invocation.

Scenarios: ``saturation`` (N=40, K=10, as fast as possible with at most 4 unacknowledged
updates per writer) and ``target`` (N=100, K=10, 20 updates/s each), both on one doc feed
(``doc/bench``, D=1); ``docs``: saturation-style on D=10 docs (N=40, K=10, window 4).
``all`` runs the three.

Several docs (``--scenario docs``, or ``--docs D`` with any scenario): writer ``k`` publishes to
``doc/bench-{k % D}`` and subscriber ``i`` subscribes to ``doc/bench-{i % D}`` (with D=1 the feed
is ``doc/bench`` as before, so old results stay comparable). The loss check is per doc: every
subscriber must receive exactly the updates published to its own doc, once each, and nothing of
another doc; deliveries/s is the sum over all subscribers. The routing in ``redis-2`` stays
client ``i`` -> process ``i % 2``, so with an EVEN D every doc's writers and subscribers sit on
one process (feed affinity, what a load balancer hashing the doc name would give: the processes
never race on a feed's head and never relay each other's records to their subscribers), while
with an ODD D every doc (given at least 2 writers or subscribers of it) has clients on both
processes (each doc contended as in ``saturation``, but spread over D heads). The run prints how
many docs span both processes.

    python benchmarks/bench_scaleout.py --quick            # CI smoke run, all three configurations, < 60 s
    python benchmarks/bench_scaleout.py                    # full: all three scenarios, 3 repeats
    python benchmarks/bench_scaleout.py --scenario docs    # full: D=10 docs only (feed affinity in redis-2)
    python benchmarks/bench_scaleout.py --scenario docs --docs 5   # D=5: every doc on both processes
    python benchmarks/bench_scaleout.py --scenario saturation --everysec --json out.json
    python benchmarks/bench_scaleout.py --scenario saturation --configs redis-2 --repeat 1 --profile

See docs/benchmarks.md ("Scale-out") for the numbers and how to read them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import (
    COLONY, RESULTS_DIR, ROOT, Scenario, ServerProc, fmt, machine, measure, median, ratio, run_workload,
)

sys.path.insert(0, str(ROOT))
from tests.redis_server import RedisServer

PREFIX = "bench"


@dataclass(frozen=True)
class Deployment:
    name: str
    backend: str  # "sqlite" | "redis"
    processes: int
    appendfsync: str = "always"
    extra: tuple[str, ...] = ()  # more `colony serve` arguments


CONFIGS = {
    "sqlite-1": Deployment("sqlite-1", "sqlite", 1),
    "redis-1": Deployment("redis-1", "redis", 1),
    "redis-2": Deployment("redis-2", "redis", 2),
    # the processes race on the head as before sequencing leases (relay.core.sequencer)
    "redis-2-race": Deployment("redis-2-race", "redis", 2, extra=("--sequencer-lease", "0")),
    "redis-1-everysec": Deployment("redis-1-everysec", "redis", 1, "everysec"),
    "redis-2-everysec": Deployment("redis-2-everysec", "redis", 2, "everysec"),
}
DEFAULT_CONFIGS = ("sqlite-1", "redis-1", "redis-2")
BASELINE = "sqlite-1"

FULL = {
    "saturation": Scenario("saturation", subscribers=40, writers=10, rate=None, window=4, duration=15.0, warmup=5.0),
    "target": Scenario("target", subscribers=100, writers=10, rate=20.0, window=1000, duration=15.0, warmup=5.0),
    # the saturation load spread over 10 docs: 1 writer and 4 subscribers per doc
    "docs": Scenario("docs", subscribers=40, writers=10, rate=None, window=4, duration=15.0, warmup=5.0, docs=10),
}
QUICK = {
    "saturation": Scenario("saturation", subscribers=6, writers=2, rate=None, window=4, duration=1.5, warmup=0.5),
    "target": Scenario("target", subscribers=6, writers=2, rate=20.0, window=1000, duration=1.5, warmup=0.5),
    # odd D: in redis-2 every doc has a subscriber on each process (its writer on one of them)
    "docs": Scenario("docs", subscribers=6, writers=3, rate=None, window=4, duration=1.5, warmup=0.5, docs=3),
}
SCENARIOS = ("saturation", "target", "docs")


def placement(sc: Scenario, processes: int) -> dict[str, int]:
    """How the docs' clients fall on the processes (client ``i`` -> process ``i % processes``):
    docs whose writers and subscribers all sit on one process vs docs spanning several."""
    spanning = 0
    for d in range(sc.docs):
        procs = {i % processes for i in range(sc.writers) if harness.doc_of(i, sc.docs) == d}
        procs |= {i % processes for i in range(sc.subscribers) if harness.doc_of(i, sc.docs) == d}
        spanning += len(procs) > 1
    return {"docs": sc.docs, "docs_on_one_process": sc.docs - spanning, "docs_spanning_processes": spanning}


def describe(sc: Scenario) -> str:
    load = f"{sc.rate:g}/s per writer" if sc.rate else f"as fast as possible, window {sc.window} per writer"
    out = f"N={sc.subscribers} subscribers, K={sc.writers} writers, D={sc.docs} doc{'s' if sc.docs > 1 else ''} "
    out += f"({harness.FEED})" if sc.docs == 1 else f"({harness.FEED}-0..{sc.docs - 1}, client i -> doc i % {sc.docs})"
    out += f", {load}, {sc.warmup:g} s warm-up + {sc.duration:g} s measured"
    if sc.docs > 1:
        pl = placement(sc, 2)
        out += (f"; redis-2: {pl['docs_on_one_process']} docs with all clients on one process (feed affinity), "
                f"{pl['docs_spanning_processes']} spanning both")
    return out


def start_redis(workdir: Path, appendfsync: str) -> RedisServer:
    srv = RedisServer.start(workdir / "redis", appendonly=True, extra=["--appendfsync", appendfsync])
    assert srv.port != 6379
    return srv


def run_config(dep: Deployment, sc: Scenario, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the deployment (fresh Redis and data), run the workload once, stop everything."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis: RedisServer | None = None
    servers: list[ServerProc] = []
    try:
        extra: list[str] = []
        if dep.backend == "redis":
            redis = start_redis(workdir, dep.appendfsync)
            from collab.keys import Keypair

            key = workdir / "site.key"
            Keypair.generate().save(key)
            extra = ["--redis", redis.url, "--redis-prefix", PREFIX, "--relay-key", str(key), *dep.extra]
        for i in range(dep.processes):
            s = ServerProc(COLONY, workdir, name=f"relay{i}", extra_args=extra)
            s.start()
            servers.append(s)

        def probe() -> dict[str, Any]:
            out = {}
            for s in servers:
                h = s.health()
                out[s.name] = {"storage": {k: h["storage"].get(k)
                                           for k in ("round_trips", "appends", "head_moved", "turn_waits")},
                               "bus_messages": h["bus"].get("messages")}
            return out

        prof = [RESULTS_DIR / f"profile-scaleout-{dep.name}-{sc.name}-{s.name}.txt" for s in servers] \
            if args.profile else None
        result = run_workload(COLONY, sc, None, servers, sub_procs=args.sub_procs, profile_paths=prof,
                              extra_pids={"redis": redis.proc.pid} if redis and redis.proc else None,
                              probe=probe if dep.backend == "redis" else None)
    finally:
        rcs = [s.stop() for s in servers]
        if redis is not None:
            redis.stop()
    result["server"]["exit_code"] = rcs[0] if len(rcs) == 1 else rcs
    result["deployment"] = {"name": dep.name, "backend": dep.backend, "processes": dep.processes,
                            "appendfsync": dep.appendfsync if dep.backend == "redis" else None}
    result["placement"] = placement(sc, dep.processes)
    result["redis_ops"] = redis_ops(result)
    return result


def redis_ops(r: dict[str, Any]) -> dict[str, Any] | None:
    """Redis round trips and appends (batches) during the window, per published event."""
    pr = r.get("probe")
    if not pr or "before" not in pr or "after" not in pr:
        return None
    b, a = pr["before"], pr["after"]
    rt = sum(a[n]["storage"]["round_trips"] - b[n]["storage"]["round_trips"] for n in a)
    rt -= len(a)  # the "after" probe's own PING (GET /health pings Redis; it counts itself)
    appends = sum(a[n]["storage"]["appends"] - b[n]["storage"]["appends"] for n in a)
    bus = sum((a[n]["bus_messages"] or 0) - (b[n]["bus_messages"] or 0) for n in a)
    moved = sum((a[n]["storage"]["head_moved"] or 0) - (b[n]["storage"]["head_moved"] or 0) for n in a)
    waits = sum((a[n]["storage"]["turn_waits"] or 0) - (b[n]["storage"]["turn_waits"] or 0) for n in a)
    pub = r["published_in_window"]
    return {
        "round_trips": rt, "appends": appends, "head_moved": moved, "turn_waits": waits, "bus_messages": bus,
        "published": pub,
        "round_trips_per_event": rt / pub if pub else None,
        "events_per_append": pub / appends if appends else None,
        "round_trips_per_append": rt / appends if appends else None,
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats; every run kept under "runs"."""
    first = runs[0]

    def med(f: Any) -> Any:
        return median([f(r) for r in runs])

    def ops(k: str) -> Any:
        return med(lambda r: (r["redis_ops"] or {}).get(k))

    has_redis = first["deployment"]["backend"] == "redis"
    return {
        "deployment": first["deployment"], "scenario": first["scenario"], "params": first["params"],
        "placement": first.get("placement"), "repeats": len(runs),
        "publish_per_s": med(lambda r: r["publish_per_s"]),
        "delivered_per_s": med(lambda r: r["delivered_per_s"]),
        "latency_ms": {
            "p50": med(lambda r: r["latency_ms"]["p50"]), "p99": med(lambda r: r["latency_ms"]["p99"]),
            "p99_min": min(r["latency_ms"]["p99"] for r in runs), "p99_max": max(r["latency_ms"]["p99"] for r in runs),
            "max": max(r["latency_ms"]["max"] for r in runs),
        },
        "ack_latency_ms": {"p50": med(lambda r: r["ack_latency_ms"]["p50"]),
                           "p99": med(lambda r: r["ack_latency_ms"]["p99"])},
        "relay": {
            "cpu_us_per_delivery": med(lambda r: r["server"]["cpu_us_per_delivery"]),
            "cpu_cores": med(lambda r: r["server"]["cpu_cores"]),
            "main_thread_cores": med(lambda r: r["server"]["cpu_cores_by_thread"].get("main")),
            "rss_kb_after": med(lambda r: r["server"]["rss_kb_after"]),
            "per_process_cores": [med(lambda r, i=i: r["servers"][i]["cpu_cores"])
                                  for i in range(first["deployment"]["processes"])] if "servers" in first else None,
        },
        "redis": {
            "cpu_cores": med(lambda r: r["extra"]["redis"]["cpu_cores"]),
            "cpu_us_per_delivery": med(lambda r: r["extra"]["redis"]["cpu_us_per_delivery"]),
            "rss_kb_after": med(lambda r: r["extra"]["redis"]["rss_kb_after"]),
            "round_trips_per_event": ops("round_trips_per_event"),
            "events_per_append": ops("events_per_append"),
            "round_trips_per_append": ops("round_trips_per_append"),
        } if has_redis else None,
        "loadgen_cpu_cores": med(lambda r: r["loadgen_cpu_cores"]),
        "machine_busy_cores": med(lambda r: r["machine"]["busy_cores"]),
        "foreign_cores": med(lambda r: r["foreign_cores"]),
        "contaminated_runs": sum(1 for r in runs if r.get("contaminated")),
        "loss": {
            "ok": all(r["loss"]["ok"] for r in runs),
            "subscribers": first["loss"]["subscribers"],
            "missing_total": sum(r["loss"]["missing_total"] for r in runs),
            "duplicates_total": sum(r["loss"]["duplicates_total"] for r in runs),
            "unexpected_total": sum(r["loss"]["unexpected_total"] for r in runs),
            "unacked_total": sum(r["unacked"] for r in runs),
        },
        "runs": runs,
    }


def vs_baseline(agg: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    return {
        "delivered_per_s": ratio(agg["delivered_per_s"], base["delivered_per_s"]),
        "latency_p50": ratio(agg["latency_ms"]["p50"], base["latency_ms"]["p50"]),
        "latency_p99": ratio(agg["latency_ms"]["p99"], base["latency_ms"]["p99"]),
        "relay_cpu_us_per_delivery": ratio(agg["relay"]["cpu_us_per_delivery"], base["relay"]["cpu_us_per_delivery"]),
        "total_cpu_us_per_delivery": ratio(
            agg["relay"]["cpu_us_per_delivery"] + ((agg["redis"] or {}).get("cpu_us_per_delivery") or 0.0),
            base["relay"]["cpu_us_per_delivery"]) if agg["relay"]["cpu_us_per_delivery"] is not None else None,
    }


def table(results: dict[str, dict[str, dict[str, Any]]], ratios: dict[str, dict[str, Any]]) -> str:
    head = ("scenario", "config", "N", "K", "D", "pub/s", "deliv/s", "x sqlite", "p50 ms", "p99 ms", "p99 range",
            "relay µs/dlv", "relay cores", "redis µs/dlv", "redis cores", "RTT/event", "ev/append",
            "relay RSS MB", "redis RSS MB", "lost", "dup", "disturbed")
    rows = [head]
    for scen, by_cfg in results.items():
        for cfg, r in by_cfg.items():
            p, lat, rd = r["params"], r["latency_ms"], r["redis"] or {}
            q = ratios.get(scen, {}).get(cfg, {})
            rows.append((
                scen, cfg, str(p["subscribers"]), str(p["writers"]), str(p.get("docs", 1)),
                fmt(r["publish_per_s"], ".0f"),
                fmt(r["delivered_per_s"], ".0f"), fmt(q.get("delivered_per_s"), ".2f"),
                fmt(lat["p50"], ".2f"), fmt(lat["p99"], ".2f"),
                f"{fmt(lat['p99_min'], '.0f')}-{fmt(lat['p99_max'], '.0f')}",
                fmt(r["relay"]["cpu_us_per_delivery"], ".1f"), fmt(r["relay"]["cpu_cores"], ".2f"),
                fmt(rd.get("cpu_us_per_delivery"), ".1f"), fmt(rd.get("cpu_cores"), ".2f"),
                fmt(rd.get("round_trips_per_event"), ".3f"), fmt(rd.get("events_per_append"), ".1f"),
                fmt(r["relay"]["rss_kb_after"] / 1024, ".0f"),
                fmt(rd["rss_kb_after"] / 1024 if rd.get("rss_kb_after") else None, ".0f"),
                str(r["loss"]["missing_total"]),
                str(r["loss"]["duplicates_total"] + r["loss"].get("unexpected_total", 0)),
                f"{r['contaminated_runs']}/{r['repeats']}",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        cells = enumerate(zip(r, widths, strict=True))
        out.append("  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdicts(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The two scale-out targets, on the throughput scenarios (``saturation``: one doc; ``docs``:
    several docs; the target text names the scenario and its D when it is not ``saturation``)."""
    out = []
    for scen in ("saturation", "docs"):
        by = results.get(scen, {})
        if not by:
            continue
        d = next(iter(by.values()))["params"].get("docs", 1)
        tag = "" if scen == "saturation" and d == 1 else f" [{scen}, D={d}]"
        for fsync in ("", "-everysec"):
            r1, r2 = by.get("redis-1" + fsync), by.get("redis-2" + fsync)
            base = by.get(BASELINE)
            if r1 and base:
                q = ratio(r1["delivered_per_s"], base["delivered_per_s"])
                out.append({"scenario": scen, "target": f"redis-1{fsync} delivered/s >= 0.70 x sqlite-1{tag}",
                            "ratio": q, "met": q is not None and q >= 0.70})
            if r1 and r2:
                q = ratio(r2["delivered_per_s"], r1["delivered_per_s"])
                out.append({"scenario": scen, "target": f"redis-2{fsync} delivered/s > redis-1{fsync}{tag}",
                            "ratio": q, "met": q is not None and q > 1.0})
                if scen == "saturation" and d == 1:  # issue 17 item 2: one hot document, one sequencer
                    q = ratio(r2["delivered_per_s"], r1["delivered_per_s"])
                    out.append({"scenario": scen, "target": f"redis-2{fsync} delivered/s >= 0.95 x redis-1{fsync}",
                                "ratio": q, "met": q is not None and q >= 0.95})
                    q = ratio(r2["relay"]["cpu_us_per_delivery"], r1["relay"]["cpu_us_per_delivery"])
                    what = f"redis-2{fsync} relay CPU/delivery <= 1.15 x redis-1{fsync}"
                    out.append({"scenario": scen, "target": what, "ratio": q, "met": q is not None and q <= 1.15})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Colony scale-out benchmark: SQLite vs Redis, 1 vs 2 processes")
    ap.add_argument("--quick", action="store_true", help="tiny CI smoke run (all three configurations, < 60 s)")
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all",
                    help="saturation, target (one doc), docs (D docs, saturation-style) or all three")
    ap.add_argument("--configs", default=None,
                    help="comma list of: " + ", ".join(CONFIGS) + f" (default: {', '.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--everysec", action="store_true",
                    help="also run redis-1 and redis-2 with appendfsync everysec (labelled *-everysec)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring")
    ap.add_argument("--repeat", type=int, default=None, help="runs per configuration (default: 3 full, 1 quick)")
    ap.add_argument("--subscribers", type=int, default=None, help="override N")
    ap.add_argument("--writers", type=int, default=None, help="override K")
    ap.add_argument("--window", type=int, default=None, help="override the in-flight window (saturation)")
    ap.add_argument("--rate", type=float, default=None, help="override edits/s per writer (target)")
    ap.add_argument("--docs", type=int, default=None,
                    help="override D, the number of doc feeds: writer k -> doc/bench-{k %% D}, subscriber i -> "
                         "doc/bench-{i %% D} (default: 1, docs scenario 10 (3 quick)); applies to every scenario run")
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (default 2)")
    ap.add_argument("--profile", action="store_true", help="py-spy every relay process during each window")
    ap.add_argument("--max-foreign", type=float, default=None,
                    help="cores of other work tolerated in a window before a run is redone (default 0.15 full, "
                         "off quick)")
    ap.add_argument("--retries", type=int, default=None, help="redo a disturbed run this often (default 2 full)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each run wait up to this many s for an idle machine (default 120 full)")
    ap.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (apt-get install redis-server)")
    configs = [c.strip() for c in (args.configs or ",".join(DEFAULT_CONFIGS)).split(",") if c.strip()]
    if args.everysec:
        configs += [c for c in ("redis-1-everysec", "redis-2-everysec") if c not in configs]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}")
    base = QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.quick else 3)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    max_foreign = args.max_foreign if args.max_foreign is not None else (0.0 if args.quick else 0.15)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 120.0)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    scenarios = harness.scenarios_from_args(base, names, args, ap)
    for sc in scenarios:
        print(f"[scaleout] scenario {sc.name}: {describe(sc)}", flush=True)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="colony-scaleout-") as tmp:
        for sc in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
            for rep in range(repeat):
                order = configs[rep % len(configs):] + configs[:rep % len(configs)]  # rotate who goes first
                for cfg in order:
                    dep = CONFIGS[cfg]
                    print(f"[scaleout] {sc.name} #{rep + 1}/{repeat}: {cfg} (N={sc.subscribers}, K={sc.writers}, "
                          f"D={sc.docs}, "
                          f"{f'{sc.rate:g}/s' if sc.rate else f'window {sc.window}'} per writer, "
                          f"{sc.warmup:g}+{sc.duration:g} s)", flush=True)
                    workdir = Path(tmp) / f"{sc.name}-{cfg}-{rep}"
                    try:
                        r = measure(lambda attempt, dep=dep, sc=sc, workdir=workdir: run_config(
                            dep, sc, args, workdir / f"try{attempt}"), retries, max_foreign, quiet_wait)
                    except Exception as exc:  # noqa: BLE001 - a failed run is reported; the next one goes on
                        failures.append(f"{sc.name}/{cfg}#{rep + 1}: {exc!r}")
                        print(f"[scaleout] FAILED: {exc!r}", file=sys.stderr, flush=True)
                        continue
                    runs[cfg].append(r)
                    ops = r["redis_ops"] or {}
                    print(f"[scaleout]   {r['delivered_per_s']:.0f} deliveries/s ({r['publish_per_s']:.0f} updates/s), "
                          f"p50 {r['latency_ms']['p50']:.2f} ms, p99 {r['latency_ms']['p99']:.2f} ms, relay "
                          f"{fmt(r['server']['cpu_us_per_delivery'])} µs CPU/delivery"
                          + (f", redis {fmt(r['extra']['redis']['cpu_us_per_delivery'])} µs, "
                             f"{fmt(ops.get('round_trips_per_event'), '.3f')} round trips/event"
                             if "extra" in r else "")
                          + f", lost {r['loss']['missing_total']}, dup {r['loss']['duplicates_total']}"
                          + (f", other-doc {r['loss']['unexpected_total']}" if sc.docs > 1 else "")
                          + f", other work {r['foreign_cores']:.2f} cores", flush=True)
                    if sc.docs > 1:
                        pd = r["loss"]["per_doc"]
                        print("[scaleout]   per doc deliveries/s: " + ", ".join(
                            f"{x['doc']}: {x['delivered_per_s']:.0f}"
                            + ("" if x["missing"] == x["duplicates"] == x["unexpected"] == 0 else
                               f" (LOST {x['missing']}, dup {x['duplicates']}, other-doc {x['unexpected']})")
                            for x in pd), flush=True)
                    if "profile_summary" in r:
                        print(r["profile_summary"], flush=True)
            results[sc.name] = {c: aggregate(v) for c, v in runs.items() if v}

    ratios = {scen: {c: vs_baseline(a, by[BASELINE]) for c, a in by.items()}
              for scen, by in results.items() if BASELINE in by}
    out = {
        "benchmark": "bench_scaleout",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {**machine(("redis",)), "redis_server": _redis_version()},
        "configs": {c: CONFIGS[c].__dict__ for c in configs},
        "results": results,
        "ratios_vs_sqlite_1": ratios,
        "verdicts": verdicts(results),
        "failures": failures,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / time.strftime("bench_scaleout-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(table(results, ratios))
    for v in out["verdicts"]:
        print(f"[scaleout] target: {v['target']}: {fmt(v['ratio'], '.2f')}x -> {'met' if v['met'] else 'MISSED'}")
    print(f"\n[scaleout] {out['elapsed_s']} s; results in {path}")
    return 1 if failures else 0


def _redis_version() -> str | None:
    import subprocess

    try:
        return subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
