"""Retention with compaction: ``colony compact`` on real relays and stores (relay/ops/compact.py)."""
from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.doc import Doc
from collab.events import Snapshot
from collab.keys import Keypair
from collab.replay import fetch_log, replay
from relay.ops.backup import verify_and_import
from relay.ops.runner import serving
from relay.storage.redis import feed_key
from tests.conftest import Backend, make_config
from tests.relay.ops.test_backup import colony, open_store, store_args

FEED = "doc/retained"
EDITS = 50
KEEP = 10


async def edit(url: str, n: int, start: int = 0) -> None:
    async with Client(url, Keypair.generate(), reconnect=False) as c:
        async with Doc(c, FEED) as doc:
            await doc.synced(30)
            for i in range(start, start + n):
                with doc.ydoc.transaction():
                    doc.text.insert(len(doc.text), f"w{i} ")
                await doc.flushed(30)


async def info(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        return (await http.get(f"{url}/feeds/{FEED}")).json()  # type: ignore[no-any-return]


async def drop_cache_snapshot(backend: Backend, data: Path, site: str) -> None:
    """Make the relay load from the base (not from its newer cache snapshot)."""
    if backend.name == "sqlite":
        with sqlite3.connect(data / "colony.db") as db:
            db.execute("DELETE FROM snapshots")
    else:
        import redis.asyncio as aioredis

        assert backend.redis_url
        r = aioredis.Redis.from_url(backend.redis_url)
        await r.delete(feed_key(f"{backend.prefix}-{site}", FEED, "snap"))
        await r.aclose()


@pytest.fixture
async def compacted(tmp_path: Path, backend: Backend) -> dict[str, Any]:
    data = tmp_path / "src"
    async with serving(make_config(data, backend, "src")) as running:
        await edit(running.url, EDITS)
        before = await info(running.url)
    assert before["seq"] == EDITS
    rc, out, err = await colony("compact", FEED, "--keep", str(KEEP), "--relay-key", str(data / "relay.key"),
                                *store_args(backend, data, "src"))
    assert rc == 0, err
    assert f"base at {EDITS - KEEP}, {EDITS - KEEP} records deleted" in out
    await drop_cache_snapshot(backend, data, "src")
    return {"data": data, "before": before}


async def test_compact_keeps_head_state_and_chain(compacted: dict[str, Any], tmp_path: Path,
                                                  backend: Backend) -> None:
    before, data = compacted["before"], compacted["data"]
    m = EDITS - KEEP
    async with serving(make_config(data, backend, "src")) as running:
        now = await info(running.url)
        assert (now["seq"], now["head"], now["state"]) == (before["seq"], before["head"], before["state"])
        async with httpx.AsyncClient(timeout=30) as http:
            body = (await http.get(f"{running.url}/feeds/{FEED}/events", params={"since": 0})).json()
            later = (await http.get(f"{running.url}/feeds/{FEED}/events", params={"since": m + 3})).json()
        assert body["base"]["seq"] == m and Snapshot.from_wire(body["base"]).verify()
        assert [r["seq"] for r in body["records"]] == list(range(m + 1, EDITS + 1))
        assert body["records"][0]["prev"] == body["base"]["head"]
        assert "base" not in later and later["records"][0]["seq"] == m + 4

        base, recs = await fetch_log(running.url, FEED)
        result = replay(recs, feed=FEED, base=base)
        assert result.verified, result.anomalies
        assert (result.seq, result.head) == (before["seq"], before["head"])
        assert result.view() == before["state"]
        rc, out, err = await colony("replay", FEED, "--verify", "--relay", running.url)
        assert rc == 0, err
        assert out.strip() == before["state"]["text"].strip()

        # a tampered base (its state changed) is refused
        forged = dict(base or {})
        forged["state"] = base64.b64encode(b"\x00" + base64.b64decode(forged["state"])).decode()
        bad = replay(recs, feed=FEED, base=forged)
        assert not bad.verified and "bad_signature" in bad.kinds()

        # a native subscriber behind the base (but not far enough for the usual snapshot) gets one
        snaps: list[Snapshot] = []
        seen: list[int] = []
        async with Client(running.url, Keypair.generate(), reconnect=False) as c:
            sub = await c.subscribe(FEED, since=m - 5, on_snapshot=snaps.append,
                                    on_record=lambda r: seen.append(r.seq))
            await sub.wait_synced(30)
        assert snaps and snaps[0].verify() and snaps[0].seq >= m
        assert all(s > snaps[0].seq for s in seen)

        # a records-only subscriber (a federation mirror) behind the base: the base frame, then the tail
        class Mirror:
            key = None
            records_only = True
            reads_any = True

            def __init__(self) -> None:
                self.frames: list[dict[str, Any]] = []

            def deliver(self, frame: str) -> None:
                self.frames.append(json.loads(frame))

            async def deliver_wait(self, frame: str) -> None:
                self.deliver(frame)

            def deliver_shared(self, shared: Any) -> None:
                for frame in shared.parts:
                    self.deliver(frame)

        rt = await running.relay.hub.runtime(FEED)
        mirror = Mirror()
        await rt.subscribe(mirror, 3)
        for _ in range(100):
            if any(f["t"] == "synced" for f in mirror.frames):
                break
            await asyncio.sleep(0.05)
        rt.unsubscribe(mirror)
        kinds = [f["t"] for f in mirror.frames]
        assert kinds[0] == "snapshot" and mirror.frames[0]["snap"]["seq"] == m
        assert [f["rec"]["seq"] for f in mirror.frames if f["t"] == "rec"] == list(range(m + 1, EDITS + 1))
        assert kinds.index("synced") == KEEP + 1

        # a new client syncs the same text, and a new edit continues the chain
        async with Client(running.url, Keypair.generate(), reconnect=False) as c:
            async with Doc(c, FEED) as doc:
                await doc.synced(30)
                assert str(doc.text) == before["state"]["text"]
                with doc.ydoc.transaction():
                    doc.text.insert(0, "again ")
                await doc.flushed(30)
        base, recs = await fetch_log(running.url, FEED)
        assert recs[-1]["seq"] == EDITS + 1 and recs[-1]["prev"] == before["head"]
        result = replay(recs, feed=FEED, base=base)
        assert result.verified and result.view()["text"] == "again " + before["state"]["text"]
        # compacting again (relay stopped below) builds on the old base
    rc, out, err = await colony("compact", "--all", "--keep", "5", "--relay-key", str(data / "relay.key"),
                                *store_args(backend, data, "src"))
    assert rc == 0, err
    assert f"{FEED}: head {EDITS + 1}, base at {EDITS - 4}" in out


async def test_compact_refuses_other_namespaces(tmp_path: Path, backend: Backend) -> None:
    data = tmp_path / "n"
    async with serving(make_config(data, backend, "n")) as running:
        async with Client(running.url, Keypair.generate(), reconnect=False) as c:
            for i in range(5):
                await c.publish("notes/x", "note", {"i": i})
    rc, _, err = await colony("compact", "notes/x", "--keep", "1", "--relay-key", str(data / "relay.key"),
                              *store_args(backend, data, "n"))
    assert rc == 1 and "only doc/ feeds" in err


async def test_export_import_compacted(compacted: dict[str, Any], tmp_path: Path, backend: Backend) -> None:
    before, data = compacted["before"], compacted["data"]
    out = tmp_path / "backup.jsonl"
    rc, _, err = await colony("export", "--all", "--out", str(out), *store_args(backend, data, "src"))
    assert rc == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[1]["feed"] == FEED and lines[1]["base"]["seq"] == EDITS - KEEP
    assert lines[-1]["count"] == KEEP and lines[-1]["heads"][FEED]["hash"] == before["head"]
    target = store_args(backend, tmp_path / "dst", "dst")
    rc, stdout, err = await colony("import", str(out), *target)
    assert rc == 0, err
    assert f"{FEED}: {KEEP} records imported" in stdout
    rc, stdout, err = await colony("import", str(out), *target)
    assert rc == 0 and f"0 records imported ({KEEP} already present)" in stdout, (stdout, err)
    async with serving(make_config(tmp_path / "dst", backend, "dst")) as running:
        now = await info(running.url)
        assert (now["seq"], now["head"], now["state"]) == (before["seq"], before["head"], before["state"])
        base, recs = await fetch_log(running.url, FEED)
        assert replay(recs, feed=FEED, base=base).verified
    # a forged base line is refused before anything is written
    lines[1]["base"]["head"] = "0" * 64
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in lines))
    async with open_store(backend, tmp_path / "dst2", "dst2") as storage:
        with open(bad, encoding="utf-8") as fp:  # noqa: ASYNC230 - a small local file read by the code under test
            with pytest.raises(Exception, match="base"):
                await verify_and_import(storage, fp)
        assert await storage.head(FEED) is None



async def test_time_travel_on_a_compacted_feed(compacted: dict[str, Any], backend: Backend) -> None:
    """GET /feeds/{feed}/state?at=: below the base it is 410 compacted; from the base on it is
    replayed from the base's state, and matches the text the edits had at that seq."""
    m = EDITS - KEEP
    async with serving(make_config(compacted["data"], backend, "src")) as running:
        async with httpx.AsyncClient(timeout=30) as http:
            gone = await http.get(f"{running.url}/feeds/{FEED}/state", params={"at": m - 1})
            at_base = (await http.get(f"{running.url}/feeds/{FEED}/state", params={"at": m})).json()
            later = (await http.get(f"{running.url}/feeds/{FEED}/state", params={"at": m + 4})).json()
    assert gone.status_code == 410 and gone.json()["error"] == "compacted"
    # each edit appended "w{i} " as its own record: the state at seq s holds edits 0..s-1
    assert (at_base["at"], at_base["state"]["text"]) == (m, "".join(f"w{i} " for i in range(m)))
    assert (later["at"], later["state"]["text"]) == (m + 4, "".join(f"w{i} " for i in range(m + 4)))


async def test_compaction_leaves_a_poisonous_stored_record_out_instead_of_crashing(tmp_path: Path,
                                                                                     backend: Backend) -> None:
    """A doc feed stored before the Yjs sandbox may hold a record the engine panics on: compaction
    checks each update in the sandbox first, folds the rest and lists the record in the base."""
    from collab.events import GENESIS, Event, Record, b64
    from collab.namespaces.doc import quarantined_seqs
    from relay.ops.compact import compact_feed
    from tests.collab.yjs_inputs import crashers, edits

    crash = next(x for x in crashers(("panic",)) if x.name == "a_panic_after_apply")
    [later] = edits("kept", client=31)
    author, relay_key, feed = Keypair.generate(), Keypair.generate(), "doc/old-poison"
    recs, prev = [], GENESIS
    updates = (crash.base, crash.update, later, later)  # the last: a duplicate update, another event
    for seq, u in enumerate(updates, start=1):
        ev = Event.create(author, feed, "doc.update", {"update": b64(u)}, ts=1_700_000_000_000 + seq)
        rec = Record.seal(relay_key, ev, seq, prev, 1_700_000_000_000 + seq)
        prev = rec.hash
        recs.append((rec, json.dumps(rec.to_wire(), separators=(",", ":"))))
    async with open_store(backend, tmp_path / "data", "poison") as storage:
        await storage.append(feed, 0, recs)
        result = await compact_feed(storage, relay_key, feed, keep=1)
        assert (result.base, result.deleted) == (3, 3)
        base = await storage.load_base(feed)
        assert base is not None and base.snap.verify()
        assert quarantined_seqs(base.meta) == [2]
        from pycrdt import Doc as YDoc, Text

        doc: YDoc[Any] = YDoc()
        doc.apply_update(base.snap.state)
        assert "kept" in str(doc.get("text", type=Text))
