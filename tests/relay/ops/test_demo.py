"""relay/ops/demo.py: the scripted agents co-edit ``doc/demo`` over real WebSockets and converge
with the relay's document; the coordination scenes run beside them. (``colony demo`` end to end,
with its own relay, is in tests/relay/ops/test_cli.py.)"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from collab.keys import Keypair
from relay.ops.demo import FEED, SCRIPTS, _line_starts, _report, _team, run_agents
from relay.ops.runner import serving
from tests.conftest import Backend, make_config

pytestmark = pytest.mark.timeout(120)


def test_the_team_takes_the_scripted_roles_first() -> None:
    assert _team(2) == list(SCRIPTS)[:2]
    assert _team(0) == list(SCRIPTS)[:1]
    assert _team(6) == [*SCRIPTS, "helper-4", "helper-5"]


def test_line_starts() -> None:
    assert _line_starts("") == [0]
    assert _line_starts("a\nbc\n") == [0, 2, 5]


def test_the_report_fails_unless_everyone_converged_and_the_scenes_passed(capsys: pytest.CaptureFixture[str]) -> None:
    assert _report(["t", "t"], 4, "t", True) == 0
    assert "all agents converged" in capsys.readouterr().out
    assert _report(["t", "u"], 4, "t", True) == 1
    assert "NOT CONVERGED" in capsys.readouterr().out
    assert _report(["t"], 4, "t", False) == 1
    assert _report(["t", RuntimeError("lost")], 4, "t", True) == 1
    assert "1 agent(s) failed" in capsys.readouterr().out


async def test_the_agents_converge_with_the_relays_document(tmp_path: Path, backend: Backend,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    operator = Keypair.generate()
    cfg = make_config(tmp_path, backend, operators=(operator.public_hex,))
    async with serving(cfg) as running:
        assert await run_agents([running.url], operator, 3, 1.0, 0.1) == 0
        out = capsys.readouterr().out
        assert "all agents converged" in out and "every scene ended as scripted" in out
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{running.url}/feeds/{FEED}")).json()["state"]["text"]
        assert text in out and "# Relay design note" in text
