"""The Yjs endpoint benchmark runs end to end (``--quick``) and loses nothing.

Only correctness is asserted: Colony's ``/yjs``, pycrdt-websocket and the Node reference
server (``@y/websocket-server``) all delivered updates, and every subscriber received every
published update exactly once. Timing figures vary with the machine and are not checked here
(see docs/benchmarks.md, "Yjs endpoint", for measured numbers).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pycrdt.websocket  # noqa: F401  -- the comparison server; scripts/test installs .[bench]
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_yjs.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_yjs_benchmark_runs_all_systems_without_loss(tmp_path: Path) -> None:
    assert shutil.which("node") and shutil.which("npm"), \
        "the Node reference server needs node and npm (scripts/test installs them)"
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,  # < 60 s once benchmarks/node is installed
    )
    assert proc.returncode == 0, f"bench_yjs.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert data["failures"] == []
    results = data["results"]
    assert set(results) == {"target", "saturation"}
    for label, by_system in results.items():
        assert set(by_system) == {"colony", "pycrdt-websocket", "node-y-websocket", "hocuspocus"}, label
        for system, agg in by_system.items():
            where = f"{label}/{system}"
            assert agg["runs"], where
            for run in agg["runs"]:
                assert run["published"] > 0, where
                assert run["unacked"] == 0, where  # every writer saw its own updates echoed
                assert run["deliveries_in_window"] > 0, where
                assert run["delivered_per_s"] > 0, where
                loss = run["loss"]
                assert loss["subscribers"] == run["params"]["subscribers"], where
                assert loss["complete_subscribers"] == loss["subscribers"], (where, loss)
                assert loss["missing_total"] == 0, (where, loss)
                assert loss["duplicates_total"] == 0, (where, loss)
                assert loss["ok"], (where, loss)
                assert run["messages"]["subscriber_deliveries"] == run["published"] * loss["subscribers"], where
