"""A/B mode (``--baseline-ref``): bench_doc.py and bench_yjs.py run the same scenario against this
tree's relay and one from a git ref, interleaved, in one invocation (``--quick``, against ``HEAD``
so it works in a clean clone; one scenario each, saturation for bench_doc and target for
bench_yjs, so both scenarios' A/B paths run and the suite stays short).

Asserted: both relays delivered every update to every subscriber exactly once, the baseline ran
from the temporary worktree of the ref (its ``PYTHONPATH``) and this tree's from this tree, the
current/baseline ratios of CPU per delivery and p99 are reported, and the temporary worktree is
gone afterwards (directory and ``git worktree list`` entry). Timing figures are not checked.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import CLI_MODULES, cli_module  # noqa: E402


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def _run_ab(script: str, scenario: str, tmp_path: Path, timeout: int) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    head = _git("rev-parse", "HEAD")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--systems", "colony",
         "--baseline-ref", "HEAD", "--scenario", scenario, "--duration", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["failures"] == []
    base = data["baseline"]
    assert base["ref"] == "HEAD" and base["commit"] == head
    assert base["cli"] in CLI_MODULES
    assert base["current"]["path"] == str(ROOT)
    assert "A/B: this tree" in proc.stdout  # the ratios are printed, not only stored
    # the temporary worktree was removed and pruned (other worktrees of the repository may come and go meanwhile)
    baseline_dirs = {run["server"]["code_dir"] for by_system in data["results"].values()
                     for run in by_system["colony-baseline"]["runs"]}
    assert len(baseline_dirs) == 1
    listed = _git("worktree", "list", "--porcelain")
    assert all(f"worktree {d}\n" not in listed + "\n" for d in baseline_dirs), listed
    for label, by_system in data["results"].items():
        assert set(by_system) == {"colony", "colony-baseline"}, label
        for system, agg in by_system.items():
            where = f"{label}/{system}"
            assert agg["runs"], where
            for run in agg["runs"]:
                code_dir = Path(run["server"]["code_dir"])
                if system == "colony":
                    assert code_dir == ROOT, where
                else:
                    assert code_dir != ROOT and not code_dir.exists(), where  # a temporary worktree, now gone
                assert run["published"] > 0, where
                assert run["deliveries_in_window"] > 0, where
                loss = run["loss"]
                assert loss["subscribers"] == run["params"]["subscribers"], where
                assert loss["complete_subscribers"] == loss["subscribers"], (where, loss)
                assert loss["missing_total"] == 0 and loss["duplicates_total"] == 0, (where, loss)
                assert loss["ok"], (where, loss)
                assert run["messages"]["subscriber_deliveries"] == run["published"] * loss["subscribers"], where
        q = base["ratios"][label]
        assert q["cpu_us_per_delivery"] is not None and q["cpu_us_per_delivery"] > 0, (label, q)
        assert q["latency_p99"] is not None and q["latency_p99"] > 0, (label, q)
    assert set(base["ratios"]) == set(data["results"])
    return data


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_doc_baseline_ref_head(tmp_path: Path) -> None:
    data = _run_ab("bench_doc.py", "saturation", tmp_path, 200)  # the yjs test below takes the other scenario
    assert set(data["results"]) == {"saturation/deflate"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_yjs_baseline_ref_head(tmp_path: Path) -> None:
    data = _run_ab("bench_yjs.py", "target", tmp_path, 200)
    assert set(data["results"]) == {"target"}
    for by_system in data["results"].values():
        for run in by_system["colony-baseline"]["runs"]:
            assert run["unacked"] == 0  # the baseline's writers saw their updates echoed


def test_cli_module_of_either_layout(tmp_path: Path) -> None:
    """The grouped layout (relay/ops/cli.py) and the flat one before it (relay/cli.py)."""
    assert cli_module(ROOT) == "relay.ops.cli"
    old = tmp_path / "old"
    (old / "relay").mkdir(parents=True)
    (old / "relay" / "cli.py").write_text("")
    assert cli_module(old) == "relay.cli"
    (old / "relay" / "ops").mkdir()
    (old / "relay" / "ops" / "cli.py").write_text("")
    assert cli_module(old) == "relay.ops.cli"
    with pytest.raises(RuntimeError):
        cli_module(tmp_path / "nothing")
