"""Real Yjs (npm ``yjs`` + ``y-websocket``) against the relay: the pinned packages are installed
with ``npm ci`` into tests/interop/node_modules (gitignored) the first time they are needed."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _installed() -> bool:
    """node_modules matches package-lock.json (npm writes node_modules/.package-lock.json)."""
    marker = HERE / "node_modules" / ".package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= (HERE / "package-lock.json").stat().st_mtime


@pytest.fixture(scope="session")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        msg = "node and npm are needed for the Yjs interop tests (scripts/test installs them)"
        pytest.fail(msg)  # never skipped: a missing dependency is installed, not ignored
    if not _installed():
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.fail(f"npm ci failed in {HERE}:\n{proc.stdout}\n{proc.stderr}")
    return HERE / "node_modules"
