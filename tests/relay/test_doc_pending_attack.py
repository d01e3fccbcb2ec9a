"""Issue 12, item 2: Yjs updates whose dependencies never arrive cannot stall anyone.

End to end against a relay subprocess (both backends): an attacker publishes a few MB of
``doc.update``s that can never integrate (the first edit of their writer is withheld), then a few
hundred small updates that do integrate, all pipelined. Throughout, a bystander on another
connection (a process of its own, so the test's own work cannot delay it) sends native
``ping`` frames and publishes to an unrelated feed. The relay must keep the bystander's round
trips under 100 ms, ack every one of its publishes, and refuse the dangling updates once the
document's pending bound is reached (``too_large``), while the integrating ones are all accepted.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import websockets
from pycrdt import Doc, Text

from collab.events import Event, b64, hello_bytes
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import Running
from tests.conftest import Backend
from tests.procs import start_relay_proc
from tests.rawclient import Raw

DANGLING = 48            # updates that never integrate ...
DANGLING_CHARS = 60_000  # ... of ~60 KB each: ~2.9 MB, well over the default pending bound
SMALL = 300              # then this many small updates that integrate
MAX_PING = 0.100


def _edits(n: int, chars: int, client_id: int) -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=client_id)
    text = doc.get("text", type=Text)
    out: list[bytes] = []
    for i in range(n):
        sv = doc.get_state()
        text.insert(len(text), chr(97 + i % 26) * chars)
        out.append(doc.get_update(sv))
    return out


async def bystander(ws_url: str, stop: asyncio.Event) -> dict[str, Any]:
    """Ping the relay every 5 ms and publish to an unrelated feed every 20 ms until ``stop``;
    return the round trips and what became of the publishes."""
    key = Keypair.generate()
    rtts: list[float] = []
    pongs: dict[str, float] = {}
    out: dict[str, Any] = {"rtts": rtts, "sent": 0, "acked": 0, "errors": []}
    async with websockets.connect(ws_url, max_size=2**24) as ws:
        challenge = json.loads(await ws.recv())
        sig = key.sign(hello_bytes(key.public_hex, challenge["nonce"], challenge["relay"])).hex()
        await ws.send(json.dumps({"t": "hello", "key": key.public_hex, "sig": sig}))
        assert json.loads(await ws.recv())["t"] == "welcome"
        done, last = asyncio.Event(), asyncio.Event()

        async def read() -> None:
            async for msg in ws:
                for part in str(msg).split("\n"):
                    f = json.loads(part)
                    if f["t"] == "pong":
                        rtts.append(time.perf_counter() - pongs.pop(f["rid"]))
                    elif f["t"] == "ok":
                        out["acked"] += 1
                    elif f["t"] == "error":
                        out["errors"].append(f)
                if last.is_set() and not pongs and out["acked"] + len(out["errors"]) >= out["sent"]:
                    done.set()

        reader = asyncio.create_task(read())
        i = 0
        while not stop.is_set():
            i += 1
            pongs[f"p{i}"] = time.perf_counter()
            await ws.send(json.dumps({"t": "ping", "rid": f"p{i}"}))
            if i % 4 == 0:
                ev = Event.create(key, "misc/bystander", "note", {"i": i})
                out["sent"] += 1
                await ws.send(json.dumps({"t": "pub", "event": ev.to_wire(), "rid": f"e{i}"}))
            await asyncio.sleep(0.005)
        last.set()  # a last ping: its pong (and every ack) ends the reader's wait
        pongs["last"] = time.perf_counter()
        await ws.send(json.dumps({"t": "ping", "rid": "last"}))
        await asyncio.wait_for(done.wait(), 20)
        reader.cancel()
    return out


async def _bystander_process(ws_url: str) -> None:
    """The bystander in a process of its own (the test's work cannot delay it): it starts when
    the test writes a line to its stdin, stops at the next, then prints its results as JSON."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stop = asyncio.Event()

    async def wait_stop() -> None:
        await reader.readline()
        stop.set()

    stopper = asyncio.create_task(wait_stop())
    print("ready", flush=True)
    result = await bystander(ws_url, stop)
    await stopper
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(_bystander_process(sys.argv[1]))


async def test_dangling_updates_cannot_stall_a_bystander(tmp_path: Path, backend: Backend) -> None:
    limits = Limits()
    dangling = _edits(DANGLING + 1, DANGLING_CHARS, client_id=11)[1:]  # the first edit is withheld
    small = _edits(SMALL, 1, client_id=22)
    evil_a, evil_b = Keypair.generate(), Keypair.generate()
    big_events = [Event.create(evil_a, "doc/target", "doc.update", {"update": b64(u)}) for u in dangling]
    small_events = [Event.create(evil_b, "doc/target", "doc.update", {"update": b64(u)}) for u in small]
    assert sum(map(len, dangling)) > 2 * limits.max_doc_pending_bytes

    frames = [json.dumps({"t": "pub", "event": ev.to_wire(), "rid": f"big{i}"}) for i, ev in enumerate(big_events)]
    smalls = [json.dumps({"t": "pub", "event": ev.to_wire(), "rid": f"small{i}"}) for i, ev in enumerate(small_events)]

    rp = await start_relay_proc(tmp_path / "relay", backend=backend)
    by = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.relay.test_doc_pending_attack", rp.ws_url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert by.stdin is not None and by.stdout is not None
    try:
        attacker, helper = await Raw.connect(rp.ws_url, evil_a), await Raw.connect(rp.ws_url, evil_b)
        assert await asyncio.wait_for(by.stdout.readline(), 30) == b"ready\n"
        await asyncio.sleep(0.3)  # quiet pings first
        for frame in frames:
            await attacker.send(frame)
        for frame in smalls:
            await helper.send(frame)
        answers = {}
        for rid in [f"big{i}" for i in range(DANGLING)]:
            answers[rid] = await attacker.wait(lambda f, rid=rid: f.get("rid") == rid, timeout=60)
        for rid in [f"small{i}" for i in range(SMALL)]:
            answers[rid] = await helper.wait(lambda f, rid=rid: f.get("rid") == rid, timeout=60)
        await asyncio.sleep(0.3)  # and after
        by.stdin.write(b"stop\n")
        result = json.loads(await asyncio.wait_for(by.stdout.readline(), 30))
        await attacker.close()
        await helper.close()
    finally:
        if by.returncode is None:
            by.kill()
        await by.wait()
        await rp.stop()
    refused = [a for rid, a in answers.items() if rid.startswith("big") and a["t"] == "error"]
    accepted = [a for rid, a in answers.items() if rid.startswith("big") and a["t"] == "ok"]
    assert refused and all(a["code"] == "too_large" for a in refused), refused[:3]
    assert sum(len(dangling[int(a["rid"][3:])]) for a in accepted) <= limits.max_doc_pending_bytes
    bad = [answers[f"small{i}"] for i in range(SMALL) if answers[f"small{i}"]["t"] != "ok"]
    assert not bad, (len(bad), bad[:3])
    assert result["sent"] > 20 and result["acked"] == result["sent"] and not result["errors"]
    worst = max(result["rtts"])
    print(f"[{backend.name}] bystander pings: {len(result['rtts'])}, max {worst * 1000:.1f} ms, "
          f"dangling refused {len(refused)}/{DANGLING}")
    assert worst < MAX_PING, f"a bystander's ping waited {worst * 1000:.0f} ms"


async def test_writers_pipelining_into_a_feed_that_is_loading_stay_in_order(relay: Running) -> None:
    """Publishes submitted while their feed loads are queued before the ones submitted after it
    loaded (they used to overtake them): in-order writers then never leave anything pending,
    so the pending bound never refuses them."""
    keys = [Keypair.generate() for _ in range(4)]
    clients = [await Raw.connect(relay.ws_url, k) for k in keys]
    frames = [[json.dumps({"t": "pub", "event": Event.create(k, "doc/fresh", "doc.update", {"update": b64(u)})
                           .to_wire(), "rid": f"r{i}"}) for i, u in enumerate(_edits(200, 3, client_id=300 + j))]
              for j, k in enumerate(keys)]
    for c, fs in zip(clients, frames, strict=True):
        for f in fs:
            await c.send(f)
    for c in clients:
        await c.wait(lambda f: f.get("rid") == "r199", timeout=60)
        assert [f["t"] for f in c.frames if str(f.get("rid", "")).startswith("r")] == ["ok"] * 200
        await c.close()
    rt = await relay.relay.hub.runtime("doc/fresh")
    assert not rt.state.pending and rt.seq == 800
