"""The scale-out benchmark runs end to end (``--quick``) and loses nothing.

Only correctness is asserted: each of the three deployments (one relay process on SQLite, one
on Redis, two on one Redis) delivered updates in all three scenarios, and every subscriber
received every published update exactly once, including the subscribers of the second process,
which see the first one's records through Redis, and that no compare-and-set round was lost in
the measured window (``head_moved`` = 0: one process sequences each feed, the other hands its
publishes to it). In the multi-doc scenario (``docs``, quick:
3 docs, so in ``redis-2`` every doc has subscribers on both processes) the check is per doc:
each subscriber got exactly its own doc's updates, once each, and none of another doc. Timing
figures vary with the machine and are not checked (docs/benchmarks.md, "Scale-out", has
measured numbers).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_scaleout.py"

if shutil.which("redis-server") is None:  # scripts/test installs it; say so rather than skip silently
    raise RuntimeError("redis-server is not installed; scripts/test installs it (apt-get install redis-server)")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_scaleout_benchmark_runs_all_deployments_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "scaleout.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
    )
    assert proc.returncode == 0, f"bench_scaleout.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert data["failures"] == []
    results = data["results"]
    assert set(results) == {"saturation", "target", "docs"}
    for scenario, by_config in results.items():
        assert set(by_config) == {"sqlite-1", "redis-1", "redis-2"}, scenario
        for config, agg in by_config.items():
            where = f"{scenario}/{config}"
            assert agg["deployment"]["processes"] == (2 if config == "redis-2" else 1), where
            assert agg["runs"], where
            for run in agg["runs"]:
                assert run["published"] > 0, where
                assert run["deliveries_in_window"] > 0, where
                assert run["delivered_per_s"] > 0, where
                assert run["refused"] == 0, (where, run["publish_errors"])
                assert run["unacked"] == 0, where
                loss = run["loss"]
                assert loss["subscribers"] == run["params"]["subscribers"], where
                assert loss["complete_subscribers"] == loss["subscribers"], (where, loss)
                assert loss["missing_total"] == 0, (where, loss)
                assert loss["duplicates_total"] == 0, (where, loss)
                assert loss["unexpected_total"] == 0, (where, loss)
                assert loss["ok"], (where, loss)
                msgs = run["messages"]
                assert msgs["subscriber_deliveries"] == msgs["expected_deliveries"], where
                docs = run["params"]["docs"]
                assert len(loss["per_doc"]) == docs, where
                if docs == 1:
                    assert msgs["subscriber_deliveries"] == run["published"] * loss["subscribers"], where
                else:
                    assert scenario == "docs", where
                    assert sum(d["published"] for d in loss["per_doc"]) == run["published"], where
                    assert msgs["subscriber_deliveries"] == sum(
                        d["published"] * d["subscribers"] for d in loss["per_doc"]), where
                    for d in loss["per_doc"]:  # each doc: its subscribers got exactly its updates
                        assert d["published"] > 0 and d["subscribers"] > 0, (where, d)
                        assert d["complete_subscribers"] == d["subscribers"], (where, d)
                        assert d["missing"] == d["duplicates"] == d["unexpected"] == 0, (where, d)
                    if config == "redis-2":  # odd D: every doc has clients on both processes
                        assert run["placement"]["docs_spanning_processes"] == docs, (where, run["placement"])
                if config == "redis-2":  # both processes served clients
                    assert len(run["servers"]) == 2, where
                    assert all(s["cpu_cores"] > 0 for s in run["servers"]), where
                if config.startswith("redis"):
                    ops = run["redis_ops"]
                    assert ops is not None and ops["appends"] > 0, where
                    # one process sequences each feed (relay.core.sequencer): no compare-and-set
                    # round is lost in steady state, however the clients are spread
                    assert ops["head_moved"] == 0 and ops["turn_waits"] == 0, (where, ops)
