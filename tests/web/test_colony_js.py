"""web/colony.js (the viewer's canonical JSON, signature and chain checks) against the spec's
test vectors, in Node (the same checks run in Chromium in test_viewer.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


NODE = shutil.which("node")
CHECKS = Path(__file__).with_name("vectors_check.js")


def test_colony_js_reproduces_the_vectors() -> None:
    assert NODE, "needs Node.js (scripts/test installs it)"
    out = subprocess.run([NODE, str(CHECKS)], capture_output=True, text=True, timeout=60, check=False)  # type: ignore[list-item]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failures"] == [], out.stderr
    assert result["passed"] > 150 and out.returncode == 0
