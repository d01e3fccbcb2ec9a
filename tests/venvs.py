"""Real virtual environments for the packaging tests (tests/test_packaging.py): ``python -m venv``
(no system site-packages) with exactly the requirements given, installed by pip from the
registry (or pip's own wheel cache). Each is cached under ``$COLONY_TEST_VENVS`` (default
``~/.cache/colony-test-venvs``), keyed by the Python version, the requirements and the
constraints, so a later run reuses it: building one takes 20-60 s, reusing it nothing. The
project itself is not installed into them: commands run from this tree with ``PYTHONPATH``."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("COLONY_TEST_VENVS") or Path.home() / ".cache" / "colony-test-venvs")
MINIMUMS = ROOT / "constraints" / "minimums.txt"


def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        table: dict[str, Any] = tomllib.load(f)["project"]
    return table


def requirements(*extras: str) -> list[str]:
    """The base dependencies of pyproject.toml plus those of ``extras``."""
    p = project()
    return [*p["dependencies"], *(r for e in extras for r in p["optional-dependencies"][e])]


def venv(reqs: list[str], constraints: Path | None = None) -> Path:
    """The python of a cached venv holding ``reqs`` (under ``constraints``); built if missing."""
    blob = "\n".join([sys.version, *sorted(reqs), "--", constraints.read_text() if constraints else ""])
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    target = CACHE / key
    if (target / "ready").exists():
        return target / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=120)
    cmd = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(reqs)} failed:\n{done.stderr[-3000:]}")
    (tmp / "ready").touch()
    try:
        tmp.rename(target)  # the venv is used through `python -m` only: its scripts' shebangs may name tmp
    except OSError:  # another run built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "bin" / "python"


def env() -> dict[str, str]:
    """The environment for a venv's python: this tree on the path, nothing of the outer interpreter."""
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    out["PYTHONPATH"] = str(ROOT)
    out["PYTHONNOUSERSITE"] = "1"
    return out
