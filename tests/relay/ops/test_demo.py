"""relay/ops/demo.py: the scripted agents write ``doc/demo`` together over real
WebSockets, two writers typing at the same time, and the merged document reads like collaborative
writing (every heading once and in order, each followed by its paragraph, each comment right after
the line it is about, no fragment twice); the coordination scenes run beside them. (The script and
its checks alone are in test_demo_script.py; ``colony demo`` end to end, with its own relay, in
tests/relay/ops/test_cli.py.)"""
from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from collab.keys import Keypair
from relay.ops.demo import FEED, _report, run_agents
from relay.ops.demo_script import SECTIONS, check_document, expected, team
from tests.conftest import Backend
from tests.relay.ops.test_demo_script import structure_problems

pytestmark = pytest.mark.timeout(120)
FULL = team(5)


def test_the_report_fails_unless_everyone_converged_on_the_script_and_the_scenes_passed(
        capsys: pytest.CaptureFixture[str]) -> None:
    good = expected(FULL)
    assert _report([good, good], 4, good, True, FULL) == 0
    assert "all agents converged" in capsys.readouterr().out
    assert _report([good, "u"], 4, good, True, FULL) == 1
    assert "NOT CONVERGED" in capsys.readouterr().out
    assert _report([good], 4, good, False, FULL) == 1
    assert _report([good, RuntimeError("lost")], 4, good, True, FULL) == 1
    assert "1 agent(s) failed" in capsys.readouterr().out
    assert _report(["x"], 4, "x", True, FULL) == 1
    assert "NOT as scripted" in capsys.readouterr().out


async def test_the_agents_write_the_document_together(start_relay: Any, backend: Backend,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """On Redis the agents spread over two processes of one site (as in the Docker stack)."""
    operator = Keypair.generate()
    running = await start_relay("a", site="s", operators=(operator.public_hex,))
    urls = [running.url]
    if backend.name == "redis":
        urls.append((await start_relay("b", site="s", operators=(operator.public_hex,))).url)
    assert await run_agents(urls, operator, 5, None, 0.05) == 0
    out = capsys.readouterr().out
    assert "all agents converged" in out and "every scene ended as scripted" in out
    assert "writer (Goals, Storage) and co-writer (Ordering, Open questions) type at the same time" in out
    assert f"agents overview: {running.url}/#@agents" in out
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{running.url}/feeds/{FEED}/state")).json()["state"]["text"]
        records = (await http.get(f"{running.url}/feeds/{FEED}/events?limit=1000")).json()["records"]
        agents = (await http.get(f"{running.url}/agents?limit=100")).json()["agents"]
    assert structure_problems(text) == [] and check_document(text, FULL) == []
    assert text == expected(FULL) and text in out
    # every agent of the demo has its own name (one profile per key, no name twice)
    names = {a["key"]: a["name"] for a in agents}
    assert sorted(names.values()) == sorted([*FULL, "planner", "ana", "bo", "cy", "dee", "eli"])
    who = [names[r["event"]["author"]] for r in records]
    if len(urls) == 1:
        # concurrent: the writer's and the co-writer's edits interleave in the feed (w, c, w and c, w, c).
        # (Across two processes the other process's hand-off to the sequencer can delay a burst past
        # this fast pace; there the document checks above are what counts.)
        pair = [n for n in who if n in ("writer", "co-writer")]
        switches = sum(1 for a, b in itertools.pairwise(pair) if a != b)
        assert switches >= 3, " ".join(f"{n}@{r['rtime'] % 100000}" for n, r in zip(who, records, strict=True))
    # the outline came first, in order, all by the outliner
    assert who[:1 + len(SECTIONS)] == ["outliner"] * (1 + len(SECTIONS))
