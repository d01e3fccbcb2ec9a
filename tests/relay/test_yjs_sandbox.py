"""The Yjs engine cannot take the relay down (docs/reliability.md, "Yjs engine isolation").

Real relays (a subprocess on both backends, and in-process ones), real clients, the panicking
updates of tests/data/yjs_crashes/: refused with ``invalid``, never stored, counted; a stored
poisonous record (written straight into storage, as data from before the sandbox) is
quarantined at load with a relay-signed alarm, readers are told, ``colony replay`` reports it."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from collab.capability import Capability
from collab.events import GENESIS, Event, Record, b64
from collab.keys import Keypair
from relay.ops.runner import Running
from tests.collab.yjs_inputs import crashers, edits
from tests.conftest import Backend
from tests.procs import start_relay_proc
from tests.rawclient import Raw
from tests.wait import eventually
from tests.yclient import YClient, msg_update

_rid = itertools.count()


def doc_update(key: Keypair, feed: str, update: bytes) -> Event:
    return Event.create(key, feed, "doc.update", {"update": b64(update)})


async def publish(raw: Raw, ev: Event) -> dict[str, Any]:
    return await raw.request({"t": "pub", "event": ev.to_wire()}, f"p{next(_rid)}", timeout=30)


async def stored(url: str, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{url}/feeds/{feed}/events", params={"limit": 1000})
    return resp.json()["records"] if resp.status_code == 200 else []


async def _has(url: str, feed: str, n: int) -> bool:
    return len(await stored(url, feed)) >= n


def metric(text: str, name: str, label: str) -> float:
    m = re.search(rf'^{name}\{{verdict="{label}"\}} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def test_crashing_updates_are_refused_and_the_relay_keeps_serving(tmp_path: Path, backend: Backend) -> None:
    proc = await start_relay_proc(tmp_path / "r", backend=backend, site="yjs-sandbox")
    try:
        key, other = Keypair.generate(), Keypair.generate()
        agent = await Raw.connect(proc.ws_url, key)
        bystander = await Raw.connect(proc.ws_url, other)
        byst_acks = [asyncio.ensure_future(publish(bystander, doc_update(other, "doc/elsewhere", u)))
                     for u in edits(*(f"b{i} " for i in range(20)), client=11)]
        culprits = []
        engine_refused = []  # the crashers the sandbox refused (not the empty one)
        for n, c in enumerate(crashers()):
            feed = f"doc/poison-{n}"
            for u in c.prefix:  # valid on their own: stored
                assert (await publish(agent, doc_update(key, feed, u)))["t"] == "ok"
            ev = doc_update(key, feed, c.update)
            err = await publish(agent, ev)
            assert err["t"] == "error" and err["code"] == "invalid", (c.name, err)
            empty = "empty Yjs update" in err["message"]  # refused before the engine (docs/protocol.md 16.1)
            assert empty or ev.id in err["message"], err
            if not empty:
                engine_refused.append(c)
            culprits.append((feed, ev, c))
        assert [a["t"] for a in await asyncio.gather(*byst_acks)] == ["ok"] * 20  # nobody else noticed
        assert [r["seq"] for r in await stored(proc.url, "doc/elsewhere")] == list(range(1, 21))
        for feed, ev, c in culprits:  # nothing stored; the doc still takes valid edits
            recs = await stored(proc.url, feed)
            assert ev.id not in {r["event"]["id"] for r in recs}
            assert len(recs) == len(c.prefix)
            [fine] = edits("after", client=12)
            ok = await publish(agent, doc_update(key, feed, fine))
            assert ok["t"] == "ok", ok
        # the same inputs by /yjs (a capability writer of a doc the agent owns): closed with 4400
        base = proc.url.replace("http://", "ws://") + "/yjs"
        token = Capability.issue(key, "doc/poison-0", write=True).token()
        for bomb in (next(x for x in crashers() if x.name == "a_panic_apply_alone"), crashers(("segfault",))[0]):
            y = await YClient.connect(base, "poison-0", token)
            await asyncio.wait_for(y.synced, 30)
            await y.send(msg_update(bomb.update))
            code, _ = await asyncio.wait_for(asyncio.shield(y.closed), 30)
            assert code == 4400, bomb.name
        y2 = await YClient.connect(base, "poison-0", token)
        await asyncio.wait_for(y2.synced, 30)
        y2.edit("via yjs")
        await eventually(lambda: _has(proc.url, "doc/poison-0", 3), 30, "the /yjs edit stored")
        await y2.close()
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{proc.url}/metrics")).text
        panics = sum(c.verdict == "panic" for c in engine_refused)
        assert metric(text, "colony_yjs_refused_total", "panic") == panics + 1
        assert metric(text, "colony_yjs_refused_total", "crash") == len(engine_refused) - panics + 1 > 1
        assert float(re.search(r"^colony_yjs_sandbox_restarts ([0-9.e+]+)$", text, re.MULTILINE)[1]) >= 2
        assert proc.proc.returncode is None
        await agent.close()
        await bystander.close()
    finally:
        assert await proc.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled


async def test_a_stored_poisonous_record_is_quarantined_at_load(start_relay: Any, tmp_path: Path) -> None:
    r: Running = await start_relay("q")
    relay = r.relay
    key = Keypair.generate()
    c = next(x for x in crashers() if x.name == "a_panic_after_apply")
    [later] = edits("still here", client=21)
    feed = "doc/old-poison"
    rkey = relay.hub.relay_key
    recs, prev = [], GENESIS
    for seq, u in enumerate((c.base, c.update, later), start=1):  # as a relay before the sandbox stored them
        rec = Record.seal(rkey, doc_update(key, feed, u), seq, prev, 1_700_000_000_000 + seq)
        prev = rec.hash
        recs.append((rec, json.dumps(rec.to_wire(), separators=(",", ":"))))
    await relay.storage.append(feed, 0, recs)

    reader = await Raw.connect(r.ws_url, Keypair.generate())
    await reader.send({"t": "sub", "feed": feed, "since": 0})
    await reader.wait(lambda f: f["t"] == "synced", timeout=30)
    # the load saved a snapshot past the poison: a reader starts from it; the log stays whole
    assert [f["snap"]["seq"] for f in reader.frames if f["t"] == "snapshot"] == [3]
    assert [x["seq"] for x in await stored(r.url, feed)] == [1, 2, 3]
    async with httpx.AsyncClient() as http:
        state = (await http.get(f"{r.url}/feeds/{feed}")).json()["state"]
    assert state["quarantined"] == [2] and "still here" in state["text"]
    async with httpx.AsyncClient() as http:  # time travel folds the log in this process: it skips it too
        past = (await http.get(f"{r.url}/feeds/{feed}/state", params={"at": 2})).json()
    assert past.get("at") == 2 and "still here" not in past["state"]["text"], past

    async def alarms() -> list[dict[str, Any]]:
        return [x["event"] for x in await stored(r.url, "relay/alarms") if x["event"]["kind"] == "alarm.quarantine"]

    async def alarmed() -> bool:
        return bool(await alarms())

    await eventually(alarmed, 30, "the quarantine alarm in relay/alarms")
    [alarm] = await alarms()
    assert alarm["author"] == rkey.public_hex
    assert alarm["body"]["feed"] == feed and alarm["body"]["seq"] == 2 and alarm["body"]["verdict"] == "panic"
    assert relay.hub.metrics.yjs_refused.get("quarantined") == 1
    [fine] = edits("more", client=22)
    assert (await publish(reader, doc_update(key, feed, fine)))["t"] == "error"  # not the author's connection
    writer = await Raw.connect(r.ws_url, key)
    assert (await publish(writer, doc_update(key, feed, fine)))["t"] == "ok"

    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "replay", feed, "--relay", r.url, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    report = json.loads(out)
    assert {"seq": 2, "kind": "quarantined"} in [{k: a[k] for k in ("seq", "kind")} for a in report["anomalies"]]
    assert report["seq"] == 4 and "still here" in report["state"]["text"]
    await reader.close()
    await writer.close()
