"""Run ``colony serve`` with optional diagnostics, for ``bench_doc.py --server-diag``.

Same code path as the ``colony`` console script (``relay.ops.cli.main``), plus, when asked:

* ``BENCH_DIAG_LAG=1``: a task that sleeps 5 ms in a loop and logs every wake-up that comes
  more than 15 ms late (the event loop was blocked or starved), and every garbage
  collection of the oldest generation that took more than 5 ms; both to stderr with
  ``time.monotonic()`` stamps, so they can be lined up with the benchmark's timeline.
  It also logs every snapshot save (``FeedRuntime.save_snapshot``, awaited by the feed's
  sequencer, so publishes wait behind it) and every durable append that took > 10 ms.
* ``BENCH_NO_DEFLATE=1``: serve with uvicorn's ``ws_per_message_deflate=False`` (what
  ``relay/ops/runner.py`` would do with a one-line change), to measure that change with clients
  that still offer permessage-deflate.
* ``BENCH_CPROFILE=<path>``: cProfile the whole process (main thread) and dump stats there
  on exit (sorted views: ``python -m pstats <path>``).

Not used for the reported numbers (diagnostics cost a little CPU).
"""
from __future__ import annotations

import asyncio
import gc
import os
import sys
import time


def _install_gc_log() -> None:
    started: dict[int, float] = {}

    def cb(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        elif 0 in started:
            ms = (time.perf_counter() - started.pop(0)) * 1000
            if ms > 5:
                print(f"[diag] {time.monotonic():.3f} gc gen2 {ms:.1f} ms collected={info.get('collected')}",
                      file=sys.stderr, flush=True)

    gc.callbacks.append(cb)


def _install_lag_monitor() -> None:
    from relay import server

    orig = server.Relay.__aenter__

    async def monitor() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            late = (time.monotonic() - t - 0.005) * 1000
            if late > 15:
                print(f"[diag] {time.monotonic():.3f} loop lag {late:.1f} ms", file=sys.stderr, flush=True)

    async def aenter(self: server.Relay) -> server.Relay:
        r = await orig(self)
        self._bench_monitor = asyncio.get_running_loop().create_task(monitor())  # type: ignore[attr-defined]
        return r

    server.Relay.__aenter__ = aenter  # type: ignore[method-assign]


def _install_storage_timing() -> None:
    from relay.core import worker as feeds
    from relay.storage import sqlite

    orig_snap = feeds.FeedRuntime.save_snapshot
    orig_append = sqlite.SqliteStorage.append

    async def save_snapshot(self: feeds.FeedRuntime) -> None:
        t = time.perf_counter()
        await orig_snap(self)
        print(f"[diag] {time.monotonic():.3f} snapshot {self.feed}@{self.seq} "
              f"{(time.perf_counter() - t) * 1000:.1f} ms", file=sys.stderr, flush=True)

    async def append(self: sqlite.SqliteStorage, feed: str, expected: int, records: list) -> None:  # type: ignore[type-arg]
        t = time.perf_counter()
        await orig_append(self, feed, expected, records)
        ms = (time.perf_counter() - t) * 1000
        if ms > 10:
            print(f"[diag] {time.monotonic():.3f} append of {len(records)} took {ms:.1f} ms",
                  file=sys.stderr, flush=True)

    feeds.FeedRuntime.save_snapshot = save_snapshot  # type: ignore[method-assign]
    sqlite.SqliteStorage.append = append  # type: ignore[method-assign]


def main() -> int:
    from relay.ops.cli import main as colony_main

    if os.environ.get("BENCH_DIAG_LAG"):
        _install_gc_log()
        _install_lag_monitor()
        _install_storage_timing()
    if os.environ.get("BENCH_NO_DEFLATE"):
        from relay.ops import runner

        orig = runner.uvicorn_config

        def no_deflate(app: object, config: object, **overrides: object):  # type: ignore[no-untyped-def]
            return orig(app, config, **{"ws_per_message_deflate": False, **overrides})  # type: ignore[arg-type]

        runner.uvicorn_config = no_deflate  # type: ignore[assignment]
    prof_path = os.environ.get("BENCH_CPROFILE")
    if not prof_path:
        return colony_main(sys.argv[1:])
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(colony_main, sys.argv[1:])
    finally:
        prof.dump_stats(prof_path)


if __name__ == "__main__":
    sys.exit(main())
