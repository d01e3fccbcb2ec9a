"""The long fuzz run (``scripts/fuzz [--minutes N] [target ...]``): every harness in turn, one core.

Targets: the atheris harnesses of tests/fuzz/targets.py (frames, canonical, capability,
y_protocol, lib0, yjs_concat, yjs_sandbox) and ``pycrdt``, the mutation fuzzer that looks for Yjs updates
crashing pycrdt (tests/fuzz/yjs_mutate.py). The time is split evenly between the targets named.
Property violations found by atheris are saved as tests/data/fuzz_crashes/<target>/crash-<sha1>
(each one is a bug in our code to fix, with a regression test); new pycrdt crashes are minimized
and saved under tests/data/yjs_crashes/ with their manifest entry. The corpus atheris grows is
kept under .fuzz-corpus/<target>/ (not committed) so a later run starts where this one stopped.
Prints one summary line per target and a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from tests.fuzz.corpus import corpus
from tests.fuzz.pycrdt_runner import ROOT
from tests.fuzz.yjs_mutate import CRASH_DIR, fuzz

ATHERIS = ("frames", "canonical", "capability", "y_protocol", "lib0", "yjs_concat", "yjs_sandbox")
ALL = (*ATHERIS, "pycrdt")
STATS = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)")


def run_atheris(target: str, seconds: int) -> dict[str, object]:
    corpus_dir = ROOT / ".fuzz-corpus" / target
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(corpus(target)):
        (corpus_dir / f"seed-{i:02d}").write_bytes(data)
    crash_dir = ROOT / "tests" / "data" / "fuzz_crashes" / target
    crash_dir.mkdir(parents=True, exist_ok=True)
    before = set(crash_dir.iterdir())
    cmd = [sys.executable, "-m", "tests.fuzz.atheris_main", target, f"-max_total_time={seconds}",
           f"-artifact_prefix={crash_dir}/", "-timeout=10", "-rss_limit_mb=1024", "-print_final_stats=1",
           str(corpus_dir)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    dt = time.monotonic() - t0
    m = ([None, *STATS.finditer(proc.stderr)])[-1]
    new = sorted(p.name for p in set(crash_dir.iterdir()) - before)
    if not any(crash_dir.iterdir()):
        crash_dir.rmdir()
    out: dict[str, object] = {"target": target, "seconds": round(dt, 1), "returncode": proc.returncode,
                              "new_crashes": new}
    if m:
        runs, cov, ft, corp, eps = (int(x) for x in m.groups())
        out.update(runs=runs, inputs_per_s=round(runs / dt, 1), cov=cov, ft=ft, corpus=corp, libfuzzer_exec_s=eps)
    if proc.returncode and not new:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("targets", nargs="*", help=f"any of {' '.join(ALL)} (default: all)")
    a = ap.parse_args()
    targets = a.targets or list(ALL)
    if unknown := set(targets) - set(ALL):
        ap.error(f"unknown targets {sorted(unknown)}; choose from {' '.join(ALL)}")
    each = max(5, int(a.minutes * 60 / len(targets)))
    results = []
    for t in targets:
        if t == "pycrdt":
            t0 = time.monotonic()
            stats = fuzz(each, a.seed, CRASH_DIR, log=True)
            dt = time.monotonic() - t0
            r: dict[str, object] = {"target": t, "seconds": round(dt, 1), "runs": stats.get("inputs", 0),
                                    "inputs_per_s": round(stats.get("inputs", 0) / dt, 1),
                                    "new_crashes": stats.get("saved", 0), "outcomes": stats}
        else:
            r = run_atheris(t, each)
        results.append(r)
        print(f"{t:12s} {r.get('runs', '?'):>9} inputs {r.get('inputs_per_s', '?'):>8}/s "
              f"cov {r.get('cov', '-')} ft {r.get('ft', '-')} crashes {r.get('new_crashes')}", flush=True)
    print(json.dumps(results, indent=1))
    sys.exit(1 if any(r.get("new_crashes") and r["target"] != "pycrdt" for r in results) else 0)


if __name__ == "__main__":
    main()
