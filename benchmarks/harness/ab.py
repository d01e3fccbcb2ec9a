"""A/B mode (``--baseline-ref GIT_REF``): the same scenario against this tree's relay and a
relay built from another git ref, in one invocation.

:func:`baseline_tree` checks the ref out into a temporary ``git worktree`` (removed afterwards)
and tells which module has its command line: ``relay.ops.cli`` (the layout grouped by concern)
or ``relay.cli`` (the flat layout before it). Both relays are started the same way,
``python -m <cli> serve`` with ``PYTHONPATH`` set to their tree (:class:`Tree`), so neither
picks up an installed copy of the package; the benchmark scripts run them interleaved as two
systems, :data:`CURRENT` (``colony``) and :data:`BASELINE`, and :func:`summary` reports
current / baseline ratios of CPU per delivery and latency percentiles.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import COLONY, ROOT
from .procs import cli_module
from .stats import fmt, ratio

CURRENT = COLONY
BASELINE = "colony-baseline"


@dataclass(frozen=True)
class Tree:
    """A source tree a relay runs from: ``PYTHONPATH=path python -m cli serve ...``."""

    path: Path
    cli: str
    ref: str
    commit: str


def _git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def current_tree() -> Tree:
    """This checkout (uncommitted changes included)."""
    try:
        commit = _git("rev-parse", "HEAD")
    except RuntimeError:  # not a git checkout (e.g. an unpacked sdist): still benchmarkable
        commit = ""
    return Tree(ROOT, cli_module(ROOT), "working tree", commit)


@contextlib.contextmanager
def baseline_tree(ref: str) -> Iterator[Tree]:
    """``ref`` checked out in a temporary detached ``git worktree``; removed (and pruned from
    the repository's worktree list) on exit, also after an error."""
    commit = _git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="colony-baseline-"))
    path = tmp / "tree"
    try:
        _git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield Tree(path, cli_module(path), ref, commit)
    finally:
        if path.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                           capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, check=False)


def open_baseline(stack: contextlib.ExitStack, ref: str | None) -> Tree | None:
    """Enter :func:`baseline_tree` on ``stack`` (``None`` without a ref) and say where it is."""
    if ref is None:
        return None
    tree = stack.enter_context(baseline_tree(ref))
    print(f"[bench] baseline: {ref} = {tree.commit[:12]} ({tree.cli}) in {tree.path}", flush=True)
    return tree


def with_baseline(systems: list[str], ref: str | None) -> list[str]:
    """The systems to run: as asked, plus (with a ref) this tree's Colony and the baseline."""
    return systems if ref is None else [*dict.fromkeys([*systems, CURRENT]), BASELINE]


def code_dirs(baseline: Tree | None) -> dict[str, Path]:
    """Where each system's relay runs from, where not this tree."""
    return {BASELINE: baseline.path} if baseline is not None else {}


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--baseline-ref", metavar="GIT_REF", default=None,
                    help="also run every scenario against a relay from GIT_REF (a temporary git worktree), "
                         f"interleaved with this tree's, as system {BASELINE!r}; reports current/baseline ratios "
                         "of CPU per delivery and latency")


def ab_ratios(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """current / baseline of aggregated results (below 1: the current tree is cheaper/faster)."""
    return {
        "cpu_us_per_delivery": ratio(current["server"]["cpu_us_per_delivery"],
                                     baseline["server"]["cpu_us_per_delivery"]),
        "latency_p50": ratio(current["latency_ms"]["p50"], baseline["latency_ms"]["p50"]),
        "latency_p99": ratio(current["latency_ms"]["p99"], baseline["latency_ms"]["p99"]),
        "delivered_per_s": ratio(current["delivered_per_s"], baseline["delivered_per_s"]),
    }


def summary(results: dict[str, dict[str, dict[str, Any]]], current: Tree, baseline: Tree) -> dict[str, Any]:
    """The ``"baseline"`` block of a benchmark's JSON: both trees and the ratios per scenario."""
    return {
        "ref": baseline.ref, "commit": baseline.commit, "cli": baseline.cli,
        "current": {"path": str(current.path), "commit": current.commit, "cli": current.cli},
        "ratios": {label: ab_ratios(by[CURRENT], by[BASELINE])
                   for label, by in results.items() if CURRENT in by and BASELINE in by},
    }


def report(block: dict[str, Any]) -> list[str]:
    """One line per scenario: current/baseline ratios."""
    out = [(f"[bench] A/B: this tree ({block['current']['cli']}) / {block['ref']} "
            f"({block['commit'][:12]}, {block['cli']}):")]
    for label, q in block["ratios"].items():
        out.append(f"[bench]   {label}: CPU/delivery {fmt(q['cpu_us_per_delivery'], '.3f')}x, "
                   f"p99 {fmt(q['latency_p99'], '.3f')}x, p50 {fmt(q['latency_p50'], '.3f')}x, "
                   f"delivered/s {fmt(q['delivered_per_s'], '.3f')}x")
    return out
