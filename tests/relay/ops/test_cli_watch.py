"""``colony watch PREFIX`` as a real subprocess against a real relay: what it prints (a signed
watcher hears of its members feed, an anonymous one does not) and its exit codes."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from collab.client import Client
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running, serving
from tests.conftest import make_config
from tests.relay.ops.test_cli import colony


async def start_watch(*args: str) -> asyncio.subprocess.Process:
    """``colony watch ARGS``, returned once it says it is watching (its stderr's first line)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "watch", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    assert proc.stderr is not None
    first = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert first.startswith(b"# watching"), first
    return proc


async def test_watch_prints_announcements_its_key_may_read(tmp_path: Path) -> None:
    async with serving(make_config(tmp_path / "r")) as relay:  # the backend is the relay's concern
        await _prints(relay, tmp_path)


async def _prints(relay: Running, tmp_path: Path) -> None:
    key = Keypair.generate()
    key_file = key.save(tmp_path / "k.key")
    signed = await start_watch("club/", "--relay", relay.url, "--key", str(key_file), "--json", "--count", "2")
    anon = await start_watch("club/", "--relay", relay.url, "--count", "1")
    async with Client(relay.url, key) as c:
        await c.publish("club/secret", "feed.policy", {"policy": "members"})
        await c.publish("club/open", "club.say", {})
    out, _ = await asyncio.wait_for(signed.communicate(), 30)
    assert signed.returncode == 0
    lines = [json.loads(x) for x in out.decode().splitlines()]
    assert [(x["feed"], x["seq"], x["kind"]) for x in lines] == [("club/secret", 1, "feed.policy"),
                                                                 ("club/open", 1, "club.say")]
    assert set(lines[0]) == {"feed", "seq", "head", "kind", "rtime"}
    out, _ = await asyncio.wait_for(anon.communicate(), 30)
    assert anon.returncode == 0
    [text] = out.decode().splitlines()  # human form: time, seq, kind, feed, head
    assert text.split()[1:4] == ["1", "club.say", "club/open"]


async def test_watch_exit_codes(tmp_path: Path) -> None:
    async with serving(make_config(tmp_path / "r", limits=Limits(max_watches=0))) as run:
        (bad, _, bad_err), (down, _, down_err), (refused, _, refused_err) = await asyncio.gather(
            colony("watch", "Auction/", "--relay", run.url),
            colony("watch", "auction/", "--relay", "http://127.0.0.1:1"),
            colony("watch", "auction/", "--relay", run.url))
    assert bad == 2 and "prefix" in bad_err
    assert down == 3 and "http://127.0.0.1:1" in down_err
    assert refused == 1 and "limit_exceeded" in refused_err
