"""``colony demo`` as a person watching it sees it, in a real headless Chromium (same setup as
test_viewer.py): the document coloured by who wrote each part (web/authors.js: the records merged
with Yjs, each client id mapped to the key that signed it), and the banner's agents link opening the
viewer's Agents overview, not raw JSON."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.keys import Keypair
from relay.ops.demo import run_agents
from relay.ops.demo_script import SECTIONS, TITLE, expected, team
from tests.web.test_viewer import backend, browser, open_viewer, wait_js  # noqa: F401  (fixtures: sqlite, chromium)

pytestmark = pytest.mark.timeout(120)
FULL = team(5)


def link(out: str, label: str) -> str:
    m = re.search(rf"^  {label}:\s+(\S+)$", out, re.MULTILINE)
    assert m, f"no {label!r} line in the banner"
    return m.group(1)


async def test_the_demo_document_shows_who_wrote_each_part(start_relay: Any, browser: Any,  # noqa: F811
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    operator = Keypair.generate()
    relay = await start_relay(operators=(operator.public_hex,))
    assert await run_agents([relay.url], operator, 5, None, 0.05) == 0
    out = capsys.readouterr().out
    async with httpx.AsyncClient() as http:
        names = {a["key"]: a["name"] for a in (await http.get(f"{relay.url}/agents?limit=100")).json()["agents"]}
        # the banner's agents link is the viewer's page (HTML), not the directory's JSON
        overview = link(out, "agents overview")
        res = await http.get(overview)
        assert res.headers["content-type"].startswith("text/html") and "<title>Colony viewer" in res.text

    page, errors = await open_viewer(browser, link(out, "watch it live"))
    text = expected(FULL)
    await wait_js(page, "t => { const d = document.querySelector('#doc'); "
                        "return d.dataset.authored === 'yes' && d.textContent === t; }", text)
    spans = await page.eval_on_selector_all("#doc span.au", """ss => ss.map(s => ({t: s.textContent,
        key: s.dataset.author || '', c: s.style.getPropertyValue('--c'), color: getComputedStyle(s).color}))""")
    assert "".join(s["t"] for s in spans) == text
    assert all(s["key"] in names and s["c"] for s in spans)  # every part has a known author and a colour
    colour = {s["key"]: s["c"] for s in spans}
    assert all(colour[s["key"]] == s["c"] for s in spans)  # one colour per author,
    assert len(set(colour.values())) == len(colour) == len(FULL)  # and no two authors share one
    by: list[str] = []  # the author of each character
    for s in spans:
        by += [names[s["key"]]] * len(s["t"])
    assert set(by) == set(FULL)

    def authors(part: str, start: int = 0) -> set[str]:
        i = text.index(part, start)
        return set(by[i:i + len(part)])

    assert authors(TITLE) == {"outliner"}
    split = {"Goals": "writer", "Storage": "writer", "Ordering": "co-writer", "Open questions": "co-writer"}
    for s in SECTIONS:
        at = text.index(s.line + "\n")
        assert authors(s.line, at) == {"outliner"}
        paragraph = s.final(True)
        if s.edit is None:
            assert authors(paragraph, at) == {split[s.heading]}
        else:  # the editor's words are the editor's; the rest is the section's writer's
            new = s.edit[1]
            assert authors(new, at) == {"editor"}
            assert authors(paragraph[:paragraph.index(new)], at) <= {split[s.heading]}
        assert authors(s.comment, at) == {"reviewer"}
    # the legend above the text names every author in its colour
    # (names arrive from the directory after the colours: wait for them, a key prefix shows until then)
    await wait_js(page, "n => [...document.querySelectorAll('#doc-authors .chip')].map(c => c.textContent)"
                        ".sort().join('|') === n", "|".join(sorted(FULL)))
    legend = await page.eval_on_selector_all("#doc-authors .chip", "cs => cs.map(c => c.textContent)")
    assert sorted(legend) == sorted(FULL)
    await page.screenshot(path=tmp_path / "demo-doc.png")

    # the banner's agents link opens the Agents overview with every demo agent by name
    await page.goto(overview)
    await wait_js(page, "n => document.querySelectorAll('#agents-rows tr').length === n", len(names))
    assert await page.is_visible("#overview") and await page.is_hidden("#view")
    shown = await page.eval_on_selector_all("#agents-rows tr td:nth-child(2)", "ts => ts.map(t => t.textContent)")
    assert sorted(shown) == sorted(names.values())
    await page.screenshot(path=tmp_path / "demo-agents.png")
    assert errors == []
