"""The ``colony`` command line against a real relay subprocess."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from collab.keys import Keypair
from relay.ops.demo_script import expected, team
from tests.conftest import Backend
from tests.procs import RelayProc, start_relay_proc
from tests.wait import eventually


async def colony(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def relay_proc(tmp_path: Path, backend: Backend) -> AsyncIterator[RelayProc]:
    relay = await start_relay_proc(tmp_path / "data", backend=backend)
    yield relay
    await relay.stop()


async def test_keygen_writes_a_private_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "a.key"
    rc, out, _ = await colony("keygen", "--out", str(path))
    assert rc == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keypair.load(path).public_hex == out.strip()
    rc, _, err = await colony("keygen", "--out", str(path))
    assert rc == 2 and "exists" in err


async def test_append_cat_tail_replay(relay_proc: RelayProc, tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    Keypair.generate().save(key)
    env = {"COLONY_RELAY": relay_proc.url, "COLONY_KEY": str(key)}
    rc, out, err = await colony("doc", "append", "doc/notes", "hello ", env=env)
    assert rc == 0, err
    assert out.strip() == "1"
    rc, out, err = await colony("doc", "append", "doc/notes", "wörld 🌍", "--relay", relay_proc.url, "--key", str(key))
    assert (rc, out.strip()) == (0, "2"), err

    rc, out, _ = await colony("doc", "cat", "doc/notes", env=env)
    assert out == "hello wörld 🌍\n"
    rc, out, _ = await colony("doc", "cat", "doc/notes", "--json", env=env)
    doc = json.loads(out)
    assert doc["seq"] == 2 and doc["roots"] == {"text": "hello wörld 🌍"}

    tail = asyncio.create_task(colony("tail", "doc/notes", "--count", "2", "--json", env=env))
    # tail starts at the current head: wait until it is subscribed before appending
    async with httpx.AsyncClient() as http:

        async def subscribed() -> bool:
            return bool((await http.get(f"{relay_proc.url}/feeds/doc/notes")).json()["subscribers"] >= 1)

        await eventually(subscribed, 30, "colony tail to subscribe")
    for text in ("!", "?"):
        rc, _, err = await colony("doc", "append", "doc/notes", text, env=env)
        assert rc == 0, err
    rc, out, _ = await tail
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in lines] == [3, 4]
    assert all(r["event"]["kind"] == "doc.update" for r in lines)

    rc, out, err = await colony("replay", "doc/notes", "--verify", env=env)
    assert rc == 0, err
    assert out.strip() == "hello wörld 🌍!?"
    assert "verified" in err
    rc, out, _ = await colony("replay", "doc/notes", "--at", "1", env=env)
    assert out.strip() == "hello"


async def test_append_needs_a_key(relay_proc: RelayProc) -> None:
    rc, _, err = await colony("doc", "append", "doc/notes", "x", env={"COLONY_RELAY": relay_proc.url, "COLONY_KEY": ""})
    assert rc != 0 and "--key" in err


async def test_replay_verify_fails_on_a_tampered_log(tmp_path: Path) -> None:
    """SQLite only on purpose: the test edits the SQLite file behind the relay's back."""
    data = tmp_path / "data"
    key = tmp_path / "agent.key"
    Keypair.generate().save(key)
    relay = await start_relay_proc(data)
    env = {"COLONY_RELAY": relay.url, "COLONY_KEY": str(key)}
    for text in ("one ", "two ", "three"):
        assert (await colony("doc", "append", "doc/t", text, env=env))[0] == 0
    await relay.stop()
    # an operator (or a disk) changes a stored record behind the relay's back
    db = sqlite3.connect(data / "colony.db")
    (raw,) = db.execute("SELECT data FROM records WHERE feed='doc/t' AND seq=2").fetchone()
    rec = json.loads(raw)
    rec["rtime"] += 1
    db.execute("UPDATE records SET data=? WHERE feed='doc/t' AND seq=2", (json.dumps(rec),))
    db.commit()
    db.close()
    relay = await start_relay_proc(data)
    try:
        rc, _, err = await colony("replay", "doc/t", "--verify", env={"COLONY_RELAY": relay.url})
        assert rc == 1
        assert "VERIFICATION FAILED" in err and "seq 2" in err
    finally:
        await relay.stop()


async def test_demo_runs_and_converges(tmp_path: Path) -> None:
    rc, out, err = await colony("demo", "--port", "0", "--duration", "0", "--pace", "0.05",
                                "--data", str(tmp_path / "d"),
                                timeout=90)
    assert rc == 0, err
    assert "watch it live:   http://127.0.0.1:" in out and "/#@agents" in out
    assert "all agents converged" in out and "the document reads as scripted" in out
    body = out.split("all agents converged) ---\n", 1)[1]
    assert body.startswith(expected(team(5)))  # the default team: outliner, two writers, reviewer, editor
    # the coordination scenes ran to their scripted ends (relay.ops.demo_coord)
    assert "every scene ended as scripted" in out
    for line in ("relay awarded the review to ana", "dee wrote section 1 of 4 and checkpointed",
                 "relay expired ana (stake slashed); bo was promoted",
                 "planner accepted bo's review", "dee checkpointed 2 of 4 sections and crashed",
                 "relay flagged prose stalled; the planner reassigned it to eli",
                 "eli resumed prose from checkpoint {'sections': 2}", "task tree completed",
                 "agents vouched for each other"):
        assert line in out, line
