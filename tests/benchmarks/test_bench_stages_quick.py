"""bench_stages.py --quick: every stage of the publish path is timed for doc and note events
(numbers produced and positive; their size is not checked)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_stages_quick(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_stages.py"), "--quick", "--events", "64",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    stages = data["stages_us"]["colony"]
    assert set(stages) == {"doc", "note"}
    for kind, st in stages.items():
        assert set(st) == {"parse", "check", "verify", "seal", "sign", "commit"}, kind
        assert all(v > 0 for v in st.values()), (kind, st)
    assert "doc" in proc.stdout and "note" in proc.stdout
