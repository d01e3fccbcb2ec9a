"""Backup and restore: ``colony export`` / ``colony import`` against real relays and stores."""
from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.doc import Doc
from collab.keys import Keypair
from collab.replay import fetch_records
from relay.ops.backup import FORMAT, BackupError, verify_and_import, write_export
from relay.ops.runner import serving
from relay.storage.base import Storage
from relay.storage.redis import RedisStorage
from relay.storage.sqlite import SqliteStorage
from tests.conftest import Backend, make_config

FEEDS = ["doc/plan", "notes/alpha", "notes/beta"]


async def colony(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def store_args(backend: Backend, data: Path, site: str) -> list[str]:
    if backend.name == "redis":
        assert backend.redis_url
        return ["--redis", backend.redis_url, "--redis-prefix", f"{backend.prefix}-{site}"]
    return ["--data", str(data)]


def open_store(backend: Backend, data: Path, site: str) -> Storage:
    if backend.name == "redis":
        assert backend.redis_url
        return RedisStorage(backend.redis_url, prefix=f"{backend.prefix}-{site}")
    return SqliteStorage(data)


async def populate(url: str) -> None:
    async with Client(url, Keypair.generate(), reconnect=False) as alice, \
            Client(url, Keypair.generate(), reconnect=False) as bob:
        async with Doc(alice, "doc/plan") as doc:
            await doc.synced(30)
            for word in ("backup ", "and ", "restore"):
                with doc.ydoc.transaction():
                    doc.text.insert(len(doc.text), word)
                await doc.flushed(30)
        for i in range(5):
            await alice.publish("notes/alpha", "note", {"i": i, "text": f"alpha {i} ✓"})
        await bob.publish("notes/beta", "note", {"hello": "world"})
        await alice.publish("notes/beta", "note", {"n": [1, 2, 3]})


async def snapshot_of(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for feed in FEEDS:
            info = (await http.get(f"{url}/feeds/{feed}")).json()
            recs = await fetch_records(url, feed, client=http)
            out[feed] = (info["seq"], info["head"], recs)
    return out


@pytest.fixture
async def exported(tmp_path: Path, backend: Backend) -> tuple[Path, dict[str, Any]]:
    """A relay with a few feeds, stopped, and exported with the CLI; returns (file, what it served)."""
    async with serving(make_config(tmp_path / "src", backend, "src")) as running:
        await populate(running.url)
        before = await snapshot_of(running.url)
    out = tmp_path / "backup.jsonl"
    rc, _, err = await colony("export", "--all", "--out", str(out), *store_args(backend, tmp_path / "src", "src"))
    assert rc == 0, err
    return out, before


async def test_export_import_roundtrip(exported: tuple[Path, dict[str, Any]], tmp_path: Path,
                                       backend: Backend) -> None:
    out, before = exported
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header, trailer = lines[0], lines[-1]
    assert header["format"] == FORMAT and header["feeds"] == FEEDS
    if backend.name == "sqlite":
        assert header["relay"] == Keypair.load(tmp_path / "src" / "relay.key").public_hex
    assert trailer["end"] is True and trailer["count"] == len(lines) - 2
    assert {f: (h["seq"], h["hash"]) for f, h in trailer["heads"].items()} == {
        f: (seq, head) for f, (seq, head, _) in before.items()}
    assert [(rl["feed"], rl["rec"]["seq"]) for rl in lines[1:-1]] == [
        (f, s) for f in FEEDS for s in range(1, before[f][0] + 1)]

    target = store_args(backend, tmp_path / "dst", "dst")
    rc, stdout, err = await colony("import", str(out), *target)
    assert rc == 0, err
    assert "doc/plan: 3 records imported" in stdout
    # idempotent: a second import of the same file writes nothing and succeeds
    rc, stdout, err = await colony("import", str(out), *target)
    assert rc == 0, err
    assert "0 records imported (3 already present)" in stdout

    async with serving(make_config(tmp_path / "dst", backend, "dst")) as running:
        after = await snapshot_of(running.url)
        assert after == before
        async with httpx.AsyncClient(timeout=30) as http:
            state = (await http.get(f"{running.url}/feeds/doc/plan/state")).json()
        assert "backup and restore" in json.dumps(state)
        # the restored feed continues its chain
        async with Client(running.url, Keypair.generate(), reconnect=False) as c:
            ack = await c.publish("notes/alpha", "note", {"after": "restore"})
        assert ack.seq == before["notes/alpha"][0] + 1
        recs = await fetch_records(running.url, "notes/alpha")
        assert recs[-1]["prev"] == before["notes/alpha"][1]


def _tamper_body(lines: list[str]) -> list[str]:
    obj = json.loads(lines[3])
    obj["rec"]["event"]["body"] = {"i": 99, "text": "forged"}
    return [*lines[:3], json.dumps(obj), *lines[4:]]


def _tamper_receipt(lines: list[str]) -> list[str]:
    obj = json.loads(lines[5])
    obj["rec"]["rtime"] += 1  # the relay's signature no longer covers it
    return [*lines[:5], json.dumps(obj), *lines[6:]]


def _tamper_rsig(lines: list[str]) -> list[str]:
    obj = json.loads(lines[2])
    rsig = obj["rec"]["rsig"]
    obj["rec"]["rsig"] = ("0" if rsig[0] != "0" else "1") + rsig[1:]
    return [*lines[:2], json.dumps(obj), *lines[3:]]


def _drop(lines: list[str]) -> list[str]:
    return [*lines[:5], *lines[6:]]


def _drop_last_of_feed(lines: list[str]) -> list[str]:  # the chain is intact: only the trailer notices
    i = max(n for n, line in enumerate(lines[1:-1], 1) if json.loads(line)["feed"] == "notes/beta")
    return [*lines[:i], *lines[i + 1:]]


def _reorder(lines: list[str]) -> list[str]:
    return [lines[0], lines[2], lines[1], *lines[3:]]


def _interleave(lines: list[str]) -> list[str]:  # feed order broken (a doc record after notes/)
    return [lines[0], *lines[2:-1], lines[1], lines[-1]]


def _trailer(lines: list[str]) -> list[str]:
    t = json.loads(lines[-1])
    t["heads"]["notes/alpha"]["hash"] = "f" * 64
    return [*lines[:-1], json.dumps(t)]


def _truncate(lines: list[str]) -> list[str]:
    return lines[:-1]


@pytest.mark.parametrize(("tamper", "needle"), [
    (_tamper_body, "doc/plan seq 3"), (_tamper_receipt, "notes/alpha seq 2"), (_tamper_rsig, "doc/plan seq 2"),
    (_drop, "notes/alpha seq 3"), (_drop_last_of_feed, "notes/beta"), (_reorder, "doc/plan seq 2"),
    (_interleave, "doc/plan"), (_trailer, "notes/alpha"), (_truncate, "trailer"),
])
async def test_tampered_export_is_refused(exported: tuple[Path, dict[str, Any]], tmp_path: Path, backend: Backend,
                                          tamper: Any, needle: str) -> None:
    out, _ = exported
    lines = out.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(tamper(lines)) + "\n")
    rc, _, err = await colony("import", str(bad), *store_args(backend, tmp_path / "dst", "dst"))
    assert rc == 1
    assert "refused" in err and needle in err, err
    async with open_store(backend, tmp_path / "dst", "dst") as store:
        assert await store.feeds("", 100) == []


async def test_import_refuses_a_different_feed_in_the_target(exported: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                             backend: Backend) -> None:
    out, _ = exported
    # the target relay already has a different notes/alpha
    async with serving(make_config(tmp_path / "dst", backend, "dst")) as running:
        async with Client(running.url, Keypair.generate(), reconnect=False) as c:
            await c.publish("notes/alpha", "note", {"other": True})
    rc, _, err = await colony("import", str(out), *store_args(backend, tmp_path / "dst", "dst"))
    assert rc == 1 and "notes/alpha seq 1" in err, err
    async with open_store(backend, tmp_path / "dst", "dst") as store:
        assert [h.feed for h in await store.feeds("", 100)] == ["notes/alpha"]
        assert (await store.head("notes/alpha")).seq == 1  # type: ignore[union-attr]


async def test_functions_roundtrip_named_feeds(exported: tuple[Path, dict[str, Any]], tmp_path: Path,
                                               backend: Backend) -> None:
    """write_export / verify_and_import directly: a subset of feeds, then a resumed import."""
    _, before = exported
    buf = io.StringIO()
    async with open_store(backend, tmp_path / "src", "src") as src:
        n = await write_export(src, ["notes/beta", "notes/alpha"], buf)
        with pytest.raises(BackupError, match="no such feed"):
            await write_export(src, ["notes/missing"], io.StringIO())
    assert n == before["notes/alpha"][0] + before["notes/beta"][0]
    async with open_store(backend, tmp_path / "f", "f") as dst:
        result = await verify_and_import(dst, buf)
        assert result.feeds == {"notes/alpha": 5, "notes/beta": 2}
        assert (await dst.head("notes/beta")).hash == before["notes/beta"][1]  # type: ignore[union-attr]
        again = await verify_and_import(dst, buf)
        assert again.written == 0 and again.skipped == {"notes/alpha": 5, "notes/beta": 2}
