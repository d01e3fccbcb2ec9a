"""The doc benchmark runs end to end (``--quick``) and loses nothing.

Only correctness is asserted: both systems delivered updates, and every subscriber received
every published update exactly once. Timing figures vary with the machine and are not
checked here (see docs/benchmarks.md for measured numbers).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_doc.py"

import pycrdt.websocket  # noqa: E402,F401  -- the comparison server; scripts/test installs .[bench] (never skipped)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_benchmark_runs_both_systems_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"bench_doc.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert data["failures"] == []
    results = data["results"]
    assert set(results) == {"target/deflate", "saturation/deflate"}
    for label, by_system in results.items():
        assert set(by_system) == {"colony", "pycrdt-websocket"}, label
        for system, agg in by_system.items():
            where = f"{label}/{system}"
            assert agg["runs"], where
            for run in agg["runs"]:
                assert run["published"] > 0, where
                assert run["deliveries_in_window"] > 0, where
                assert run["delivered_per_s"] > 0, where
                loss = run["loss"]
                assert loss["subscribers"] == run["params"]["subscribers"], where
                assert loss["complete_subscribers"] == loss["subscribers"], (where, loss)
                assert loss["missing_total"] == 0, (where, loss)
                assert loss["duplicates_total"] == 0, (where, loss)
                assert loss["ok"], (where, loss)
                # every subscriber saw every published update
                assert run["messages"]["subscriber_deliveries"] == run["published"] * loss["subscribers"], where
