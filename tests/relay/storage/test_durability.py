"""A relay killed with SIGKILL under load loses no acknowledged event."""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import websockets
from pycrdt import Doc, Text

from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from tests.conftest import Backend
from tests.procs import start_relay_proc
from tests.rawclient import Raw

FEEDS = ("doc/crash", "misc/crash")


async def all_records(url: str, feed: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            r = await http.get(f"{url}/feeds/{feed}/events", params={"since": len(out), "limit": 1000})
            if r.status_code == 404:
                return out
            batch = r.json()["records"]
            out.extend(batch)
            if len(batch) < 1000:
                return out


def verify_chain(records: list[dict[str, Any]]) -> list[Record]:
    prev, out = GENESIS, []
    for i, raw in enumerate(records, start=1):
        rec = Record.from_wire(raw)  # verifies author signature, id and relay receipt
        assert rec.seq == i, "seq must be dense"
        assert rec.prev == prev, f"chain broken at {i}"
        prev = rec.hash
        out.append(rec)
    return out


class Writer:
    """Publishes edits with a window in flight, remembering what was acked and what was not."""

    def __init__(self, key: Keypair, name: str) -> None:
        self.key, self.name = key, name
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self.acked: dict[str, tuple[str, int]] = {}  # id -> (feed, seq)
        self.sent: dict[str, Event] = {}
        self.n = 0

    def next_event(self) -> Event:
        self.n += 1
        if self.n % 2:
            before = self.doc.get_state()
            self.text.insert(len(self.text), f"[{self.name}:{self.n}]")
            ev = Event.create(self.key, FEEDS[0], "doc.update", {"update": b64(self.doc.get_update(before))})
        else:
            ev = Event.create(self.key, FEEDS[1], "note", {"writer": self.name, "n": self.n})
        self.sent[ev.id] = ev
        return ev

    async def run(self, ws_url: str, stop: asyncio.Event) -> None:
        try:
            raw = await Raw.connect(ws_url, self.key)
        except OSError:
            return
        try:
            while not stop.is_set():
                batch = [self.next_event() for _ in range(10)]
                for ev in batch:
                    await raw.send({"t": "pub", "event": ev.to_wire(), "rid": ev.id})
                for ev in batch:
                    reply = await raw.wait(lambda f, i=ev.id: f.get("rid") == i, timeout=10)
                    assert reply["t"] == "ok", reply
                    self.acked[ev.id] = (reply["feed"], reply["seq"])
        except (TimeoutError, OSError, websockets.WebSocketException):
            return  # the relay died under us: what was acked is what counts


async def test_sigkill_under_load_loses_no_acked_event(tmp_path: Path, backend: Backend) -> None:
    data = tmp_path / "relay"
    relay = await start_relay_proc(data, backend=backend)
    writers = [Writer(Keypair.generate(), f"w{i}") for i in range(4)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(relay.ws_url, stop)) for w in writers]

    async def enough_acked() -> None:
        """Kill only mid-stream: plenty acked, and some events sent but not acked yet."""
        while True:
            acked_n = sum(len(w.acked) for w in writers)
            if acked_n >= 1500 and sum(len(w.sent) for w in writers) > acked_n:
                return
            await asyncio.sleep(0.002)

    await asyncio.wait_for(enough_acked(), 60)
    relay.kill9()  # mid-stream: writers have events in flight
    await relay.proc.wait()
    stop.set()
    await asyncio.gather(*tasks)
    acked = {i: v for w in writers for i, v in w.acked.items()}
    in_flight = sum(len(w.sent) for w in writers) - len(acked)
    assert in_flight > 0, "the kill should land while events are in flight"
    assert len(acked) >= 1500

    relay2 = await start_relay_proc(data, backend=backend)
    try:
        stored: dict[str, tuple[str, int]] = {}
        for feed in FEEDS:
            recs = verify_chain(await all_records(relay2.url, feed))
            stored.update({r.event.id: (feed, r.seq) for r in recs})
        missing = [i for i in acked if i not in stored]
        assert not missing, f"{len(missing)} acked events lost"
        assert all(stored[i] == acked[i] for i in acked), "an acked event moved to another seq"

        # agents resume: resend everything they had sent (an outbox would); acked ones are duplicates
        for w in writers:
            raw = await Raw.connect(relay2.ws_url, w.key)
            for ev in w.sent.values():
                reply = await raw.request({"t": "pub", "event": ev.to_wire()}, ev.id[:32], timeout=20)
                assert reply["t"] == "ok", reply
                if ev.id in acked:
                    assert reply.get("dup") is True and reply["seq"] == acked[ev.id][1]
            await raw.close()
        recs = verify_chain(await all_records(relay2.url, FEEDS[0]))
        assert len({r.event.id for r in recs}) == len(recs), "an event was stored twice"
        # and every agent's text converged into the relay's merged document
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{relay2.url}/feeds/{FEEDS[0]}")).json()["state"]["text"]
        for w in writers:
            for n in range(1, w.n + 1, 2):
                assert f"[{w.name}:{n}]" in text
        merged = Doc()
        for r in recs:
            merged.apply_update(base64.b64decode(r.event.body["update"]))
        assert str(merged.get("text", type=Text)) == text
    finally:
        await relay2.stop()
