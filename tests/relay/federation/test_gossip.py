"""Forks cannot hide: a home that shows two mirrors two different records at one seq, both
signed with its key, is caught by both mirrors within one sync interval, each alarm carrying
both records (its own, and the other mirror's, whose home signature the test checks). Twice:
three relay processes on SQLite (the test writes the forked records into the mirrors' stores, as
a home that signs whatever it likes could have sent them), and, on both backends, two real
mirrors of a home that is a hand-written /fed server holding the home's key (as an attacker who
controls the home would) and shows each mirror its own record 2."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from collab.events import GENESIS, Event, Record, receipt_bytes
from collab.keys import Keypair, verify
from collab.replay import fetch_records
from relay.federation.alarms import compact
from relay.federation.gossip import receipt_problem, signed_head
from relay.federation.link import peer_bytes
from relay.ops.runner import serving
from tests.conftest import Backend, make_config
from tests.redis_server import free_port
from tests.relay.federation.test_injection import Three, _feed_homed_at, _publish
from tests.wait import eventually

INTERVAL = 1.0  # the relays' --sync-interval


def _fork(t: Three, node: str, feed: str, rec: Record) -> None:
    """Replace ``node``'s stored head of ``feed`` with ``rec`` (``node`` is stopped)."""
    with t.db(node) as db:
        ev = rec.event
        db.execute("DELETE FROM records WHERE feed=? AND seq=?", (feed, rec.seq))
        db.execute("INSERT INTO records (feed, seq, id, kind, author, rtime, hash, data) VALUES (?,?,?,?,?,?,?,?)",
                   (feed, rec.seq, ev.id, ev.kind, ev.author, rec.rtime, rec.hash,
                    json.dumps(rec.to_wire(), separators=(",", ":"))))
        db.execute("UPDATE feeds SET seq=?, hash=?, rtime=? WHERE feed=?", (rec.seq, rec.hash, rec.rtime, feed))
        db.execute("DELETE FROM snapshots WHERE feed=?", (feed,))


async def _alarm(url: str, feed: str) -> dict[str, Any] | None:
    recs = await fetch_records(url, "relay/alarms")
    hits = [r["event"]["body"] for r in recs
            if r["event"]["kind"] == "alarm.equivocation" and r["event"]["body"]["feed"] == feed]
    return hits[0] if hits else None


def _check_evidence(body: dict[str, Any], home: Keypair, via: str, ours: Record, theirs: Record,
                    readable: bool = True) -> None:
    assert body["seq"] == ours.seq and body["peer"] == home.public_hex and body["via"] == via
    if readable:
        assert body["ours"] == ours.to_wire()  # our record, the whole of it
        assert body["theirs"] == theirs.to_wire()  # the other mirror's, read from it
    else:  # a members feed: relay/alarms is public, so the evidence is the home's signed receipts
        assert body["ours"] == compact(ours.to_wire())  # (no event body: it is not the public's to read)
        assert body["theirs"] == signed_head(theirs.feed, theirs.seq, theirs.hash, theirs.to_wire())
    rb = receipt_bytes(theirs.feed, theirs.seq, theirs.prev, theirs.event.id, theirs.rtime, home.public_hex)
    assert verify(bytes.fromhex(home.public_hex), rb, bytes.fromhex(body["theirs"]["rsig"]))
    assert ours.hash != theirs.hash


async def test_a_home_that_shows_two_mirrors_two_records_is_caught_by_both(tmp_path: Path) -> None:
    t = Three(tmp_path, INTERVAL)
    try:
        await asyncio.gather(*(t.start(n) for n in "abc"))
        feed = _feed_homed_at(t, "a", "note/pay")
        await _publish(t, "a", feed, 1)
        async with httpx.AsyncClient(timeout=5) as http:
            for n in "bc":
                await http.get(f"{t.url(n)}/feeds/{feed}")  # a local reader: b and c mirror the feed

            async def mirrored() -> bool:
                return all([len(await fetch_records(t.url(n), feed)) == 1 for n in "bc"])

            await eventually(mirrored, 10, "b and c to mirror record 1")
        await asyncio.gather(*(t.stop(n) for n in "abc"))

        # the home (its real key, from its key file) signs "pay bob" for b and "pay carol" for c
        home = Keypair.load(tmp_path / "a.key")
        with t.db("b") as db:
            (data,) = db.execute("SELECT data FROM records WHERE feed=? AND seq=1", (feed,)).fetchone()
        first = Record.from_wire(json.loads(data))
        payer = Keypair.generate()
        shown = {n: Record.seal(home, Event.create(payer, feed, "note", {"pay": who}), 2, first.hash)
                 for n, who in (("b", "bob"), ("c", "carol"))}
        for n, rec in shown.items():
            _fork(t, n, feed, rec)
        await asyncio.gather(t.start("b"), t.start("c"))  # the home stays away: only the mirrors talk
        async with httpx.AsyncClient(timeout=5) as http:
            for n in "bc":
                await http.get(f"{t.url(n)}/feeds/{feed}")  # both mirror the feed again, each its record 2
        alarms: dict[str, dict[str, Any]] = {}

        async def caught() -> bool:
            for n in "bc":
                if n not in alarms and (body := await _alarm(t.url(n), feed)) is not None:
                    alarms[n] = body
            return len(alarms) == 2

        # each mirror's next heads tick (at most one interval away) reaches the other
        await eventually(caught, INTERVAL + 1.0, "both mirrors to raise the equivocation alarm")
        for n, other in (("b", "c"), ("c", "b")):
            _check_evidence(alarms[n], home, t.keys[other].public_hex, shown[n], shown[other])
        async with httpx.AsyncClient(timeout=5) as http:
            for n in "bc":
                assert (await http.get(f"{t.url(n)}/health")).json()["federation"]["alarms"] >= 1
    finally:
        await asyncio.gather(*(t.stop(n) for n in list(t.procs)))


def test_a_passed_on_head_proves_a_fork_only_with_the_homes_signature() -> None:
    home, other = Keypair.generate(), Keypair.generate()
    rec = Record.seal(home, Event.create(Keypair.generate(), "note/x", "note", {"pay": "bob"}), 3, "0" * 64)
    head = signed_head("note/x", 3, rec.hash, rec.to_wire())
    assert receipt_problem(head, home.public_hex) is None
    assert receipt_problem(head, other.public_hex) == "the receipt is not the home's"
    moved = {**head, "rtime": head["rtime"] + 1}
    assert receipt_problem(moved, home.public_hex) == "the receipt does not hash to the head"
    forged = Record.seal(other, rec.event, 3, "0" * 64)
    assert receipt_problem({**head, "rsig": forged.rsig}, home.public_hex) == "the home's signature does not verify"
    assert receipt_problem({**head, "prev": "zz"}, home.public_hex) == "a malformed receipt"


class EquivocatingHome:
    """A /fed server with the home's key: every feed's record 1 is the same for all (a switch to
    ``members`` if ``members``), record 2 says "pay <name>" with the name ``shown`` gives the
    subscribing mirror's key."""

    def __init__(self, key: Keypair, shown: dict[str, str], members: bool) -> None:
        self.key, self.shown, self.members = key, shown, members
        self.author = Keypair.generate()
        self.recs: dict[tuple[str, str], list[Record]] = {}

    def records(self, feed: str, mirror: str) -> list[Record]:
        who = self.shown[mirror]
        if (feed, who) not in self.recs:
            ev = Event.create(self.author, feed, "feed.policy", {"policy": "members"}, ts=1) if self.members \
                else Event.create(self.author, feed, "note", {"n": 1}, ts=1)
            first = Record.seal(self.key, ev, 1, GENESIS, rtime=1)
            second = Record.seal(self.key, Event.create(self.author, feed, "note", {"pay": who}), 2, first.hash)
            self.recs[feed, who] = [first, second]
        return self.recs[feed, who]

    async def serve(self, ws: ServerConnection) -> None:
        nonce = os.urandom(32).hex()
        await ws.send(json.dumps({"t": "challenge", "nonce": nonce, "relay": self.key.public_hex}))
        hello = json.loads(await ws.recv())
        mirror = hello["key"]
        sig = self.key.sign(peer_bytes(hello["nonce"], mirror, self.key.public_hex)).hex()
        await ws.send(json.dumps({"t": "peer_ok", "sig": sig}))
        async for message in ws:
            for text in str(message).split("\n"):
                frame = json.loads(text)
                if frame["t"] == "sub":  # records only; no heads: each mirror sees a consistent home
                    for rec in self.records(frame["feed"], mirror)[frame["since"]:]:
                        await ws.send(json.dumps({"t": "rec", "feed": frame["feed"], "rec": rec.to_wire()}))


@pytest.mark.parametrize("members", [False, True], ids=["public", "members"])
async def test_a_home_signing_two_records_for_one_seq_is_caught_by_both_mirrors(tmp_path: Path, backend: Backend,
                                                                               members: bool) -> None:
    Keypair.generate().save(tmp_path / "home.key")
    home = Keypair.load(tmp_path / "home.key")  # the home's own key, as its attacker holds it
    keys = {n: Keypair.generate() for n in "bc"}
    ports = {n: free_port() for n in "bc"}
    url = {n: f"http://127.0.0.1:{ports[n]}" for n in "bc"}
    fork = EquivocatingHome(home, {keys["b"].public_hex: "bob", keys["c"].public_hex: "carol"}, members)
    feed = "note/pay"
    async with serve(fork.serve, "127.0.0.1", 0) as server:
        home_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        cfgs = {}
        for n, other in (("b", "c"), ("c", "b")):
            keys[n].save(tmp_path / n / "relay.key")
            cfg = make_config(tmp_path / n, backend, n, public_url=url[n], sync_interval=INTERVAL,
                              peers=(f"{home_url}#{home.public_hex}", f"{url[other]}#{keys[other].public_hex}"),
                              pins=(f"note/*={home.public_hex}",))
            cfgs[n] = dataclasses.replace(cfg, port=ports[n])
        async with serving(cfgs["b"]) as rb, serving(cfgs["c"]) as rc:
            async with httpx.AsyncClient(timeout=5) as http:
                for n in "bc":
                    await http.get(f"{url[n]}/feeds/{feed}")  # a local reader: b and c mirror the feed

                async def mirrored() -> bool:
                    heads = [await r.relay.hub.storage.head(feed) for r in (rb, rc)]
                    return all(h is not None and h.seq == 2 for h in heads)

                await eventually(mirrored, 10, "b and c to mirror both records")
            alarms: dict[str, dict[str, Any]] = {}

            async def caught() -> bool:
                for n in "bc":
                    if n not in alarms and (body := await _alarm(url[n], feed)) is not None:
                        alarms[n] = body
                return len(alarms) == 2

            await eventually(caught, INTERVAL + 1.0, "both mirrors to raise the equivocation alarm")
            bob, carol = fork.recs[feed, "bob"][1], fork.recs[feed, "carol"][1]
            _check_evidence(alarms["b"], home, keys["c"].public_hex, bob, carol, not members)
            _check_evidence(alarms["c"], home, keys["b"].public_hex, carol, bob, not members)
