"""Slow readers are cut off by bytes and by time (docs/reliability.md, "Slow readers").

One relay subprocess with small caps (``--max-outbound-bytes``, ``--unwritable-timeout``), a
busy document feed, and peers that complete the WebSocket handshake, subscribe and then never
read (tests/stalled.py: a raw socket with a 4 KiB receive buffer): on ``/ws``, on ``/yjs`` and
as a federation peer on ``/fed``. The relay must abort every one of them (the client sees a
reset) and keep a bystander getting every record in order. VmRSS is measured before, at the
peak and after, and printed; it must come back within 10% of before (docs/reliability.md).
"""
from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx
from pycrdt import Doc, Map

from collab.client import Client
from collab.keys import Keypair
from relay.federation.link import peer_bytes
from tests.procs import RelayProc, start_relay_proc
from tests.redis_server import free_port
from tests.stalled import Stalled
from tests.wait import eventually

FEED = "doc/busy"
CAP = 512 << 10        # --max-outbound-bytes
DEADLINE = 1.0         # --unwritable-timeout
UPDATE = 16 << 10      # bytes of text per document update
N_WS, N_YJS = 6, 6     # stalled readers per endpoint (and one federation peer)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Updates:
    """Document updates that each replace one big value (the document stays one value big)."""

    def __init__(self) -> None:
        self.doc = Doc()
        self.map = self.doc.get("m", type=Map)
        self.n = 0

    def next(self) -> str:
        before = self.doc.get_state()
        self.n += 1
        self.map["v"] = f"{self.n:08d}" + os.urandom(UPDATE // 2).hex()
        return base64.b64encode(self.doc.get_update(before)).decode()


async def _stalled_fed(url: str, me: Keypair) -> Stalled:
    peer = await Stalled.connect(url.replace("http://", "ws://") + "/fed")
    challenge = await peer.recv_frame("challenge")
    nonce = os.urandom(16).hex()
    sig = me.sign(peer_bytes(challenge["nonce"], challenge["relay"], me.public_hex)).hex()
    await peer.send({"t": "peer", "key": me.public_hex, "nonce": nonce, "sig": sig})
    await peer.recv_frame("peer_ok")
    await peer.send({"t": "sub", "feed": FEED, "since": 0, "rid": "s"})
    return peer


async def _stalled_ws(url: str) -> Stalled:
    reader = await Stalled.connect(url.replace("http://", "ws://") + "/ws")
    await reader.recv_frame("challenge")
    await reader.send({"t": "sub", "feed": FEED, "since": 0, "rid": "s"})
    await reader.recv_frame("synced")
    return reader


async def _stalled_yjs(url: str) -> Stalled:
    reader = await Stalled.connect(url.replace("http://", "ws://") + "/yjs/busy")
    await reader.recv()  # sync step 1: the relay serves this connection
    return reader


async def _publish(client: Client, updates: Updates, n: int) -> None:
    """``n`` updates, 8 in flight at a time: bursts of ~180 KB, well under the cap, so a reader
    that keeps up (the bystander) is never cut while the stalled ones fall behind for good."""
    for start in range(0, n, 8):
        for _ in range(min(8, n - start)):
            client.submit(client.create_event(FEED, "doc.update", {"update": updates.next()}))
        await client.flush(60)


async def test_stalled_readers_are_aborted_and_their_memory_released(tmp_path: Path) -> None:
    relay_key, fake_peer = Keypair.generate(), Keypair.generate()
    relay_key.save(tmp_path / "relay.key")
    port = free_port()
    proc: RelayProc = await start_relay_proc(
        tmp_path / "data", "--port", str(port), "--public-url", f"http://127.0.0.1:{port}",
        "--relay-key", str(tmp_path / "relay.key"),
        "--max-outbound-bytes", str(CAP), "--unwritable-timeout", str(DEADLINE),
        # a federation member that never connects out: only its inbound /fed link is used
        "--peer", f"http://127.0.0.1:{free_port()}#{fake_peer.public_hex}", "--pin", f"{FEED}={relay_key.public_hex}",
    )
    pid = proc.proc.pid
    got: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=proc.url) as http:
            limits = (await http.get("/limits")).json()
            assert limits["max_outbound_bytes"] == CAP and limits["unwritable_timeout"] == DEADLINE
        updates = Updates()
        async with Client(proc.url.replace("http://", "ws://") + "/ws", key=Keypair.generate()) as pub, \
                Client(proc.url.replace("http://", "ws://") + "/ws") as bystander:
            await bystander.subscribe(FEED, on_record=lambda r: got.append(r.seq))
            # warm up: the same traffic with the bystander alone, so "before" counts what the
            # relay keeps anyway (the document, the allocator's pools)
            await _publish(pub, updates, 60)
            await eventually(lambda: len(got) == 60, 20, "the bystander's warm-up records")
            before = rss_kib(pid)

            readers = ([await _stalled_ws(proc.url) for _ in range(N_WS)]
                       + [await _stalled_yjs(proc.url) for _ in range(N_YJS)]
                       + [await _stalled_fed(proc.url, fake_peer)])
            peak = before
            t0 = time.monotonic()
            for _ in range(5):  # about 1.6 MB of records: each reader passes its cap or stalls
                await _publish(pub, updates, 20)
                peak = max(peak, rss_kib(pid))
            published = time.monotonic()

            def all_ended() -> bool:
                return all(r.ended() for r in readers)

            await eventually(all_ended, DEADLINE + 5, "every stalled reader cut off")
            cut_after = time.monotonic() - published
            resets = sum(r.reset() for r in readers)
            for r in readers:
                r.close()
            await eventually(lambda: len(got) == updates.n, 20, "the bystander's records")
            assert got == list(range(1, updates.n + 1))  # every record, in order
            async with httpx.AsyncClient(base_url=proc.url) as http:
                health = (await http.get("/health")).json()
            assert health["connections"] == 2  # the publisher and the bystander

            # the memory comes back: within 10% of before (the relay trims the C heap once the
            # cut connections' backlog is dropped, relay.core.memory; docs/reliability.md)
            await eventually(lambda: rss_kib(pid) <= before * 1.10, 10, f"RSS back within 10% of {before} KiB")
            after = rss_kib(pid)
        print(f"\nslow readers: {len(readers)} stalled ({N_WS} /ws, {N_YJS} /yjs, 1 /fed), {resets} reset; "
              f"RSS before {before} KiB, peak {peak} KiB, after {after} KiB; all cut {cut_after:.2f} s after the "
              f"last publish ({time.monotonic() - t0:.2f} s after the first)")
        assert resets == len(readers)  # aborted at the transport, not a close frame they could not take
    finally:
        await proc.stop()

