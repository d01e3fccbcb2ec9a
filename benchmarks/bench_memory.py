#!/usr/bin/env python3
"""Server memory per idle connection: Colony's ``/yjs`` against the Yjs servers of bench_yjs.py,
and Colony's native ``/ws``, measured in one run.

Each server is started fresh; after a warm-up connection its RSS (``/proc/<pid>/status`` VmRSS)
is read, N clients connect and finish their handshake (a Yjs client: sync step 1 answered by
step 2; a native client: ``ping`` answered by ``pong``, then ``sub`` answered by ``synced``),
the server settles, and the RSS is read again. The figure is (after - before) / N in KiB, the
median over ``--repeat`` runs; Colony's is reported as a ratio against each peer's.

    python benchmarks/bench_memory.py --quick          # CI smoke run: 50 connections, < 30 s
    python benchmarks/bench_memory.py                  # 500 connections, 3 runs per system
    python benchmarks/bench_memory.py --json out.json

docs/reliability.md records the figures with the command that produced them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_yjs import NODE, PEER, ColonyYjs, ensure_node, make_server
from harness import COLONY, ServerProc, machine, median, ratio
from harness.procs import proc_rss_kb

import websockets

YJS_STEP1_EMPTY = bytes([0, 0, 1, 0])  # messageSync, syncStep1, state vector of length 1: no clients
SYSTEMS = (COLONY, NODE, PEER)
COLONY_WS = "colony-ws"


async def _yjs_client(url: str) -> Any:
    ws = await websockets.connect(url, max_size=None, compression=None)
    await ws.send(YJS_STEP1_EMPTY)
    while True:  # the server's step 2 (and maybe its own step 1 / awareness) arrive in any order
        msg = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(msg, bytes) and msg[:2] == b"\x00\x01":
            return ws


async def _native_client(url: str, i: int) -> Any:
    ws = await websockets.connect(url, max_size=None, compression=None)
    await ws.send(json.dumps({"t": "ping", "rid": 1}))
    await ws.send(json.dumps({"t": "sub", "feed": f"note/idle-{i % 10}", "since": 0, "rid": 2}))
    while True:  # the relay batches frames in one message, one per line
        msg = await asyncio.wait_for(ws.recv(), 30)
        if any(json.loads(line).get("t") == "synced" for line in str(msg).splitlines() if line):
            return ws


async def _connect_all(system: str, url: str, n: int) -> list[Any]:
    # the first client alone (a room created by several clients at once can stall pycrdt-websocket),
    # then 50 handshakes at a time
    conns = [await (_native_client(url, 0) if system == COLONY_WS else _yjs_client(url))]
    for start in range(1, n, 50):
        batch = range(start, min(n, start + 50))
        if system == COLONY_WS:
            conns += await asyncio.gather(*(_native_client(url, i) for i in batch))
        else:
            conns += await asyncio.gather(*(_yjs_client(url) for _ in batch))
    return conns


def _settled_rss(pid: int, seconds: float = 1.0) -> int:
    """The RSS once it stops moving (three equal readings 0.1 s apart, or after ``seconds``)."""
    end, last, same = time.monotonic() + seconds, -1, 0
    while time.monotonic() < end and same < 3:
        time.sleep(0.1)
        now = proc_rss_kb(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


def run_one(system: str, n: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    server: ServerProc
    if system in (COLONY, COLONY_WS):  # all clients come from this one address: lift the per-IP cap
        server = ColonyYjs(COLONY, workdir, extra_args=["--max-connections-per-ip", "1000000"])
    else:
        server = make_server(system, workdir)
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        url = f"ws://127.0.0.1:{server.port}/ws" if system == COLONY_WS else server.url()  # type: ignore[attr-defined]

        async def measure() -> dict[str, Any]:
            warm = await _connect_all(system, url, 5)  # imports, first-connection caches
            before = await asyncio.to_thread(_settled_rss, pid)
            conns = await _connect_all(system, url, n)
            after = await asyncio.to_thread(_settled_rss, pid)
            for ws in conns + warm:
                await ws.close()
            return {"rss_before_kb": before, "rss_after_kb": after, "kb_per_connection": (after - before) / n}

        out = asyncio.run(measure())
    finally:
        server.stop()
    out.update(system=system, connections=n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 50 connections, one run")
    ap.add_argument("--connections", type=int, default=None, help="idle connections per run (default 500)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per system (default 3, quick 1)")
    ap.add_argument("--systems", default=",".join((*SYSTEMS, COLONY_WS)),
                    help=f"comma list of: {', '.join((*SYSTEMS, COLONY_WS))}")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    n = args.connections or (50 if args.quick else 500)
    repeat = args.repeat or (1 if args.quick else 3)
    systems = [s for s in args.systems.split(",") if s]
    if NODE in systems:
        ensure_node()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for r in range(repeat):
            for system in systems:  # interleaved, so drift hits every system alike
                run = run_one(system, n, Path(tmp) / f"{system}-{r}")
                results.setdefault(system, {"runs": []})["runs"].append(run)
                print(f"[memory] {system:18s} run {r + 1}: {run['kb_per_connection']:.1f} KiB per idle connection "
                      f"({run['rss_before_kb']} -> {run['rss_after_kb']} KiB, {n} connections)", flush=True)
    for agg in results.values():
        agg["kb_per_connection"] = median([run["kb_per_connection"] for run in agg["runs"]])
    ratios = {}
    if COLONY in results:
        for peer in (NODE, PEER):
            if peer in results:
                ratios[f"{COLONY}/{peer}"] = ratio(results[COLONY]["kb_per_connection"],
                                                   results[peer]["kb_per_connection"])
    print("\nKiB of server RSS per idle connection (median):")
    for system, agg in results.items():
        print(f"  {system:18s} {agg['kb_per_connection']:8.1f}")
    for name, q in ratios.items():
        print(f"  ratio {name}: {q:.2f}x" if q is not None else f"  ratio {name}: n/a")
    if args.json:
        args.json.write_text(json.dumps({"mode": "quick" if args.quick else "full", "connections": n,
                                         "results": results, "ratios": ratios, "machine": machine()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
