"""Shared pieces of the benchmarks in this folder (``bench_doc.py``, ``bench_yjs.py``, ``bench_scaleout.py``).

One module per concern; this package re-exports their names (``import harness``,
``from harness import run_workload``):

* ``/proc`` sampling: process and per-thread CPU, RSS, whole-machine busy CPU, waiting for a
  quiet machine;
* :class:`ServerProc`: one server under test in its own subprocess (Colony on SQLite or on
  Redis, or pycrdt-websocket), its port, ``/health``, CPU and RSS;
* the load generators: subscriber and writer processes (forked, one uvloop event loop each)
  that publish Yjs updates to one doc feed (or, with ``Scenario.docs`` > 1, to several: writer
  and subscriber ``i`` use ``doc/bench-{i % docs}``) and time every delivery with
  ``time.monotonic_ns`` matched by event id (see ``bench_doc.py`` for the workload);
* :func:`run_workload`: one measured run against one or several server processes (clients
  spread evenly over them), with warm-up, a measured window, latency percentiles, CPU and RSS
  of the servers and of any other processes named (e.g. redis-server), and a loss check
  (per doc: each subscriber gets exactly the updates of its own doc, once);
* py-spy profiling and the summary of its output; small statistics helpers.

Modules: ``common`` (constants, :class:`Scenario`), ``procs`` (``/proc`` sampling,
:class:`ServerProc`), ``load`` (load generators), ``run`` (:func:`run_workload`, :func:`measure`),
``stats`` (percentiles, ratios, formatting, machine, scenario overrides), ``profiling`` (py-spy),
``ab`` (``--baseline-ref``: the same scenario against a relay from another git ref).
"""
from __future__ import annotations

from .common import (
    CLK_TCK,
    COLONY,
    COLONY_ARGS,
    FEED,
    HERE,
    MARK_RE,
    NS,
    PEER,
    RESULTS_DIR,
    ROOM,
    ROOT,
    SYSTEMS,
    Scenario,
    doc_feed,
    doc_of,
    now_ns,
)
from .load import (
    SubClient,
    Writer,
    subscriber_proc,
    writer_proc,
)
from .procs import (
    CLI_MODULES,
    ServerProc,
    cli_module,
    machine_cpu,
    proc_cpu_s,
    proc_rss_kb,
    thread_cpu_s,
    wait_quiet,
)
from .profiling import (
    Profiler,
    summarize_profile,
)
from .run import (
    measure,
    run_workload,
    sample_procs,
)
from .stats import (
    BUCKET_NS,
    fmt,
    lat_summary,
    machine,
    median,
    pct,
    ratio,
    scenarios_from_args,
    timeline,
)

__all__ = [
    "BUCKET_NS",
    "CLI_MODULES",
    "CLK_TCK",
    "COLONY",
    "COLONY_ARGS",
    "FEED",
    "HERE",
    "MARK_RE",
    "NS",
    "PEER",
    "RESULTS_DIR",
    "ROOM",
    "ROOT",
    "SYSTEMS",
    "Profiler",
    "Scenario",
    "ServerProc",
    "SubClient",
    "Writer",
    "cli_module",
    "doc_feed",
    "doc_of",
    "fmt",
    "lat_summary",
    "machine",
    "machine_cpu",
    "measure",
    "median",
    "now_ns",
    "pct",
    "proc_cpu_s",
    "proc_rss_kb",
    "ratio",
    "run_workload",
    "sample_procs",
    "scenarios_from_args",
    "subscriber_proc",
    "summarize_profile",
    "thread_cpu_s",
    "timeline",
    "wait_quiet",
    "writer_proc",
]
