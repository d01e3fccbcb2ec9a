"""The short seeded fuzz run of the suite: every target of tests/fuzz/targets.py on a bounded,
derandomized set of inputs (hypothesis: arbitrary bytes, and valid inputs of tests/fuzz/corpus.py
with byte edits), each input within a time bound. The long run is ``scripts/fuzz``."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab.lib0 import var_bytes, var_uint

from tests.fuzz.corpus import corpus
from tests.fuzz.targets import TARGETS, SandboxChecker, make_sandbox_target
from tests.fuzz.yjs_mutate import CRASH_DIR, load

SEEDED = settings(derandomize=True, max_examples=250, deadline=1000, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw: st.DrawFn, base: list[bytes]) -> bytes:
    """A valid input with a few byte edits: overwrite, insert, delete, or splice from another."""
    data = bytearray(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 3))
        if how == 0 and data:
            data[min(i, len(data) - 1)] = draw(st.integers(0, 255))
        elif how == 1:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif how == 2:
            del data[i:i + draw(st.integers(1, 8))]
        else:
            other = draw(st.sampled_from(base))
            j = draw(st.integers(0, len(other)))
            data[i:i] = other[j:j + draw(st.integers(1, 16))]
    return bytes(data)


def inputs(target: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), mutated(corpus(target)))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_seeded_inputs(name: str) -> None:
    target = TARGETS[name]
    for valid in corpus(name):
        target(valid)

    @SEEDED
    @given(inputs(name))
    def run(data: bytes) -> None:
        target(data)

    run()


@pytest.fixture(scope="module")
def checker() -> Iterator[SandboxChecker]:
    c = SandboxChecker(timeout=10.0)
    yield c
    c.close()


def _known_crashes() -> list[tuple[str, list[bytes]]]:
    """One saved input of each kind (single panic, sequence panic, segfault) from the regression data."""
    picked: dict[str, tuple[str, list[bytes]]] = {}
    for path, parts in sorted(load(CRASH_DIR).items()):
        kind = ("seq-" if len(parts) > 1 else "") + path.split("-")[0 if len(parts) == 1 else 1]
        picked.setdefault(kind, (path, parts))
    return sorted(picked.values())


def test_sandbox_target_on_known_crashes(checker: SandboxChecker) -> None:
    """The sandbox target on inputs that crash pycrdt: verdicts, no crash here, the sandbox answers after."""
    target = make_sandbox_target(checker)
    crashes = _known_crashes()
    assert len(crashes) >= 3, crashes
    for _path, parts in crashes:
        target(var_uint(len(parts)) + b"".join(var_bytes(p) for p in parts))


def test_sandbox_target_survives_seeded_inputs(checker: SandboxChecker) -> None:
    target = make_sandbox_target(checker)

    @settings(SEEDED, max_examples=40, deadline=None)
    @given(mutated(corpus("yjs_sandbox")))
    def run(data: bytes) -> None:
        target(data)

    run()


def test_crash_dir_is_the_documented_one() -> None:
    assert Path(CRASH_DIR).is_dir() and (Path(CRASH_DIR) / "manifest.json").is_file()
