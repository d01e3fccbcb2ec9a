#!/usr/bin/env python3
"""Yjs endpoint benchmark: Colony's ``/yjs/{name}`` vs pycrdt-websocket vs the reference Node
server (``@y/websocket-server`` 0.1.1 with yjs 13.6.33) vs Hocuspocus (``@hocuspocus/server``
4.7.0, same yjs), all driven by the same y-protocols clients in the same run (for Hocuspocus
with its own framing: the document's name before every message and an auth message first, see
``harness/yframe.py``).

N subscribers and W writers share ONE document ("bench"). Every client speaks y-websocket's
protocol (sync step 1 on connect, answer the server's step 1 with step 2, then update
messages); nobody uses a Colony-specific feature except that Colony's writers put a write
capability in the URL (``/yjs/bench?token=...``; subscribers connect read-only). Each writer
inserts a unique 13-character marker (``wKKnSSSSSSSS;``) at the end of the Y.Text "text" of its
own pycrdt ``Doc`` and sends the update, either at a fixed rate (``target``) or as fast as a
small window of unechoed updates allows (``saturation``). The servers echo every update to
every client, the writer included: the echo is the writer's "ack". Subscribers search the
raw bytes of every received update message for markers (a merged update still contains the
inserted strings verbatim) and time each one with ``time.monotonic_ns`` against its send time.

The load generators (``harness/load.py``: subscriber processes + one writer process, each an
uvloop event loop with the ``websockets`` client) are the ones of ``bench_doc.py``'s
pycrdt-websocket path; every server runs in its own subprocess and is sampled through
``/proc`` (CPU utime+stime, VmRSS) at the start and end of the measured window.

Note what differs between the systems: Colony records every edit durably (a signed
``doc.update`` event appended to SQLite) before broadcasting it, and merges the updates of one
event-loop turn into one message; pycrdt-websocket and the Node server keep the document in
memory only; the Node reference server broadcasts every update as its own message, while
pycrdt-websocket and Hocuspocus (``flushDelay`` 0) merge the updates of one event-loop turn.

    python benchmarks/bench_yjs.py --quick       # CI smoke test, all four systems, < 60 s
    python benchmarks/bench_yjs.py               # full: target (N=100, W=10 x 20/s) + saturation (N=20)
    python benchmarks/bench_yjs.py --scenario saturation --systems colony,node --repeat 1

The Node servers live in benchmarks/node (package.json + package-lock.json, launchers
yws_server.mjs and hp_server.mjs); ``npm ci`` is run there when a package is missing.
See docs/benchmarks.md ("Yjs endpoint") for numbers and how to read them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from bench_doc import aggregate
from harness import ab
from harness.yframe import HOCUSPOCUS
from harness import (
    COLONY,
    HERE,
    PEER,
    RESULTS_DIR,
    Scenario,
    ServerProc,
    fmt,
    machine,
    median,
    ratio,
    run_workload,
    wait_quiet,
)

NODE = "node-y-websocket"
SYSTEMS = (COLONY, PEER, NODE, HOCUSPOCUS)
PEERS = (PEER, NODE, HOCUSPOCUS)
DOC = "bench"
NODE_DIR = HERE / "node"

FULL = {
    "target": Scenario("target", subscribers=100, writers=10, rate=20.0, window=1000, duration=15.0, warmup=5.0),
    "saturation": Scenario("saturation", subscribers=20, writers=10, rate=None, window=4, duration=15.0, warmup=5.0),
}
QUICK = {
    "target": Scenario("target", subscribers=10, writers=2, rate=20.0, window=1000, duration=2.0, warmup=0.5),
    "saturation": Scenario("saturation", subscribers=5, writers=2, rate=None, window=4, duration=2.0, warmup=0.5),
}


# ---------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------
class ColonyYjs(ServerProc):
    """``colony serve`` (same limits as bench_doc); clients use ``/yjs/bench``. ``setup``
    creates feed doc/bench (a feed.policy by an owner key, like ``colony grant``) and issues the
    owner's write capability that writers put in their URL."""

    token = ""

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/yjs/{DOC}"

    def writer_url(self) -> str:
        return f"{self.url()}?token={self.token}"

    def setup(self) -> None:
        from collab.capability import Capability
        from collab.client import Client
        from collab.keys import Keypair

        owner = Keypair.generate()

        async def create() -> None:
            async with Client(f"http://127.0.0.1:{self.port}", owner, reconnect=False) as client:
                await client.publish(f"doc/{DOC}", "feed.policy", {"policy": "signed"})

        asyncio.run(create())
        self.token = Capability.issue(owner, f"doc/{DOC}", write=True, ttl_ms=24 * 3_600_000).token()


class PycrdtWs(ServerProc):
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/{DOC}"


class NodeYws(ServerProc):
    """``node benchmarks/node/yws_server.mjs``: @y/websocket-server's setupWSConnection, in memory."""

    def command(self) -> list[str]:
        return ["node", str(NODE_DIR / "yws_server.mjs"), "127.0.0.1", "0"]

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/{DOC}"


class Hocuspocus(ServerProc):
    """``node benchmarks/node/hp_server.mjs``: @hocuspocus/server's Server, in memory, no extensions."""

    def command(self) -> list[str]:
        return ["node", str(NODE_DIR / "hp_server.mjs"), "127.0.0.1", "0"]

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/{DOC}"  # clients name the document in every message


def ensure_node() -> None:
    if shutil.which("node") is None:
        raise RuntimeError("the Node servers need node (v20+) on PATH")
    modules = NODE_DIR / "node_modules"
    if not all((modules / p / "package.json").exists() for p in ("@y/websocket-server", "@hocuspocus/server")):
        print("[bench] npm ci in benchmarks/node", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)


def make_server(system: str, workdir: Path, code_dir: Path | None = None) -> ServerProc:
    if system in (COLONY, ab.BASELINE):  # the A/B baseline: Colony from code_dir
        return ColonyYjs(COLONY, workdir, name=system, code_dir=code_dir)
    if system == PEER:
        return PycrdtWs(PEER, workdir)
    if system == HOCUSPOCUS:
        return Hocuspocus(HOCUSPOCUS, workdir)
    return NodeYws(NODE, workdir)


def run_one(system: str, sc: Scenario, compression: str | None, sub_procs: int, workdir: Path,
            code_dir: Path | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = make_server(system, workdir, code_dir)
    server.start()
    try:
        wurl = None
        if isinstance(server, ColonyYjs):
            server.setup()
            wurl = server.writer_url()
        # every system is driven through the harness's y-protocol client path (PEER; Hocuspocus's framing)
        r = run_workload(HOCUSPOCUS if system == HOCUSPOCUS else PEER, sc, compression, [server],
                         sub_procs=sub_procs, writer_url=wurl)
    finally:
        rc = server.stop()
    r["system"] = system
    r["server"]["exit_code"] = rc
    r["server"]["code_dir"] = str(server.code_dir) if isinstance(server, ColonyYjs) else None
    m = r["messages"]
    # WebSocket messages delivered to subscribers per s, estimated from the run's ratio of
    # messages to marker deliveries (the harness counts messages over the whole run)
    per = m["subscriber_ws_messages"] / m["subscriber_deliveries"] if m["subscriber_deliveries"] else None
    r["ws_messages_per_s"] = r["delivered_per_s"] * per if per is not None else None
    r["markers_per_message"] = (1 / per) if per else None
    return r


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def agg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    a = aggregate(runs)
    a["system"] = runs[0]["system"]
    a["ws_messages_per_s"] = median([r["ws_messages_per_s"] for r in runs])
    return a


def ratios(c: dict[str, Any], p: dict[str, Any]) -> dict[str, float | None]:
    return {
        "delivered_per_s": ratio(c["delivered_per_s"], p["delivered_per_s"]),
        "ws_messages_per_s": ratio(c["ws_messages_per_s"], p["ws_messages_per_s"]),
        "latency_p50": ratio(c["latency_ms"]["p50"], p["latency_ms"]["p50"]),
        "latency_p99": ratio(c["latency_ms"]["p99"], p["latency_ms"]["p99"]),
        "cpu_us_per_delivery": ratio(c["server"]["cpu_us_per_delivery"], p["server"]["cpu_us_per_delivery"]),
        "rss_after": ratio(c["server"]["rss_kb_after"], p["server"]["rss_kb_after"]),
    }


def verdicts(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = results.get("target", {})
    if COLONY in t and NODE in t:
        q = ratios(t[COLONY], t[NODE])
        out["target: Colony p99 within 2x of Node"] = {
            "ratio": q["latency_p99"], "met": q["latency_p99"] is not None and q["latency_p99"] <= 2.0}
        out["target: Colony CPU/delivered update within 2x of Node"] = {
            "ratio": q["cpu_us_per_delivery"],
            "met": q["cpu_us_per_delivery"] is not None and q["cpu_us_per_delivery"] <= 2.0}
    s = results.get("saturation", {})
    if COLONY in s and NODE in s:
        q = ratios(s[COLONY], s[NODE])
        out["saturation: Colony delivered/s >= Node"] = {
            "ratio": q["delivered_per_s"], "met": q["delivered_per_s"] is not None and q["delivered_per_s"] >= 1.0}
        p99 = s[COLONY]["latency_ms"]["p99"]
        out["saturation: Colony p99 <= 50 ms"] = {"p99_ms": p99, "met": p99 is not None and p99 <= 50.0}
    # issue 17: at the target load on par with Hocuspocus, without giving anything up at saturation
    if COLONY in t and HOCUSPOCUS in t:
        q = ratios(t[COLONY], t[HOCUSPOCUS])
        for key, what in (("cpu_us_per_delivery", "CPU/delivered update"), ("latency_p99", "p99")):
            out[f"target: Colony {what} <= Hocuspocus's"] = {
                "ratio": q[key], "met": q[key] is not None and q[key] <= 1.0}
    if COLONY in s and HOCUSPOCUS in s:
        q = ratios(s[COLONY], s[HOCUSPOCUS])
        out["saturation: Colony delivered/s >= Hocuspocus's"] = {
            "ratio": q["delivered_per_s"], "met": q["delivered_per_s"] is not None and q["delivered_per_s"] >= 1.0}
    return out


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ("scenario", "system", "N", "W", "pub/s", "deliv/s", "ws msg/s", "p50 ms", "p99 ms", "CPU µs/dlv",
            "srv cores", "RSS MB", "box cores", "lost")
    rows = [head]
    for label, by in results.items():
        for system in (*SYSTEMS, ab.BASELINE):
            r = by.get(system)
            if r is None:
                continue
            p, lat = r["params"], r["latency_ms"]
            rows.append((label, system, str(p["subscribers"]), str(p["writers"]), fmt(r["publish_per_s"], ".0f"),
                         fmt(r["delivered_per_s"], ".0f"), fmt(r["ws_messages_per_s"], ".0f"),
                         fmt(lat["p50"], ".2f"), fmt(lat["p99"], ".2f"), fmt(r["server"]["cpu_us_per_delivery"], ".1f"),
                         fmt(r["server"]["cpu_cores"], ".2f"), fmt(r["server"]["rss_kb_after"] / 1024, ".0f"),
                         fmt(r["machine_busy_cores"], ".2f"), str(r["loss"]["missing_total"])))
        for peer in PEERS:
            if COLONY in by and peer in by:
                q = ratios(by[COLONY], by[peer])
                def x(v):
                    return fmt(v, ".2f") + "x"
                rows.append((label, f"colony/{peer}", "", "", "", x(q["delivered_per_s"]), x(q["ws_messages_per_s"]),
                             x(q["latency_p50"]), x(q["latency_p99"]), x(q["cpu_us_per_delivery"]), "",
                             x(q["rss_after"]), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(cells)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Colony /yjs vs pycrdt-websocket vs @y/websocket-server")
    ap.add_argument("--quick", action="store_true", help="tiny CI smoke run (all systems, < 60 s)")
    ap.add_argument("--scenario", choices=["target", "saturation", "all"], default="all")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring")
    ap.add_argument("--repeat", type=int, default=None, help="runs per system and scenario (default 3 full, 1 quick)")
    ap.add_argument("--subscribers", type=int, default=None, help="override N")
    ap.add_argument("--writers", type=int, default=None, help="override W")
    ap.add_argument("--rate", type=float, default=None, help="override inserts/s per writer (target)")
    ap.add_argument("--window", type=int, default=None, help="override unechoed updates per writer (saturation)")
    ap.add_argument("--compression", choices=["none", "deflate"], default="none",
                    help="whether clients offer permessage-deflate (default none; the Node server never accepts it)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of: " + ", ".join(SYSTEMS))
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (default 2)")
    ap.add_argument("--max-foreign", type=float, default=None,
                    help="cores of other work tolerated in a window before a run is redone "
                         "(default 0.15 full, off quick)")
    ap.add_argument("--retries", type=int, default=None, help="redo a disturbed run this often (default 1 full)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="wait up to this many s for an idle machine before each run (default 120 full, 0 quick)")
    ap.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    ab.add_argument(ap)
    args = ap.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    systems = ab.with_baseline(systems, args.baseline_ref)
    if NODE in systems:
        ensure_node()
    base = QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.quick else 3)
    retries = args.retries if args.retries is not None else (0 if args.quick else 1)
    max_foreign = args.max_foreign if args.max_foreign is not None else (0.0 if args.quick else 0.15)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 120.0)
    compression = None if args.compression == "none" else "deflate"
    names = ["target", "saturation"] if args.scenario == "all" else [args.scenario]
    scenarios = harness.scenarios_from_args(base, names, args, ap)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="colony-bench-yjs-") as tmp, contextlib.ExitStack() as stack:
        baseline = ab.open_baseline(stack, args.baseline_ref)
        code_dirs = ab.code_dirs(baseline)
        for sc in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
            for rep in range(repeat):
                order = systems[rep % len(systems):] + systems[:rep % len(systems)]  # rotate who goes first
                for system in order:
                    print(f"[bench] {sc.name} #{rep + 1}/{repeat}: {system} (N={sc.subscribers}, W={sc.writers}, "
                          f"{f'{sc.rate:g}/s' if sc.rate else f'window {sc.window}'} per writer, "
                          f"{sc.warmup:g}+{sc.duration:g} s)", flush=True)
                    r = None
                    for attempt in range(1 + retries):
                        if quiet_wait > 0:
                            wait_quiet(max_foreign, quiet_wait)
                        try:
                            cand = run_one(system, sc, compression, args.sub_procs,
                                           Path(tmp) / f"{sc.name}-{system}-{rep}-{attempt}", code_dirs.get(system))
                        except Exception as exc:  # noqa: BLE001 -- recorded as a failure, run continues
                            failures.append(f"{sc.name}/{system}#{rep + 1}: {exc}")
                            print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
                            break
                        cand["contaminated"] = max_foreign > 0 and cand["foreign_cores"] > max_foreign
                        if r is None or cand["foreign_cores"] < r["foreign_cores"]:
                            r = cand
                        if not cand["contaminated"]:
                            break
                        print(f"[bench]   other work used {cand['foreign_cores']:.2f} cores during the window; "
                              f"{'retrying' if attempt < retries else 'keeping the least disturbed run'}", flush=True)
                    if r is None:
                        continue
                    runs[system].append(r)
                    print(f"[bench]   {r['delivered_per_s']:.0f} deliveries/s, {fmt(r['ws_messages_per_s'], '.0f')} "
                          f"msgs/s, p50 {r['latency_ms']['p50']:.2f} ms, p99 {r['latency_ms']['p99']:.2f} ms, "
                          f"{fmt(r['server']['cpu_us_per_delivery'])} µs CPU/delivery, "
                          f"lost {r['loss']['missing_total']}, other work {r['foreign_cores']:.2f} cores", flush=True)
            results[sc.name] = {s: agg(v) for s, v in runs.items() if v}

    out: dict[str, Any] = {
        "benchmark": "bench_yjs",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {**machine(), "node": subprocess.run(["node", "--version"], capture_output=True, check=False,
                                                        text=True).stdout.strip() if shutil.which("node") else None},
        "results": results,
        "ratios": {lb: {f"colony/{p}": ratios(by[COLONY], by[p]) for p in PEERS if COLONY in by and p in by}
                   for lb, by in results.items()},
        "verdicts": verdicts(results),
        "baseline": ab.summary(results, ab.current_tree(), baseline) if baseline is not None else None,
        "failures": failures,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / time.strftime("bench_yjs-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(table(results))
    if out["baseline"] is not None:
        print("\n".join(ab.report(out["baseline"])))
    for k, v in out["verdicts"].items():
        detail = ", ".join(f"{a}={fmt(b, '.2f')}" for a, b in v.items() if a != "met")
        print(f"[bench] {k}: {'met' if v['met'] else 'MISSED'} ({detail})")
    print(f"\n[bench] {out['elapsed_s']} s; results in {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
