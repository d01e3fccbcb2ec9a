"""The package installs right (docs/operations.md, "Installing"): every lower bound of
pyproject.toml is pinned in constraints/minimums.txt, and the smoke tests pass on exactly those
versions; an agent's base install (no `relay` extra) runs collab and the client commands without
the server stack, and each server command then names the extra to install. Both run in real
venvs (tests/venvs.py), built once and cached."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from collab import __version__
from collab.keys import Keypair
from relay.ops.cli_common import RELAY_STACK
from tests.venvs import MINIMUMS, ROOT, env, requirements, venv

SMOKE = ["tests/test_smoke.py", "tests/relay/test_app.py", "tests/relay/ops/test_cli_feeds.py"]
TEST_RUNNER = ["pytest", "pytest-asyncio", "pytest-timeout"]  # what SMOKE needs of the `test` extra


def lower_bounds() -> dict[str, str]:
    out = {}
    runner = [r for r in requirements("test") if Requirement(r).name in TEST_RUNNER]
    for text in [*requirements("relay", "mcp"), *runner]:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{text}: give a lower bound (>=), tested by constraints/minimums.txt"
        out[req.name.lower().replace("_", "-")] = lows[0]
    return out


def pinned() -> dict[str, str]:
    out = {}
    for line in MINIMUMS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def test_the_minimums_pin_every_lower_bound() -> None:
    bounds, pins = lower_bounds(), pinned()
    assert set(pins) == set(bounds)
    assert {n: Version(v) for n, v in pins.items()} == {n: Version(v) for n, v in bounds.items()}


@pytest.mark.slow
def test_the_smoke_tests_pass_on_the_lowest_allowed_versions() -> None:
    reqs = [*requirements("relay", "mcp"), *TEST_RUNNER]
    python = venv(reqs, MINIMUMS)
    script = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    versions = json.loads(subprocess.run([python, "-c", script, *pinned()], capture_output=True, text=True,
                                         check=True, env=env()).stdout)
    assert {n: versions[n] for n in pinned()} == pinned()  # the venv holds exactly the minimums
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


AGENT_CHECK = """
import importlib.util, sys
import collab, collab.agent, collab.client, collab.doc, relay
from relay.ops.cli import main
missing = [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is None]
print(collab.__version__, relay.__version__, ",".join(missing))
"""


@pytest.mark.slow
def test_an_agent_install_runs_without_the_server_stack(tmp_path: Path) -> None:
    python = venv(requirements())
    stack = [*RELAY_STACK, "mcp", "jsonschema"]
    out = subprocess.run([python, "-c", AGENT_CHECK, ",".join(stack)], capture_output=True, text=True, env=env(),
                         check=True, timeout=60).stdout.split()
    assert out == [__version__, __version__, ",".join(stack)]  # collab imports; none of the stack is there

    def colony(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "relay.ops.cli", *args], capture_output=True, text=True, env=env(),
                              timeout=60, check=False)

    key = tmp_path / "a.key"
    Keypair.generate().save(key)
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        feeds = colony("feeds", "--relay", url)
        assert (feeds.returncode, feeds.stderr.splitlines()) == (3, [feeds.stderr.strip()]) and url in feeds.stderr
        for cmd in (["serve", "--port", "0"], ["demo", "--duration", "1"], ["export", "--all", "--out", "x"]):
            done = colony(*cmd)
            assert done.returncode == 2 and done.stdout == "", cmd
            assert done.stderr.count("\n") == 1 and "pip install 'colony[relay]'" in done.stderr, done.stderr
        mcp = colony("mcp", "--key", str(key), "--relay", url)
        assert mcp.returncode == 2 and "pip install 'colony[mcp]'" in mcp.stderr
    version = colony("--version")
    assert (version.returncode, version.stdout) == (0, f"colony {__version__}\n")


def test_both_packages_are_typed() -> None:
    assert (ROOT / "collab" / "py.typed").is_file() and (ROOT / "relay" / "py.typed").is_file()
    assert sys.modules["collab"].__version__ == __version__
