"""``colony demo``: a relay on the embedded default with scripted agents co-editing a document,
and (``relay.ops.demo_coord``) running an auction, vouching and a task tree beside it.

The agents run in this process but talk to the relay over real WebSockets with their own
keys, exactly like remote agents. Each publishes a profile (``agent/<key>``, kind
``agent.profile``) so the viewer can show names, then they play the script of
``relay.ops.demo_script`` into ``doc/demo``: the outliner writes the headings, two writers type
their sections at the same time, the reviewer comments each finished paragraph in place and the
editor fixes words; the CRDT merges the concurrent edits. The script ends; the relay keeps
serving (for the viewer) until ``--duration`` is over or Ctrl-C.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collab.client import Client
from collab.directory import register
from collab.doc import Doc
from collab.keys import Keypair

from relay.core.config import Config
from relay.ops.demo_coord import AUCTION, TASK, Cast, run_scenes
from relay.ops.demo_script import ROLES, check_document, concurrency, play, team, typing_together
from relay.ops.runner import serving

FEED = "doc/demo"


def say(line: str) -> None:
    print(f"  [{FEED}] {line}", flush=True)


async def agent(url: str, name: str, names: list[str], pace: float, all_flushed: asyncio.Barrier,
                relay_head: Callable[[], int], acked: list[int], timeout: float,
                together: asyncio.Barrier | None = None) -> str:
    """Play ``name``'s part of the script; then, once every agent's edits are acked, catch up and
    return the text."""
    key = Keypair.generate()
    async with Client(url, key) as client:
        await register(client, name, ROLES.get(name, ROLES["writer"]), ["doc.edit"])
        async with Doc(client, FEED) as doc:
            await doc.synced(30)
            await play(name, names, doc, pace, say, timeout, together)
            acked.append(await doc.flushed(30))
            await asyncio.wait_for(all_flushed.wait(), timeout)
            await doc.wait_seq(relay_head(), 30)
            return str(doc.text)


def script_timeout(pace: float) -> float:
    """How long one agent may wait for another's part (the whole script takes about 20 paces)."""
    return 60 + 60 * pace


async def _edit_and_scenes(urls: list[str], cast: Cast, n_agents: int, pace: float,
                           relay_head: Callable[[], int] | None) -> tuple[list[Any], bool, int]:
    """Run the doc agents (round-robin over ``urls``) and the coordination scenes (on the first URL)
    to the end of their scripts; the agents' final texts (or exceptions), whether the scenes passed,
    and the doc feed's head the agents caught up to.

    ``relay_head`` is the doc feed's head at the relay; None: the highest seq any agent was acked."""
    names = team(n_agents)
    barrier = asyncio.Barrier(len(names))
    together = typing_together(names)
    acked: list[int] = []

    def head() -> int:
        return relay_head() if relay_head is not None else max(acked, default=0)

    scenes = asyncio.create_task(run_scenes(urls[0], cast, pace))
    tasks = [asyncio.create_task(agent(urls[i % len(urls)], n, names, pace, barrier, head, acked,
                                       script_timeout(pace), together))
             for i, n in enumerate(names)]
    try:
        texts = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        try:
            scenes_ok = await asyncio.wait_for(scenes, 120 + 60 * pace)
        except BaseException as exc:
            print(f"demo: the coordination scenes did not finish: {exc!r}")
            logging.getLogger(__name__).debug("the coordination scenes did not finish", exc_info=exc)
            scenes.cancel()
            scenes_ok = False
    return texts, scenes_ok, head()


def _report(texts: list[Any], seq: int, final: str, scenes_ok: bool, names: list[str]) -> int:
    errors = [t for t in texts if isinstance(t, BaseException)]
    if errors:
        print(f"demo: {len(errors)} agent(s) failed: {errors[0]!r}")
        return 1
    converged = all(t == final for t in texts)
    print(f"\n--- {FEED} at seq {seq} ({'all agents converged' if converged else 'NOT CONVERGED'}) ---")
    print(final)
    problems = check_document(final, names)
    print("--- the document reads as scripted: every heading once and in order, each paragraph under its"
          " heading, each comment right after its line ---" if not problems
          else "--- the document is NOT as scripted: " + "; ".join(problems) + " ---")
    print(f"--- coordination: {'every scene ended as scripted' if scenes_ok else 'a scene FAILED'} ---", flush=True)
    return 0 if converged and scenes_ok and not problems else 1


def _banner(urls: list[str], names: list[str], cast: Cast, duration: float | None) -> None:
    url = urls[0]
    print(f"  watch it live:   {url}/#{FEED}")
    print(f"  agents overview: {url}/#@agents")
    print(f"  coordination:    {url}/#{AUCTION}  {url}/#{TASK}  {url}/#vouch/global")
    print(f"  read the doc:    colony doc cat {FEED} --relay {url}")
    print(f"  follow records:  colony tail {FEED} --relay {url}")
    print(f"  verify the log:  colony replay {FEED} --verify --relay {url}")
    for i, u in enumerate(urls):
        on = [n for j, n in enumerate(names) if j % len(urls) == i]
        print(f"  on {u}: {', '.join(on) if on else 'no doc agent'}"
              + ("; the coordination scenes" if i == 0 else ""))
    print(f"  {FEED}: {concurrency(names)}")
    print(f"  coordination agents: {cast.names_line()}")
    print("The relay keeps serving after the script: press Ctrl-C to stop." if duration is None
          else f"Stopping {duration:g} s after the start (or when the script ends, if later).", flush=True)


async def _linger(start: float, duration: float | None) -> None:
    """Keep the relay (and the viewer) up after the script: until Ctrl-C, or ``duration`` from ``start``."""
    loop = asyncio.get_running_loop()
    if duration is None:
        print("The script is done; the relay keeps serving. Press Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()
        return
    await asyncio.sleep(max(0.0, start + duration - loop.time()))


async def _relay_doc(url: str, seq: int, timeout: float = 30) -> tuple[int, str]:
    """The doc feed's (seq, text) as the relay at ``url`` has it, once it has caught up to ``seq``:
    a fresh reader subscribes (snapshot + backlog) and waits for that record, no polling."""
    async with Client(url, Keypair.generate()) as reader, Doc(reader, FEED) as doc:
        await doc.synced(timeout)
        if doc.seq < seq:
            await doc.wait_seq(seq, timeout)
        return doc.seq, str(doc.text)


async def run_agents(relays: list[str], operator: Keypair, n_agents: int, duration: float | None,
                     pace: float, shown: list[str] | None = None) -> int:
    """``colony demo --relay URL ...``: only the scripted agents, against relays already running;
    it ends with the script (or at ``duration``, if later).
    The scenes' stake grants need ``operator`` to be one of the relays' ``--operator`` keys.
    ``shown``: the URL a person opens for each relay (``--show-url``), printed in the banner."""
    start = asyncio.get_running_loop().time()
    urls = [u.rstrip("/") for u in relays]
    cast = Cast(operator=operator)
    print(f"Colony demo: scripted agents against {', '.join(urls)} (operator key {operator.public_hex})")
    _banner([u.rstrip("/") for u in shown] if shown else urls, team(n_agents), cast,
            duration if duration is not None else 0)
    texts, scenes_ok, head = await _edit_and_scenes(urls, cast, n_agents, pace, None)
    seq, final = await _relay_doc(urls[0], head)
    rc = _report(list(texts), seq, final, scenes_ok, team(n_agents))
    if duration is not None:
        await _linger(start, duration)
    return rc


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
            start = asyncio.get_running_loop().time()
            url = running.url
            print(f"Colony demo: relay on {url} (data in {data})")
            _banner([url], team(n_agents), cast, duration)

            def relay_head() -> int:
                return running.relay.hub.feeds[FEED].seq

            texts, scenes_ok, _ = await _edit_and_scenes([url], cast, n_agents, pace, relay_head)
            head = running.relay.hub.feeds[FEED]
            rc = _report(list(texts), head.seq, head.ns.view(head.state)["text"], scenes_ok, team(n_agents))
            await _linger(start, duration)
            return rc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
