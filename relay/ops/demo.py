"""``colony demo``: a relay on the embedded default with scripted agents co-editing a document,
and (``relay.ops.demo_coord``) running an auction, vouching and a task tree beside it.

The agents run in this process but talk to the relay over real WebSockets with their own
keys, exactly like remote agents. Each publishes a profile (``agent/<key>``, kind
``agent.profile``) so the viewer can show names, then they take turns writing a short design
note into ``doc/demo``: the planner appends section headings, the writer fills them in, the
reviewer inserts comments at random places, concurrently, and the CRDT merges it all.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collab.client import Client
from collab.doc import Doc
from collab.keys import Keypair

from relay.core.config import Config
from relay.ops.demo_coord import Cast, run_scenes
from relay.ops.runner import serving

FEED = "doc/demo"

SCRIPTS: dict[str, tuple[str, list[str]]] = {
    "planner": ("breaks the work into sections", [
        "# Relay design note\n", "## Goals\n", "## Ordering\n", "## Storage\n", "## Open questions\n",
    ]),
    "writer": ("drafts paragraphs", [
        "Agents sign every event; the relay orders each feed and stores it before it acks.\n",
        "One seq per feed, chained by hashes, so any two parties can compare heads.\n",
        "SQLite with group commit by default; many processes can share Redis.\n",
        "Late joiners get a snapshot of the merged document plus a short tail.\n",
        "How should trust scores decay over time?\n",
    ]),
    "reviewer": ("comments in place", [
        "> reviewer: say what happens on a crash.\n",
        "> reviewer: +1, add numbers from the benchmark.\n",
        "> reviewer: who may read a members-only feed?\n",
    ]),
    "editor": ("tidies up", [
        "_(edited for clarity)_\n", "---\n",
    ]),
}


def _line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]


async def agent(url: str, name: str, role: str, lines: list[str], pace: float, stop: asyncio.Event,
                rng: random.Random, all_flushed: asyncio.Barrier, relay_head: Callable[[], int],
                acked: list[int] | None = None) -> str:
    """Edit until ``stop``; then, once every agent's edits are acked, catch up and return the text."""
    key = Keypair.generate()
    async with Client(url, key) as client:
        await client.publish(f"agent/{key.public_hex}", "agent.profile",
                             {"name": name, "description": role, "capabilities": ["doc.edit"]})
        async with Doc(client, FEED) as doc:
            await doc.synced(30)
            i = 0
            while not stop.is_set():
                line = lines[i % len(lines)]
                if i >= len(lines):
                    line = line.rstrip("\n") + f" ({i // len(lines) + 1})\n"
                text = str(doc.text)
                pos = rng.choice(_line_starts(text)) if name in ("reviewer", "editor") and text else len(text)
                doc.text.insert(pos, line)
                i += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), pace * rng.uniform(0.5, 1.5))
            seq = await doc.flushed(30)
            if acked is not None:
                acked.append(seq)
            await all_flushed.wait()
            await doc.wait_seq(relay_head(), 30)
            return str(doc.text)


def _team(n_agents: int) -> list[str]:
    names = list(SCRIPTS)[: max(1, n_agents)]
    while len(names) < n_agents:
        names.append(f"helper-{len(names)}")
    return names


async def _edit_and_scenes(urls: list[str], cast: Cast, n_agents: int, duration: float | None, pace: float,
                           relay_head: Callable[[], int] | None) -> tuple[list[Any], bool, int]:
    """Run the doc agents (round-robin over ``urls``) and the coordination scenes (on the first URL)
    until ``duration`` ends; the agents' final texts (or exceptions), whether the scenes passed, and the
    doc feed's head the agents caught up to.

    ``relay_head`` is the doc feed's head at the relay; None: the highest seq any agent was acked."""
    stop = asyncio.Event()
    names = _team(n_agents)
    rng = random.Random(7)
    barrier = asyncio.Barrier(len(names))
    acked: list[int] = []

    def head() -> int:
        return relay_head() if relay_head is not None else max(acked, default=0)

    scenes = asyncio.create_task(run_scenes(urls[0], cast, pace))
    tasks = [
        asyncio.create_task(agent(urls[i % len(urls)], n, *SCRIPTS.get(n, ("helps", SCRIPTS["writer"][1])), pace,
                                  stop, random.Random(rng.random()), barrier, head, acked))
        for i, n in enumerate(names)
    ]
    try:
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:
        stop.set()
        texts = await asyncio.gather(*tasks, return_exceptions=True)
        try:
            scenes_ok = await asyncio.wait_for(scenes, 120)
        except BaseException as exc:
            print(f"demo: the coordination scenes did not finish: {exc!r}")
            logging.getLogger(__name__).debug("the coordination scenes did not finish", exc_info=exc)
            scenes.cancel()
            scenes_ok = False
    return texts, scenes_ok, head()


def _report(texts: list[Any], seq: int, final: str, scenes_ok: bool) -> int:
    errors = [t for t in texts if isinstance(t, BaseException)]
    if errors:
        print(f"demo: {len(errors)} agent(s) failed: {errors[0]!r}")
        return 1
    converged = all(t == final for t in texts)
    print(f"\n--- {FEED} at seq {seq} ({'all agents converged' if converged else 'NOT CONVERGED'}) ---")
    print(final)
    print(f"--- coordination: {'every scene ended as scripted' if scenes_ok else 'a scene FAILED'} ---")
    return 0 if converged and scenes_ok else 1


def _banner(url: str, duration: float | None) -> None:
    print(f"  watch it live:   {url}/")
    print(f"  read the doc:    colony doc cat {FEED} --relay {url}")
    print(f"  follow records:  colony tail {FEED} --relay {url}")
    print(f"  verify the log:  colony replay {FEED} --verify --relay {url}")
    print(f"  coordination:    {url}/#auction/review-design-note  {url}/#task/quarterly-report  {url}/agents")
    print("Press Ctrl-C to stop." if duration is None else f"Running for {duration:g} s.", flush=True)


async def _relay_doc(url: str, seq: int, timeout: float = 30) -> tuple[int, str]:
    """The doc feed's (seq, text) as the relay at ``url`` has it, once it has caught up to ``seq``:
    a fresh reader subscribes (snapshot + backlog) and waits for that record, no polling."""
    async with Client(url, Keypair.generate()) as reader, Doc(reader, FEED) as doc:
        await doc.synced(timeout)
        if doc.seq < seq:
            await doc.wait_seq(seq, timeout)
        return doc.seq, str(doc.text)


async def run_agents(relays: list[str], operator: Keypair, n_agents: int, duration: float | None,
                     pace: float) -> int:
    """``colony demo --relay URL ...``: only the scripted agents, against relays already running.
    The scenes' stake grants need ``operator`` to be one of the relays' ``--operator`` keys."""
    urls = [u.rstrip("/") for u in relays]
    cast = Cast(operator=operator)
    print(f"Colony demo: scripted agents against {', '.join(urls)} (operator key {operator.public_hex})")
    _banner(urls[0], duration)
    texts, scenes_ok, head = await _edit_and_scenes(urls, cast, n_agents, duration, pace, None)
    seq, final = await _relay_doc(urls[0], head)
    return _report(list(texts), seq, final, scenes_ok)


async def run_demo(host: str, port: int, data: Path | None, n_agents: int, duration: float | None,
                   pace: float, operator: Keypair | None = None) -> int:
    tmp = None
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="colony-demo-"))
        data = tmp
    cast = Cast() if operator is None else Cast(operator=operator)
    config = Config(data_dir=data, host=host, port=port, operators=(cast.operator.public_hex,))
    try:
        async with serving(config) as running:
            url = running.url
            print(f"Colony demo: relay on {url} (data in {data})")
            _banner(url, duration)

            def relay_head() -> int:
                return running.relay.hub.feeds[FEED].seq

            texts, scenes_ok, _ = await _edit_and_scenes([url], cast, n_agents, duration, pace, relay_head)
            head = running.relay.hub.feeds[FEED]
            return _report(list(texts), head.seq, head.ns.view(head.state)["text"], scenes_ok)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
