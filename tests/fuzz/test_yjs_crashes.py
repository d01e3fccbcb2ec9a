"""Regression data: every input of tests/data/yjs_crashes still crashes pycrdt as its manifest
says (run in a child process). When a pycrdt release fixes one, this fails: then check the
relay's handling (the sandbox) still holds, and move the input to the "fixed in" list of the
README rather than deleting it."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pycrdt
import pytest

from tests.fuzz.pycrdt_runner import PycrdtRunner
from tests.fuzz.yjs_mutate import CRASH_DIR, load

MANIFEST = json.loads((CRASH_DIR / "manifest.json").read_text())
INPUTS = load(CRASH_DIR)


@pytest.fixture(scope="module")
def runner() -> Iterator[PycrdtRunner]:
    with PycrdtRunner(timeout=20.0) as r:
        yield r


def test_the_data_is_complete() -> None:
    # a_*.json: inputs of the sandbox's own search, in their own format (tests/collab/yjs_inputs.py)
    files = {p.name + ("/" if p.is_dir() else "") for p in CRASH_DIR.iterdir()
             if not (p.name.startswith("a_") and p.suffix == ".json")} - {"README.md", "manifest.json"}
    assert files == set(MANIFEST)
    kinds = [e["kind"] for e in MANIFEST.values()]
    assert kinds.count("segfault") >= 2 and kinds.count("panic") >= 4
    assert any(path.startswith("seq-") for path in MANIFEST)
    assert {e["pycrdt"] for e in MANIFEST.values()} == {pycrdt.__version__}


@pytest.mark.parametrize("path", sorted(MANIFEST))
def test_input_still_crashes_pycrdt(runner: PycrdtRunner, path: str) -> None:
    entry, parts = MANIFEST[path], INPUTS[path]
    got = runner.run(parts[-1], parts[:-1], (entry["op"],))[-1]
    assert got.kind == entry["kind"], (path, got)
    if entry["kind"] == "panic":
        assert got.detail == entry["detail"]
    if len(parts) > 1:  # a sequence: the last update alone does not crash; only after the others
        alone = runner.run(parts[-1], [], ("apply",))[-1]
        assert not alone.crashed, (path, alone)
