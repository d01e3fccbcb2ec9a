"""One fuzz target under atheris (libFuzzer, coverage-guided) — the long run's engine.

    python -m tests.fuzz.atheris_main TARGET [libFuzzer flags, e.g. -max_total_time=60 CORPUS_DIR]

TARGET is a name of tests/fuzz/targets.py TARGETS, or ``yjs_sandbox`` (pycrdt in a child process
behind the YjsChecker interface). collab/ and relay/ are instrumented for coverage. An input that
breaks a property (an AssertionError, an exception outside the refusals) is written by libFuzzer
as ``crash-<sha1>`` under ``-artifact_prefix``. Needs ``pip install -e '.[relay,fuzz]'`` (scripts/fuzz).
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["collab", "relay"]):
    from tests.fuzz.targets import TARGETS, SandboxChecker, make_sandbox_target


def main() -> None:
    name, argv = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    target = make_sandbox_target(SandboxChecker()) if name == "yjs_sandbox" else TARGETS[name]
    sys.setrecursionlimit(5000)
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
