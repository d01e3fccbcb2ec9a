"""benchmarks/bench_memory.py --quick: every system's idle connections are measured and the
ratios against the peers are reported (the figures themselves are not checked)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_memory_benchmark_measures_colony_and_a_peer(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--quick", "--connections", "30",
         "--systems", "colony,pycrdt-websocket,colony-ws", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["connections"] == 30
    assert set(data["results"]) == {"colony", "pycrdt-websocket", "colony-ws"}
    for system, agg in data["results"].items():
        [run] = agg["runs"]
        assert run["connections"] == 30 and run["rss_after_kb"] > 0, system
    assert data["ratios"]["colony/pycrdt-websocket"] is not None
    assert "KiB of server RSS per idle connection" in proc.stdout
