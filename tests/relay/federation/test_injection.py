"""A home relay whose records are bad (a compromised store) is caught by its mirrors: a record
with a bad author signature or a bad receipt is refused, a fork (a different, validly signed
record at a seq already mirrored) is detected from the heads; each raises an alarm in the
mirror's relay/alarms feed with the evidence. Three relay processes, SQLite stores (the test
edits the home's database file while it is stopped)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.client import Client
from collab.events import Event, Record
from collab.keys import Keypair
from collab.replay import fetch_records
from tests.conftest import Backend
from tests.procs import start_relay_proc
from tests.wait import eventually
from tests.redis_server import free_port
from relay.core.routing import Member, Routing

FAST = {"backoff_base": 0.02, "backoff_max": 0.3}


@pytest.fixture
def backend() -> Backend:
    return Backend("sqlite")  # the test edits the home's SQLite file


class Three:
    def __init__(self, tmp: Path, interval: float = 0.2) -> None:
        self.tmp, self.interval = tmp, interval  # the relays' --sync-interval
        self.keys = {n: Keypair.generate() for n in "abc"}
        self.ports = {n: free_port() for n in "abc"}
        self.procs: dict[str, Any] = {}
        for n, k in self.keys.items():
            k.save(tmp / f"{n}.key")

    def url(self, n: str) -> str:
        return f"http://127.0.0.1:{self.ports[n]}"

    def home(self, feed: str) -> str:
        r = Routing(Member(self.keys["a"].public_hex, self.url("a")),
                    tuple(Member(self.keys[n].public_hex, self.url(n)) for n in "bc"))
        key = r.home(feed).key
        return next(n for n, k in self.keys.items() if k.public_hex == key)

    async def start(self, n: str) -> None:
        args = ["--port", str(self.ports[n]), "--public-url", self.url(n), "--relay-key", str(self.tmp / f"{n}.key"),
                "--sync-interval", str(self.interval)]
        for m in "abc":
            if m != n:
                args += ["--peer", f"{self.url(m)}#{self.keys[m].public_hex}"]
        self.procs[n] = await start_relay_proc(self.tmp / n, *args)

    async def stop(self, n: str) -> None:
        await self.procs.pop(n).stop()

    def db(self, n: str) -> sqlite3.Connection:
        return sqlite3.connect(self.tmp / n / "colony.db")


@pytest.fixture
async def three(tmp_path: Path) -> Any:
    t = Three(tmp_path)
    for n in "abc":
        await t.start(n)
    try:
        yield t
    finally:
        for n in list(t.procs):
            await t.stop(n)


async def _alarms(url: str, kind: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []

    async def found() -> bool:
        recs = await fetch_records(url, "relay/alarms")
        hits[:] = [r["event"] for r in recs if r["event"]["kind"] == kind]
        return bool(hits)

    await eventually(found, timeout, f"a {kind} alarm at {url}")
    return hits


def _feed_homed_at(t: Three, node: str, prefix: str) -> str:
    return next(f for f in (f"{prefix}{i}" for i in range(500)) if t.home(f) == node)


async def _publish(t: Three, node: str, feed: str, n: int) -> None:
    async with Client(t.url(node), Keypair.generate(), **FAST) as c:
        for i in range(n):
            await c.publish(feed, "note", {"i": i})


@pytest.mark.parametrize("tamper", ["author_signature", "receipt"])
async def test_a_bad_record_from_the_home_is_refused_and_alarmed(three: Three, tamper: str) -> None:
    t = three
    feed = _feed_homed_at(t, "c", "note/inj")
    await _publish(t, "c", feed, 3)
    await t.stop("c")
    with t.db("c") as db:
        (data,) = db.execute("SELECT data FROM records WHERE feed=? AND seq=2", (feed,)).fetchone()
        rec = json.loads(data)
        if tamper == "author_signature":
            rec["event"]["body"] = {"i": 999}  # the author never signed this
        else:
            rec["rsig"] = ("0" if rec["rsig"][0] != "0" else "1") + rec["rsig"][1:]
        db.execute("UPDATE records SET data=? WHERE feed=? AND seq=2", (json.dumps(rec, separators=(",", ":")), feed))
    await t.start("c")
    async with httpx.AsyncClient(timeout=5) as http:
        await http.get(f"{t.url('a')}/feeds/{feed}")  # a local reader: a starts mirroring the feed
    [alarm] = (await _alarms(t.url("a"), "alarm.invalid"))[:1]
    assert alarm["author"] == t.keys["a"].public_hex  # relay-signed by the mirror
    assert alarm["body"]["feed"] == feed and alarm["body"]["seq"] == 2
    assert alarm["body"]["peer"] == t.keys["c"].public_hex
    assert alarm["body"]["theirs"]["event"]["body"] == rec["event"]["body"]  # the evidence
    mirrored = list(await fetch_records(t.url("a"), feed))
    assert [r["seq"] for r in mirrored] == [1]  # nothing past the bad record was stored
    async with httpx.AsyncClient(timeout=5) as http:
        health = (await http.get(f"{t.url('a')}/health")).json()
    assert health["federation"]["alarms"] >= 1


async def test_a_fork_of_an_already_mirrored_seq_raises_an_equivocation_alarm(three: Three) -> None:
    t = three
    feed = _feed_homed_at(t, "c", "note/fork")
    await _publish(t, "c", feed, 3)
    async with httpx.AsyncClient(timeout=5) as http:
        await http.get(f"{t.url('a')}/feeds/{feed}")

        async def mirrored() -> bool:
            return len(await fetch_records(t.url("a"), feed)) >= 3

        await eventually(mirrored, 20, "a to mirror c's three records")
    await t.stop("c")
    # the home re-signs a different record 3: valid signatures, but a second history
    with t.db("c") as db:
        (data,) = db.execute("SELECT data FROM records WHERE feed=? AND seq=3", (feed,)).fetchone()
        old = Record.from_wire(json.loads(data))
        evil = Event.create(Keypair.generate(), feed, "note", {"i": "forged"})
        forged = Record.seal(t.keys["c"], evil, 3, old.prev)
        db.execute("UPDATE records SET data=?, id=?, hash=? WHERE feed=? AND seq=3",
                   (json.dumps(forged.to_wire(), separators=(",", ":")), evil.id, forged.hash, feed))
        db.execute("DELETE FROM snapshots WHERE feed=?", (feed,))  # else it resumes from its old head
    await t.start("c")
    async with httpx.AsyncClient(timeout=5) as http:
        await http.get(f"{t.url('c')}/feeds/{feed}")  # the home loads it; its heads now show the fork
    alarms = await _alarms(t.url("a"), "alarm.equivocation")
    body = alarms[0]["body"]
    assert body["feed"] == feed and body["seq"] == 3 and body["peer"] == t.keys["c"].public_hex
    assert body["ours"]["event"]["id"] == old.event.id
    assert body["theirs"]["hash"] == forged.hash
    # the mirror kept its own history
    assert [r["event"]["id"] for r in await fetch_records(t.url("a"), feed)][2] == old.event.id


async def test_agents_cannot_write_alarms(three: Three) -> None:
    from collab.errors import RelayError

    async with Client(three.url("a"), Keypair.generate(), **FAST) as c:
        with pytest.raises(RelayError) as err:
            await c.publish("relay/alarms", "alarm.equivocation", {"fake": True})
    assert err.value.code == "unauthorized"
