"""The lease benchmark runs end to end (``--quick``): on Colony and on etcd every killed leader is
followed by a grant to the next candidate no sooner than the TTL after the last renewal can allow
(2/3 of the TTL, renewing every TTL/3) and within the TTL plus etcd's 500 ms expiry sweep plus
slack; Colony's relay CPU per renewal and etcd's
CPU per keep-alive are measured. Timing figures are not checked
(docs/benchmarks.md, "Leader election", has measured ones)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_lease.py"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bench_lease_quick(tmp_path: Path) -> None:
    out = tmp_path / "lease.json"
    args = [sys.executable, str(SCRIPT), "--quick", "--json", str(out)]
    assert shutil.which("etcd"), "the comparison needs Debian's etcd-server (scripts/test installs it)"
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=55, check=False)
    except subprocess.TimeoutExpired as exc:  # the run dumps its stacks after 40 s: show them
        pytest.fail(f"bench_lease --quick hung:\n{exc.stdout!r}\n{exc.stderr!r}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert {"colony", "etcd"} <= set(res), "both elections ran"
    for name in ("colony", "etcd"):
        r = res[name]
        assert "error" not in r, (name, r)
        ttl = r["ttl_ms"]
        assert len(r["failovers"]) == 3 and r["unplanned_expiries"] >= 0, (name, r)
        assert all(ttl * 2 // 3 - 50 <= f <= ttl + 1500 for f in r["failovers"]), (name, r["failovers"])
    c, e = res["colony"], res["etcd"]
    assert c["renewals"] > 0 and c["relay_cpu_per_renewal_us"] is not None
    assert c["grant_ms"]["n"] == 3
    assert e["keepalives"] > 0 and e["etcd_cpu_per_keepalive_us"] is not None
