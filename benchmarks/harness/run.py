""":func:`run_workload` (one measured run against started servers) and :func:`measure` (redo a
run disturbed by other work on the machine).
"""
from __future__ import annotations

import array
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import COLONY, NS, Scenario, doc_feed, doc_of, now_ns
from .load import subscriber_proc, writer_proc
from .procs import ServerProc, machine_cpu, proc_cpu_s, proc_rss_kb, wait_quiet
from .profiling import Profiler
from .stats import BUCKET_NS, lat_summary, timeline


def _expect(conn: Any, what: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"load generator: no {what!r} after {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] != what:
        raise RuntimeError(f"load generator: expected {what!r}, got {msg!r}")
    return msg


def sample_procs(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: {"cpu_s": proc_cpu_s(pid), "rss_kb": proc_rss_kb(pid)} for name, pid in pids.items()}


def run_workload(system: str, sc: Scenario, compression: str | None, servers: list[ServerProc], *,
                 sub_procs: int = 2, profile_paths: list[Path] | None = None,
                 extra_pids: dict[str, int] | None = None,
                 probe: Callable[[], Any] | None = None,
                 writer_url: str | None = None) -> dict[str, Any]:
    """One measured run of scenario ``sc`` against already started ``servers``.

    Subscribers and writers are spread round-robin over the servers (client ``i`` uses server
    ``i % len(servers)``). With ``sc.docs`` = D > 1 (Colony only), writer ``k`` publishes to
    ``doc/bench-{k % D}`` and subscriber ``i`` reads ``doc/bench-{i % D}``; the loss check is per
    doc (each subscriber must get exactly its doc's updates) and ``"loss"["per_doc"]`` breaks it
    down. Server CPU and RSS are summed over all servers (``"server"``); with
    several servers every one is also reported on its own (``"servers"``). ``extra_pids``
    (e.g. ``{"redis": pid}``) are sampled the same way and reported under ``"extra"``; their
    CPU counts as part of the system under test, not as other work. ``probe`` is called right
    before and right after the measured window (``"probe": {"before": ..., "after": ...}``).
    ``profile_paths``: py-spy each server during the window, one output file each.
    ``writer_url``: the writers connect there instead of to the servers' URLs (bench_yjs: the
    Colony URL with a write capability, while subscribers keep the read-only one)."""
    if sc.docs < 1:
        raise ValueError(f"docs must be >= 1, not {sc.docs}")
    if sc.docs > 1 and system != COLONY:
        raise ValueError("several docs (docs > 1) are only implemented for Colony")
    ctx = mp.get_context("fork")
    extra_pids = extra_pids or {}
    rss_start = sum(proc_rss_kb(s.pid) for s in servers)
    urls = [s.url() for s in servers]
    url: str | list[str] = urls[0] if len(urls) == 1 else urls
    procs: list[Any] = []
    conns: list[Any] = []
    profile_text = None
    probes: dict[str, Any] = {}
    try:
        room_ready = ctx.Event()
        nproc = max(1, min(sub_procs, sc.subscribers))
        groups = [list(range(sc.subscribers))[i::nproc] for i in range(nproc)]
        for gi, idxs in enumerate(groups):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=subscriber_proc,
                            args=(child, system, url, idxs, compression, gi == 0, room_ready, sc.docs, sc.feed),
                            daemon=True, name=f"bench-sub-{gi}")
            p.start()
            procs.append(p)
            conns.append(parent)
        sub_conns = conns[:]
        for c in sub_conns:
            msg = c.recv() if c.poll(120) else ("error", "timeout connecting subscribers")
            if msg[0] != "ready":
                raise RuntimeError(f"{system}: subscribers failed: {msg[1]}")
        wparent, wchild = ctx.Pipe()
        wurl = url if writer_url is None else writer_url
        wp = ctx.Process(target=writer_proc, args=(wchild, system, wurl, sc.writers, sc, compression), daemon=True,
                         name="bench-writers")
        wp.start()
        procs.append(wp)
        conns.append(wparent)
        msg = wparent.recv() if wparent.poll(60) else ("error", "timeout connecting writers")
        if msg[0] != "ready":
            raise RuntimeError(f"{system}: writers failed: {msg[1]}")

        time.sleep(0.5)  # let presence/sync chatter settle
        t_start = now_ns() + int(0.2 * NS)
        t0 = t_start + int(sc.warmup * NS)
        t1 = t0 + int(sc.duration * NS)
        wparent.send(("go", t_start, t1))
        time.sleep(max(0.0, (t0 - now_ns()) / NS))
        if probe is not None:
            probes["before"] = probe()
        before = [s.sample() for s in servers]
        ex_before = sample_procs(extra_pids)
        lg_before = sum(proc_cpu_s(p.pid) for p in procs)
        box_before = machine_cpu()
        me_before = proc_cpu_s(os.getpid())
        profs = []
        if profile_paths:
            profs = [Profiler(s.pid, sc.duration, path) for s, path in zip(servers, profile_paths, strict=True)]
        time.sleep(max(0.0, (t1 - now_ns()) / NS))
        after = [s.sample() for s in servers]
        ex_after = sample_procs(extra_pids)
        lg_after = sum(proc_cpu_s(p.pid) for p in procs)
        box_after = machine_cpu()
        me_after = proc_cpu_s(os.getpid())
        if probe is not None:
            probes["after"] = probe()

        _, wres = _expect(wparent, "result", 60)
        sent: dict[bytes, int] = wres["sent"]
        acked: dict[bytes, int] = wres["acked"]
        refused: dict[bytes, int] = wres["refused"]
        # per doc: a refused publish was never stored, so not a loss
        expected_by_doc = {d: [m for m in ms if m not in refused] for d, ms in wres["by_doc"].items()}
        for c in sub_conns:
            c.send(("finish", expected_by_doc, sent, t0, t1, 20.0))
        sub_results = [_expect(c, "result", 90)[1] for c in sub_conns]
        rss_end = sum(proc_rss_kb(s.pid) for s in servers)
        if profs:
            texts = [pr.finish() for pr in profs]
            profile_text = texts[0] if len(texts) == 1 else "\n\n".join(
                f"== {s.name} (pid {s.pid}) ==\n{t}" for s, t in zip(servers, texts, strict=True))
        for c in conns:
            c.send(("close",))
        for c in conns:
            if c.poll(10):
                c.recv()
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)

    lats: list[int] = []
    buckets: dict[int, list[int]] = {}
    clients: list[dict[str, Any]] = []
    in_window = 0
    for r in sub_results:
        a = array.array("q")
        a.frombytes(r["latencies"])
        b = array.array("q")
        b.frombytes(r["sent_at"])
        lats.extend(a)
        for lt, st in zip(a, b, strict=True):
            buckets.setdefault(st // BUCKET_NS, []).append(lt)
        clients.extend(r["clients"])
        in_window += r["in_window"]
    ack_lat = [acked[m] - t for m, t in sent.items() if m in acked and t0 <= t < t1]
    sent_in_window = sum(1 for t in sent.values() if t0 <= t < t1)
    cpus = [a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)]
    cpu = sum(cpus)
    threads_before: dict[str, float] = {}
    threads_after: dict[str, float] = {}
    for smp, acc in [(x, threads_before) for x in before] + [(x, threads_after) for x in after]:
        for name, v in smp["threads"].items():
            acc[name] = acc.get(name, 0.0) + v
    ex_cpu = {n: ex_after[n]["cpu_s"] - ex_before[n]["cpu_s"] for n in extra_pids}
    missing = sum(c["missing"] for c in clients)
    dups = sum(c["duplicates"] for c in clients)
    unexpected = sum(c["unexpected"] for c in clients)
    per_doc = []
    for d in range(sc.docs):
        cs = [c for c in clients if c["doc"] == d]
        ms = wres["by_doc"].get(d, [])
        per_doc.append({
            "doc": d, "feed": doc_feed(d, sc.docs, sc.feed), "subscribers": len(cs),
            "writers": sum(1 for k in range(sc.writers) if doc_of(k, sc.docs) == d),
            "published": len(ms), "refused": sum(1 for m in ms if m in refused),
            "published_in_window": sum(1 for m in ms if t0 <= sent[m] < t1),
            "complete_subscribers": sum(1 for c in cs if c["missing"] == 0),
            "missing": sum(c["missing"] for c in cs), "duplicates": sum(c["duplicates"] for c in cs),
            "unexpected": sum(c["unexpected"] for c in cs),
            "delivered_per_s": sum(c["in_window"] for c in cs) / sc.duration,
        })
    result: dict[str, Any] = {
        "system": system,
        "scenario": sc.name,
        "params": {**asdict(sc), "compression": compression or "none", "sub_procs": len(sub_conns)},
        "window_monotonic_s": [t0 / NS, t1 / NS],
        "published": len(sent),
        "acked": len(acked),
        "unacked": len(sent) - len(acked),
        "refused": len(refused),
        "publish_errors": wres["errors"][:10],
        "published_in_window": sent_in_window,
        "publish_per_s": sent_in_window / sc.duration,
        "deliveries_in_window": in_window,
        "delivered_per_s": in_window / sc.duration,
        "latency_ms": lat_summary(lats),
        "ack_latency_ms": lat_summary(ack_lat),
        "latency_timeline": timeline(buckets),
        "server": {
            "cpu_s": cpu,
            "cpu_cores": cpu / sc.duration,
            "cpu_us_per_delivery": (cpu * 1e6 / in_window) if in_window else None,
            "cpu_cores_by_thread": {
                name: round((threads_after.get(name, 0.0) - threads_before.get(name, 0.0)) / sc.duration, 3)
                for name in sorted(threads_after)
                if threads_after.get(name, 0.0) - threads_before.get(name, 0.0) > 0
            },
            "rss_kb_start": rss_start,
            "rss_kb_before": sum(x["rss_kb"] for x in before),
            "rss_kb_after": sum(x["rss_kb"] for x in after),
            "rss_kb_end": rss_end,
            "exit_code": None,  # filled in by the caller once it has stopped the server(s)
        },
        "loadgen_cpu_cores": (lg_after - lg_before) / sc.duration,
        "machine": {k: (box_after[k] - box_before[k]) / sc.duration for k in box_after},
        "foreign_cores": ((box_after["busy_cores"] - box_before["busy_cores"]) - cpu - sum(ex_cpu.values())
                          - (lg_after - lg_before) - (me_after - me_before)) / sc.duration,
        "messages": {
            "client_sent_updates": len(sent),
            "subscriber_ws_messages": sum(c["messages"] for c in clients),
            "subscriber_frames": sum(c["frames"] for c in clients),
            "subscriber_deliveries": sum(c["received"] for c in clients),
            "expected_deliveries": sum(c["expected"] for c in clients),
            "writer_ws_messages_received": wres["messages_in"],
        },
        "loss": {
            "subscribers": len(clients),
            "complete_subscribers": sum(1 for c in clients if c["missing"] == 0),
            "missing_total": missing,
            "duplicates_total": dups,
            "unexpected_total": unexpected,
            "ok": missing == 0 and dups == 0 and unexpected == 0 and len(clients) == sc.subscribers,
            "per_doc": per_doc,
            "subscriber_errors": [e for c in clients for e in c["errors"]][:5],
            "closed_codes": sorted({c["closed_code"] for c in clients if c["closed_code"] is not None}),
        },
    }
    if len(servers) > 1:
        result["servers"] = [{
            "name": s.name, "pid": s.pid, "cpu_cores": c / sc.duration,
            "main_thread_cores": round((a["threads"]["main"] - b["threads"]["main"]) / sc.duration, 3),
            "rss_kb_after": a["rss_kb"],
        } for s, c, a, b in zip(servers, cpus, after, before, strict=True)]
    if extra_pids:
        result["extra"] = {n: {
            "cpu_s": ex_cpu[n], "cpu_cores": ex_cpu[n] / sc.duration,
            "cpu_us_per_delivery": (ex_cpu[n] * 1e6 / in_window) if in_window else None,
            "rss_kb_before": ex_before[n]["rss_kb"], "rss_kb_after": ex_after[n]["rss_kb"],
        } for n in extra_pids}
    if probe is not None:
        result["probe"] = probes
    if profile_text is not None:
        result["profile_summary"] = profile_text
    return result


def measure(run: Callable[[int], dict[str, Any]], retries: int, max_foreign: float, quiet_wait: float
            ) -> dict[str, Any]:
    """Call ``run(attempt)`` until a run is undisturbed by other work on the machine (at most
    ``1 + retries`` times); returns the least disturbed run, marked ``contaminated`` when even
    that one saw more than ``max_foreign`` cores of other work. Exceptions propagate."""
    r = None
    for attempt in range(1 + retries):
        if quiet_wait > 0:
            wait_quiet(max_foreign, quiet_wait)
        cand = run(attempt)
        cand["contaminated"] = max_foreign > 0 and cand["foreign_cores"] > max_foreign
        if r is None or cand["foreign_cores"] < r["foreign_cores"]:
            r = cand
        if not cand["contaminated"]:
            break
        print(f"[bench]   other work used {cand['foreign_cores']:.2f} cores during the window;"
              f" {'retrying' if attempt < retries else 'keeping the least disturbed run'}", flush=True)
    assert r is not None
    return r
