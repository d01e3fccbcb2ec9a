"""The HTTP doors benchmark runs end to end (``--quick``) and loses nothing.

Only correctness is asserted: both doors (``/ws`` and HTTP publish + SSE) accepted events and
delivered them, every subscriber received every accepted event exactly once, and the
per-event CPU figure the report's ratios rest on was computed. Timing figures vary with the
machine and are not checked here (see docs/benchmarks.md, "HTTP doors").
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_http.py"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_http_benchmark_runs_both_doors_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert proc.returncode == 0, f"bench_http.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert data["failures"] == []
    assert set(data["results"]) == {"publish", "deliver"}
    for name, by_door in data["results"].items():
        assert set(by_door) == {"colony", "colony-http"}, name
        for door, agg in by_door.items():
            where = f"{name}/{door}"
            assert agg["server"]["cpu_us_per_event"] is not None, where
            for run in agg["runs"]:
                assert run["published"] > 0 and run["deliveries_in_window"] > 0, where
                loss = run["loss"]
                assert loss["ok"] and loss["missing_total"] == 0 and loss["duplicates_total"] == 0, (where, loss)
                assert run["unacked"] == 0, where
                assert run["messages"]["subscriber_deliveries"] == run["published"] * loss["subscribers"], where
        assert set(data["ratios"][name]) >= {"cpu_us_per_event", "cpu_us_per_delivery"}
