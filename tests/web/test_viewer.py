"""The browser viewer (web/) in a real headless Chromium, against a real relay with real agents.

Chromium is Debian's ``chromium`` package (scripts/test installs it), driven by Playwright for
Python over CDP; Playwright never downloads a browser here. Waits use ``wait_for_function``
(no fixed sleeps). Screenshots go to the test's tmp_path.

These tests are pinned to the SQLite backend (the ``backend`` fixture below overrides the
parametrized one from tests/conftest.py): the viewer only speaks HTTP and the WebSocket
protocol, which behave the same on both backends, and a browser test is the slowest kind in
the suite; the endpoint the viewer adds (GET /feeds/{feed}/state) is tested on both backends
in tests/relay/endpoints/test_http_state.py.
"""
from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc as YDoc
from pycrdt import Text

from collab import frames
from collab.client import Client
from collab.doc import Doc
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from collab.replay import fetch_records, replay
from relay.ops.runner import Running
from tests.conftest import Backend

CHROMIUM = "/usr/bin/chromium"  # Debian's package (a wrapper script around the real binary)
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
CHECKS_JS = Path(__file__).with_name("vectors_check.js")

import playwright.async_api as playwright_api  # noqa: E402  -- scripts/test installs it (never skipped)

assert Path(CHROMIUM).exists(), "needs Debian's chromium package (scripts/test installs it)"


@pytest.fixture
def backend() -> Backend:
    return Backend("sqlite")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_viewer(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # long main-thread tasks, for the responsiveness check
    await page.add_init_script("""
        window.__long = [];
        new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
          .observe({ type: "longtask", buffered: true });
    """)
    await page.goto(url)
    return page, errors


async def wait_js(page: Any, expr: str, arg: Any = None, timeout: float = 20.0) -> Any:
    return await page.wait_for_function(expr, arg=arg, timeout=timeout * 1000)


async def doc_text(page: Any) -> str:
    return await page.eval_on_selector("#doc", "e => e.textContent")  # type: ignore[no-any-return]


class Agent:
    """A real agent: its own key and connection, a profile in agent/<key>, a Doc on the feed."""

    def __init__(self, url: str, name: str, feed: str) -> None:
        self.url, self.name, self.feed, self.key = url, name, feed, Keypair.generate()
        self.client: Client | None = None
        self.doc: Doc | None = None

    async def start(self) -> Agent:
        self.client = await Client(self.url, self.key).__aenter__()
        await self.client.publish(f"agent/{self.key.public_hex}", "agent.profile",
                                  {"name": self.name, "description": f"{self.name} writes",
                                   "capabilities": ["doc.edit"]})
        self.doc = await Doc(self.client, self.feed).__aenter__()
        await self.doc.synced(10)
        return self

    async def stop(self) -> None:
        if self.doc is not None:
            await self.doc.__aexit__(None, None, None)
        if self.client is not None:
            await self.client.aclose()


async def settle(agents: list[Agent], relay: Running) -> str:
    """Wait until every edit is acked and every agent has applied the whole feed; the text."""
    head = max([await a.doc.flushed(10) for a in agents])  # type: ignore[union-attr]
    for a in agents:
        await a.doc.wait_seq(head, 10)  # type: ignore[union-attr]
    texts = {str(a.doc) for a in agents}
    assert len(texts) == 1, "agents did not converge"
    rt = relay.relay.hub.feeds[agents[0].feed]
    assert rt.seq == head and rt.ns.view(rt.state)["text"] in texts
    return texts.pop()


def vectors() -> dict[str, Any]:
    return {n: json.loads((VECTORS / f"{n}.json").read_text()) for n in
            ("canonical", "ids", "keys", "events", "invalid_events", "records", "ed25519")}


async def test_viewer_live_doc_participants_timeline_and_time_travel(relay: Running, browser: Any,
                                                                      tmp_path: Path) -> None:
    feed = "doc/notes"
    agents = [await Agent(relay.url, n, feed).start() for n in ("ada", "bob", "cyd")]
    try:
        rng = random.Random(4)
        for i in range(9):  # phase 1: turns, appending lines
            a = agents[i % 3]
            a.doc.text.insert(len(str(a.doc.text)), f"{a.name} line {i}\n")  # type: ignore[union-attr]
            acked = await a.doc.flushed(10)  # type: ignore[union-attr]
            for b in agents:
                await b.doc.wait_seq(acked, 10)  # type: ignore[union-attr]
        early_text = await settle(agents, relay)
        early_seq = relay.relay.hub.feeds[feed].seq
        for i in range(12):  # phase 2: concurrent edits at random places
            for a in agents:
                text = str(a.doc)
                a.doc.text.insert(rng.randrange(len(text) + 1), f"[{a.name} {i}]")  # type: ignore[union-attr]
        final = await settle(agents, relay)
        head = relay.relay.hub.feeds[feed].seq

        page, errors = await open_viewer(browser, relay.url + "/#" + feed)
        # the merged document
        await wait_js(page, "t => document.querySelector('#doc').textContent === t", final)
        # participants, by the names from their agent/<key> profiles
        names = sorted(a.name for a in agents)
        await wait_js(page, "n => JSON.stringify([...document.querySelectorAll('#participants .chip')]"
                            ".map(c => c.textContent).sort()) === JSON.stringify(n)", names)
        # the timeline: newest first, authors by name, every signature and chain link verified
        await wait_js(page, "h => { const T = window.viewer.T; return T.recs.length === h && "
                            "T.recs.every(e => e.sig === 1 && e.chain === 1); }", head)
        rows = await page.eval_on_selector_all("#tl-rows .row:not([hidden])", """rows => rows.map(r => ({
            seq: +r.dataset.seq, verified: r.dataset.verified,
            author: r.querySelector('.author').textContent, kind: r.querySelector('.kind').textContent}))""")
        assert rows[0]["seq"] == head and [r["seq"] for r in rows] == list(range(head, head - len(rows), -1))
        assert all(r["verified"] == "yes" and r["author"] in names and r["kind"] == "doc.update" for r in rows)
        assert "FAILED" not in await page.inner_text("#tl-summary")

        # live: an agent types while we watch
        agents[1].doc.text.insert(0, "LIVE EDIT\n")  # type: ignore[union-attr]
        final = await settle(agents, relay)
        await wait_js(page, "t => document.querySelector('#doc').textContent === t", final)
        # who wrote what (web/authors.js): every character in its author's span, even the
        # concurrent inserts at random places
        await wait_js(page, "t => { const d = document.querySelector('#doc'); "
                            "return d.dataset.authored === 'yes' && d.textContent === t; }", final)
        spans = await page.eval_on_selector_all("#doc span.au", "ss => ss.map(s => [s.textContent, s.dataset.author])")
        by: list[str] = []
        for part, key in spans:
            by += [key] * len(part)
        checked = 0
        for a in agents:
            mine = [f"{a.name} line {i}" for i in range(9) if agents[i % 3] is a]
            for frag in [f"[{a.name} {i}]" for i in range(12)] + mine:
                at = final.find(frag)  # a later concurrent insert may have split it: check the intact ones
                if at >= 0:
                    assert set(by[at:at + len(frag)]) == {a.key.public_hex}, frag
                    checked += 1
        assert checked > 30
        at = final.index("LIVE EDIT\n")
        assert set(by[at:at + 10]) == {agents[1].key.public_hex}
        await wait_js(page, "h => document.querySelector('#tl-rows .row').dataset.seq == h",
                      relay.relay.hub.feeds[feed].seq)

        # time travel, with the keyboard on the slider: Home = seq 0, then one step per seq
        slider = page.locator("#tt")
        await slider.focus()
        await slider.press("Home")
        await wait_js(page, "() => document.querySelector('#doc').dataset.mode === 'past' && "
                            "document.querySelector('#doc').dataset.seq === '0'")
        assert await doc_text(page) == ""
        for _ in range(early_seq):
            await slider.press("ArrowRight")
        await wait_js(page, "s => document.querySelector('#doc').dataset.seq === String(s)", early_seq)
        assert await doc_text(page) == early_text
        assert f"seq {early_seq} of" in await page.inner_text("#tt-label")
        # a middle seq, checked against an independent local replay of the verified log
        records = await fetch_records(relay.url, feed)
        mid = (early_seq + head) // 2
        await slider.evaluate("(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", mid)
        await wait_js(page, "s => document.querySelector('#doc').dataset.seq === String(s)", mid)
        assert await doc_text(page) == replay(records, at=mid).view()["text"]
        assert await page.eval_on_selector("#tl-rows .row.selected", "r => +r.dataset.seq") == mid
        await page.screenshot(path=tmp_path / "viewer-time-travel.png")
        await page.click("#tt-live")
        await wait_js(page, "t => document.querySelector('#doc').dataset.mode === 'live' && "
                            "document.querySelector('#doc').textContent === t", final)

        # the feed list: the doc with its head and participant count, agents by name
        await wait_js(page, "h => document.querySelector('#feeds-doc li[data-feed=\"doc/notes\"] .seq')"
                            ".textContent === '#' + h", relay.relay.hub.feeds[feed].seq)
        assert (await page.inner_text("#feeds-doc li.active .pp")).startswith("3")
        await wait_js(page, "n => JSON.stringify([...document.querySelectorAll('#feeds-agent li .fname')]"
                            ".map(e => e.textContent).sort()) === JSON.stringify(n)", names)

        # the page's verifier against the spec's test vectors, including tampered records
        await page.add_script_tag(path=str(CHECKS_JS))
        result = await page.evaluate("v => colonyVectorChecks(window.Colony, v)", vectors())
        assert result["failures"] == [] and result["passed"] > 150
        await page.screenshot(path=tmp_path / "viewer.png")
        assert errors == []
    finally:
        for a in agents:
            await a.stop()


async def test_viewer_flags_tampered_records(relay: Running, browser: Any, tmp_path: Path) -> None:
    """Records altered in storage after the relay sealed them show as not verified."""
    feed = "chat/tamper"
    async with Client(relay.url, Keypair.generate()) as client:
        for i in range(6):
            await client.publish(feed, "chat.msg", {"text": f"message {i}"})
    db = sqlite3.connect(relay.relay.storage.path)  # type: ignore[attr-defined]
    try:
        def alter(seq: int, fn: Any) -> None:
            (data,) = db.execute("SELECT data FROM records WHERE feed=? AND seq=?", (feed, seq)).fetchone()
            rec = json.loads(data)
            fn(rec)
            db.execute("UPDATE records SET data=? WHERE feed=? AND seq=?", (json.dumps(rec), feed, seq))

        alter(2, lambda r: r["event"]["body"].update(text="forged"))  # the author never signed this
        alter(4, lambda r: r.update(rtime=r["rtime"] + 1))  # the relay's receipt no longer verifies...
        db.commit()  # ...and record 5's prev is not the hash of this record 4
    finally:
        db.close()
    page, errors = await open_viewer(browser, relay.url + "/#" + feed)
    await wait_js(page, "() => { const T = window.viewer.T; return T.recs.length === 6 && "
                        "T.recs.every(e => e.sig !== 0 && e.chain !== 0); }")
    state = await page.evaluate("() => window.viewer.T.recs.map(e => [e.seq, e.sig, e.chain])")
    assert state == [[1, 1, 1], [2, -1, 1], [3, 1, 1], [4, -1, 1], [5, 1, -1], [6, 1, 1]]
    marks = await page.eval_on_selector_all(
        "#tl-rows .row:not([hidden])", "rs => rs.map(r => [+r.dataset.seq, r.dataset.verified, "
        "r.querySelector('.sig').textContent, r.querySelector('.chain').textContent])")
    assert sorted(marks) == [[1, "yes", "✓", "✓"], [2, "no", "✗", "✓"], [3, "yes", "✓", "✓"],
                             [4, "no", "✗", "✓"], [5, "no", "✓", "✗"], [6, "yes", "✓", "✓"]]
    assert "3 FAILED" in await page.inner_text("#tl-summary")
    assert await page.is_hidden("#doc-panel")  # a chat feed has no document
    await page.click("#tl-rows .row[data-seq='2']")
    assert "id is not the SHA-256 of the signing bytes" in await page.inner_text("#detail")
    await page.screenshot(path=tmp_path / "viewer-tampered.png")
    assert errors == []


# -- scale: 100 agents present, 10,000 records ------------------------------------------------

async def seed_big_doc(relay: Running, feed: str, keys: list[Keypair], n: int, mark: int) -> tuple[str, str]:
    """Append n signed doc.update records straight to storage (fast); (text at mark, final)."""
    ydoc = YDoc()
    text = ydoc.get("text", type=Text)
    updates: list[bytes] = []
    ydoc.observe(lambda e: updates.append(e.update))
    rng = random.Random(10)
    storage = relay.relay.storage
    relay_key = relay.relay.hub.relay_key
    head, seq, batch, at_mark = GENESIS, 0, [], ""
    words = ["alpha ", "beta ", "gamma ", "delta\n", "epsilon ", "zeta "]
    size = 0
    while seq < n:
        word = rng.choice(words)
        text.insert(rng.randrange(size + 1) if seq % 7 else size, word)
        size += len(word)
        ev = Event.create(keys[seq % len(keys)], feed, "doc.update", {"update": b64(updates.pop())}, ctx=seq)
        seq += 1
        rec = Record.seal(relay_key, ev, seq, head)
        head = rec.hash
        batch.append((rec, frames.encode(rec.to_wire())))
        if seq == mark:
            at_mark = str(text)
        if len(batch) == 500:
            await storage.append(feed, seq - len(batch), batch)
            batch = []
    if batch:
        await storage.append(feed, seq - len(batch), batch)
    return at_mark, str(text)


@pytest.mark.slow
async def test_viewer_stays_responsive_with_100_agents_and_10000_records(relay: Running, browser: Any,
                                                                       tmp_path: Path) -> None:
    feed, n, mark = "doc/big", 10_000, 5_000
    keys = [Keypair.generate() for _ in range(100)]
    at_mark, _ = await seed_big_doc(relay, feed, keys, n, mark)
    # 100 real agents: a profile each, all subscribed to the doc (present), none re-reading it
    clients: list[Client] = []
    try:
        async def join(i: int, key: Keypair) -> Client:
            c = await Client(relay.url, key).__aenter__()
            await c.publish(f"agent/{key.public_hex}", "agent.profile", {"name": f"agent-{i:03d}", "description": "",
                                                                         "capabilities": []})
            sub = await c.subscribe(feed, since=n, on_record=lambda r: None)
            await sub.wait_synced(30)
            return c

        for i in range(0, 100, 20):
            clients += await asyncio.gather(*(join(j, keys[j]) for j in range(i, i + 20)))
        rt = relay.relay.hub.feeds[feed]
        for _ in range(200):
            if len(rt.present) == 100:
                break
            await asyncio.sleep(0.05)
        assert len(rt.present) == 100
        final = rt.ns.view(rt.state)["text"]

        t0 = time.monotonic()
        page, errors = await open_viewer(browser, relay.url + "/#" + feed)
        await wait_js(page, "t => document.querySelector('#doc').textContent === t", final, timeout=30)
        await wait_js(page, "() => document.querySelectorAll('#participants .chip').length === 100 && "
                            "[...document.querySelectorAll('#participants .chip')]"
                            ".every(c => c.textContent.startsWith('agent-'))",
                      timeout=30)
        await wait_js(page, "h => document.querySelector('#tl-rows .row').dataset.seq == h", n, timeout=30)
        loaded = time.monotonic() - t0

        # a live edit by a real Doc agent reaches the top of the timeline and the text quickly
        async with Client(relay.url, keys[0]) as writer, Doc(writer, feed) as doc:
            await doc.synced(30)
            t1 = time.monotonic()
            doc.text.insert(0, "FRESH LINE\n")
            seq = await doc.flushed(10)
            await wait_js(page, "s => document.querySelector('#tl-rows .row').dataset.seq == s", seq, timeout=10)
            row_latency = time.monotonic() - t1
            await wait_js(page, "() => document.querySelector('#doc').textContent.startsWith('FRESH LINE\\n')",
                          timeout=10)
            doc_latency = time.monotonic() - t1

        # scroll to the oldest record: pages of 1,000 load on demand, the DOM stays small
        t2 = time.monotonic()
        await wait_js(page, """() => {
            const tl = document.querySelector('#tl'); tl.scrollTop = tl.scrollHeight;
            return window.viewer.T.lo === 1 && window.viewer.T.recs.length === tl.scrollHeight / 24 &&
              [...document.querySelectorAll('#tl-rows .row:not([hidden])')].some(r => r.dataset.seq === '1'); }""",
                      timeout=60)
        scrolled = time.monotonic() - t2
        dom_rows = await page.eval_on_selector_all("#tl-rows .row", "rs => rs.length")
        dom_size = await page.evaluate("() => document.getElementsByTagName('*').length")
        assert dom_rows < 100 and dom_size < 2500
        # a jump through the list renders within a frame or two
        jump_ms = await page.evaluate("""async () => {
            const tl = document.querySelector('#tl'), times = [];
            for (const f of [0.5, 0.1, 0.9, 0.3]) {
              const t = performance.now();
              tl.scrollTop = f * tl.scrollHeight;
              await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
              times.push(performance.now() - t);
            }
            return Math.max(...times); }""")

        # time travel on the big doc: the relay replays 5,000 records
        t3 = time.monotonic()
        await page.locator("#tt").evaluate("(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", mark)
        await wait_js(page, "s => document.querySelector('#doc').dataset.seq === String(s)", mark, timeout=30)
        travel = time.monotonic() - t3
        assert await doc_text(page) == at_mark

        # every record gets verified in the background without freezing the page
        await wait_js(page, "() => window.viewer.T.recs.every(e => e.sig === 1 && e.chain === 1)", timeout=120)
        verified = time.monotonic() - t0
        longest = await page.evaluate("() => Math.max(0, ...window.__long)")
        await page.screenshot(path=tmp_path / "viewer-10k.png")
        print(f"\n10k records, 100 agents: loaded {loaded:.2f}s, live row {row_latency * 1000:.0f}ms, "
              f"doc {doc_latency * 1000:.0f}ms, scrolled to seq 1 in {scrolled:.2f}s, jump {jump_ms:.0f}ms, "
              f"time travel {travel:.2f}s, all {n + 1} verified {verified:.2f}s after opening, "
              f"longest task {longest:.0f}ms, "
              f"DOM {dom_size} elements / {dom_rows} rows")
        assert loaded < 15 and row_latency < 3.0 and doc_latency < 3.0
        assert jump_ms < 500
        # verification yields between small batches: no frozen page (verifying the 10k records in one
        # go blocks the page for seconds; the suite's other worker shares the 2 cores, so a few
        # hundred ms for one task is the machine, not the viewer)
        assert longest < 1000
        assert errors == []
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
