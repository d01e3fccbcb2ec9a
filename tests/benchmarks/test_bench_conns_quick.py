"""benchmarks/bench_conns.py --quick: 300 authenticated agents, each subscribed to its own feed
and to a shared one, all get every shared-feed event in order, exactly once (the script fails
otherwise), and the figures are produced (never checked against a time or a size)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_conns_benchmark_delivers_every_shared_event_to_every_agent(tmp_path: Path) -> None:
    out = tmp_path / "conns.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_conns.py"), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and data["connections"] == 300
    [run] = data["results"]["colony"]["runs"]
    assert run["agents"] == 300 + data["warm"]
    assert run["events"] == data["events"] == 20
    assert run["deliveries"] == run["events"] * run["agents"]  # each counted once, checked in order
    assert run["rss_after_kb"] > 0 and run["kb_per_connection"] == run["kb_per_connection"]  # a number
    assert run["connect_s"] > 0 and run["fanout_ms"]["p99"] >= run["fanout_ms"]["p50"] > 0
    assert "KiB/idle connection" in proc.stdout
