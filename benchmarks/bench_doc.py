#!/usr/bin/env python3
"""Doc fan-out benchmark: Colony vs pycrdt-websocket on one shared Yjs document.

K writers and N subscribers share ONE document. Each writer inserts a short unique marker
(``wKKnSSSSSSSS;``, 13 characters) into the Yjs ``Text`` root "text" of its own pycrdt
``Doc`` and publishes the resulting Yjs update, either at a fixed rate (scenario
``target``) or as fast as it can with at most ``window`` unacknowledged updates in flight
(scenario ``saturation``). Subscribers time every delivery with ``time.monotonic_ns``
(system-wide on Linux, so comparable across processes) and match it to the send time
of the same update:

* Colony: native protocol on ``/ws``; an update is a signed ``doc.update`` event, acked by
  ``{"t":"ok"}`` after the durable SQLite append; the marker is the event id (subscribers
  take it from the end of each ``rec`` frame with ``rfind``, no JSON parsing).
* pycrdt-websocket: y-protocol (sync step 1/2, then update messages); the marker is the
  inserted text, which appears verbatim in the Yjs update bytes (a regex over the raw
  message). The protocol has no ack: a writer counts its update as acked when the server
  echoes it back (the room broadcasts every update to every client, writers included).

Each server runs in its own subprocess; subscribers run in ``--sub-procs`` processes and the
writers in one more process, each with its own (uvloop) event loop. Server CPU
(utime+stime from ``/proc/<pid>/stat``, all threads) and RSS (``VmRSS``) are sampled at the
start and the end of the measured window, after a warm-up.

    python benchmarks/bench_doc.py --quick            # CI smoke test, both systems, < 60 s
    python benchmarks/bench_doc.py                    # full: target + saturation
    python benchmarks/bench_doc.py --scenario target --duration 20 --json out.json
    python benchmarks/bench_doc.py --scenario target --systems colony --profile

See docs/benchmarks.md for the numbers and how to read them.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
FEED = "doc/bench"
ROOM = "/bench"
COLONY = "colony"
PEER = "pycrdt-websocket"
SYSTEMS = (PEER, COLONY)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK_RE = re.compile(rb"w\d\dn\d{8};")
NS = 1_000_000_000

# Colony limits for the benchmark: rate limits high enough to never trigger, a deep outbox.
COLONY_ARGS = [
    "--events-per-sec-key", "100000", "--burst-key", "100000",
    "--events-per-sec-ip", "1000000", "--burst-ip", "1000000",
    "--max-outbound-frames", "100000",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    subscribers: int
    writers: int
    rate: float | None  # edits/s per writer; None = as fast as the window allows
    window: int  # max unacknowledged updates per writer
    duration: float  # measured seconds
    warmup: float  # seconds of load before the measured window


FULL = {
    "target": Scenario("target", subscribers=100, writers=10, rate=20.0, window=1000, duration=15.0, warmup=5.0),
    "saturation": Scenario("saturation", subscribers=20, writers=10, rate=None, window=4, duration=15.0, warmup=5.0),
}
QUICK = {
    "target": Scenario("target", subscribers=10, writers=2, rate=20.0, window=1000, duration=3.0, warmup=1.0),
    "saturation": Scenario("saturation", subscribers=5, writers=2, rate=None, window=4, duration=3.0, warmup=1.0),
}


def now_ns() -> int:
    return time.monotonic_ns()


# ---------------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_s(pid: int) -> dict[str, float]:
    """utime+stime of the main thread (the event loop) and of all other threads, in seconds."""
    out = {"main": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # thread exited meanwhile
            continue
        out["main" if int(tid) == pid else "other"] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def machine_cpu() -> dict[str, float]:
    """Whole-machine busy, steal and iowait CPU seconds (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return {"busy_cores": (user + nice + system + irq + softirq) / CLK_TCK, "steal_cores": steal / CLK_TCK,
            "iowait_cores": iowait / CLK_TCK}


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to max_wait s) for 2 s in which the machine is busy less than ``threshold`` cores.

    Other work on this 2-core machine (a test suite, a build) distorts every figure; returns
    the busy cores of the last 2 s seen."""
    deadline = time.monotonic() + max_wait
    while True:
        a = machine_cpu()["busy_cores"]
        time.sleep(2.0)
        busy = (machine_cpu()["busy_cores"] - a) / 2.0
        if busy < threshold or time.monotonic() > deadline:
            return busy
        print(f"[bench] machine busy ({busy:.2f} cores of other work); waiting for it to settle", flush=True)


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------
# servers under test
# ---------------------------------------------------------------------------------------
class ServerProc:
    """One server subprocess: start, find its port, sample it, stop it."""

    def __init__(self, system: str, workdir: Path, diag: str | None = None) -> None:
        diag = diag if system == COLONY else None
        self.system, self.workdir, self.diag = system, workdir, diag
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = workdir / f"{system}-server.log"

    def command(self) -> list[str]:
        if self.system == COLONY:
            exe = Path(sys.executable).parent / "colony"
            base = [str(exe)] if exe.exists() else [sys.executable, "-m", "relay.cli"]
            if self.diag:  # same relay.cli.main, wrapped with diagnostics (see colony_diag_server.py)
                base = [sys.executable, str(HERE / "colony_diag_server.py")]
            return [*base, "serve", "--host", "127.0.0.1", "--port", "0", "--data", str(self.workdir / "data"),
                    "--log-level", "warning", *COLONY_ARGS]
        return [sys.executable, str(HERE / "pycrdt_ws_server.py"), "--host", "127.0.0.1", "--port", "0"]

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.diag == "lag":
            env["BENCH_DIAG_LAG"] = "1"
        elif self.diag == "no-deflate":
            env["BENCH_NO_DEFLATE"] = "1"
        elif self.diag == "cprofile":
            env["BENCH_CPROFILE"] = str(RESULTS_DIR / f"cprofile-{self.system}.pstats")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                     cwd=str(self.workdir), start_new_session=True)
        pat = re.compile(r"listening on http://([\d.]+):(\d+)")
        found: list[int] = []
        ready = threading.Event()

        def pump() -> None:  # keep reading stdout so the server can never block on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                m = pat.search(line)
                if m and not found:
                    found.append(int(m.group(2)))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not found:
            self.stop()
            raise RuntimeError(f"{self.system} server did not start; see {self.log_path}:\n"
                               + self.log_path.read_text()[-2000:])
        self.port = found[0]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}" + ("/ws" if self.system == COLONY else ROOM)

    def sample(self) -> dict[str, float]:
        return {"cpu_s": proc_cpu_s(self.pid), "rss_kb": proc_rss_kb(self.pid), "threads": thread_cpu_s(self.pid)}

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


# ---------------------------------------------------------------------------------------
# load generators (run in forked processes, each with its own event loop)
# ---------------------------------------------------------------------------------------
def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _connect(url: str, compression: str | None) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, compression=compression, max_size=None, ping_interval=None, proxy=None,
                   open_timeout=30, close_timeout=2)


async def _recv_ctrl(conn: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


class SubClient:
    """One subscriber connection; records (marker, monotonic receive time) per update."""

    __slots__ = ("idx", "marks", "times", "messages", "frames", "errors", "ws", "synced", "closed_code")

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.marks: list[bytes] = []
        self.times: list[int] = []
        self.messages = 0
        self.frames = 0
        self.errors: list[str] = []
        self.ws: Any = None
        self.synced = asyncio.Event()
        self.closed_code: int | None = None

    async def run_colony(self, url: str, compression: str | None) -> None:
        from collab.events import hello_bytes
        from collab.keys import Keypair

        kp = Keypair.generate()
        async with _connect(url, compression) as ws:
            self.ws = ws
            ch = json.loads((await ws.recv()).split("\n")[0])
            sig = kp.sign(hello_bytes(kp.public_hex, ch["nonce"], ch["relay"])).hex()
            await ws.send(json.dumps({"t": "hello", "key": kp.public_hex, "sig": sig}))
            await ws.send(json.dumps({"t": "sub", "feed": FEED, "since": 0}))
            marks, times = self.marks, self.times
            recv = ws.recv
            try:
                while True:
                    msg = await recv(decode=False)
                    t = now_ns()
                    self.messages += 1
                    parts = msg.split(b"\n") if b"\n" in msg else (msg,)
                    for part in parts:
                        self.frames += 1
                        if part.startswith(b'{"t":"rec"'):
                            i = part.rfind(b'"id":"')
                            marks.append(part[i + 6:i + 70])
                            times.append(t)
                        elif part.startswith(b'{"t":"synced"'):
                            self.synced.set()
                        elif part.startswith((b'{"t":"error"', b'{"t":"unsubbed"')):
                            self.errors.append(part[:300].decode("utf-8", "replace"))
            except Exception as exc:  # connection closed
                self.closed_code = getattr(getattr(exc, "rcvd", None), "code", None)

    async def run_peer(self, url: str, compression: str | None) -> None:
        from pycrdt import Doc, create_sync_message, handle_sync_message

        doc = Doc()
        async with _connect(url, compression) as ws:
            self.ws = ws
            await ws.send(create_sync_message(doc))  # our step 1: the server answers with step 2
            marks, times, find = self.marks, self.times, MARK_RE.findall
            recv = ws.recv
            try:
                while True:
                    msg = await recv(decode=False)
                    t = now_ns()
                    self.messages += 1
                    self.frames += 1
                    if msg[0] == 0 and msg[1] == 2:  # sync update: the hot path
                        for m in find(msg):
                            marks.append(m)
                            times.append(t)
                    elif msg[0] == 0 and msg[1] == 0:  # server's step 1: answer like a y-websocket client
                        reply = handle_sync_message(msg[1:], doc)
                        if reply is not None:
                            await ws.send(reply)
                    elif msg[0] == 0 and msg[1] == 1:  # step 2: we have the document
                        for m in find(msg):
                            marks.append(m)
                            times.append(t)
                        self.synced.set()
            except Exception as exc:
                self.closed_code = getattr(getattr(exc, "rcvd", None), "code", None)


def subscriber_proc(conn: Any, system: str, url: str, indices: list[int], compression: str | None,
                    prime: bool, room_ready: Any) -> None:
    if system == PEER and not prime:
        room_ready.wait(60)
    _run_loop(_subscriber_main(conn, system, url, indices, compression, prime, room_ready))


async def _subscriber_main(conn: Any, system: str, url: str, indices: list[int], compression: str | None,
                           prime: bool, room_ready: Any) -> None:
    clients = [SubClient(i) for i in indices]
    tasks: list[asyncio.Task[None]] = []

    def launch(c: SubClient) -> asyncio.Task[None]:
        coro = c.run_colony(url, compression) if system == COLONY else c.run_peer(url, compression)
        t = asyncio.get_running_loop().create_task(coro)
        tasks.append(t)
        return t

    async def until_synced(c: SubClient, t: asyncio.Task[None]) -> None:
        w = asyncio.ensure_future(c.synced.wait())
        await asyncio.wait([w, t], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not c.synced.is_set():
            w.cancel()
            if t.done() and t.exception() is not None:
                raise RuntimeError(f"subscriber {c.idx} failed: {t.exception()!r}")
            raise RuntimeError(f"subscriber {c.idx} never synced")

    try:
        rest = clients
        if prime:  # pycrdt-websocket serves only the first of several clients creating a room at once
            await until_synced(clients[0], launch(clients[0]))
            room_ready.set()
            rest = clients[1:]
        sem = asyncio.Semaphore(16)

        async def join(c: SubClient) -> None:
            async with sem:
                await until_synced(c, launch(c))

        await asyncio.gather(*(join(c) for c in rest))
    except Exception as exc:
        conn.send(("error", repr(exc)))
        return
    conn.send(("ready", len(clients)))
    msg = await _recv_ctrl(conn)
    if msg[0] != "finish":
        return
    _, expected_list, send_times, t0, t1, drain_s = msg
    expected = set(expected_list)
    n_exp = len(expected)
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        if all(len(c.marks) >= n_exp for c in clients) and all(expected <= set(c.marks) for c in clients):
            break
        await asyncio.sleep(0.05)
    lat = array.array("q")
    sent_at = array.array("q")
    per_client = []
    in_window = 0
    for c in clients:
        got = set(c.marks)
        for m, t in zip(c.marks, c.times, strict=True):
            if t0 <= t < t1:
                in_window += 1
            ts = send_times.get(m)
            if ts is not None and t0 <= ts < t1:
                lat.append(t - ts)
                sent_at.append(ts - t0)
        per_client.append({
            "idx": c.idx, "received": len(c.marks), "missing": len(expected - got),
            "duplicates": len(c.marks) - len(got), "unexpected": len(got - expected),
            "messages": c.messages, "frames": c.frames, "errors": c.errors[:3], "closed_code": c.closed_code,
        })
    conn.send(("result", {"clients": per_client, "latencies": lat.tobytes(), "sent_at": sent_at.tobytes(),
                          "in_window": in_window}))
    await _recv_ctrl(conn)  # "close"
    for c in clients:
        if c.ws is not None:
            try:
                await asyncio.wait_for(c.ws.close(), 2)
            except Exception:
                pass
    for t in tasks:
        t.cancel()
    conn.send(("closed",))


class Writer:
    """One writer connection: its own pycrdt Doc, inserts at the end of "text"."""

    def __init__(self, idx: int, url: str, compression: str | None) -> None:
        from pycrdt import Doc, Text

        self.idx, self.url, self.compression = idx, url, compression
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self._updates: list[bytes] = []
        self.doc.observe(lambda ev: self._updates.append(ev.update))
        self.n = 0
        self.sent: dict[bytes, int] = {}
        self.acked: dict[bytes, int] = {}
        self.errors: list[str] = []
        self.messages_in = 0
        self.inflight = 0
        self.room = asyncio.Event()
        self.room.set()
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.kp: Any = None
        self.prefix = b"w%02dn" % idx

    def next_update(self) -> tuple[bytes, bytes]:
        marker = b"w%02dn%08d;" % (self.idx, self.n)
        self.n += 1
        self.text += marker.decode()
        return marker, self._updates.pop()

    def _ack(self, m: bytes, t: int) -> None:
        if m in self.sent and m not in self.acked:
            self.acked[m] = t
            self.inflight -= 1
            self.room.set()

    # -- Colony ----------------------------------------------------------------------------
    async def open_colony(self) -> None:
        from collab.events import hello_bytes
        from collab.keys import Keypair

        self.kp = Keypair.generate()
        self.ws = ws = await _connect(self.url, self.compression)
        ch = json.loads((await ws.recv()).split("\n")[0])
        sig = self.kp.sign(hello_bytes(self.kp.public_hex, ch["nonce"], ch["relay"])).hex()
        await ws.send(json.dumps({"t": "hello", "key": self.kp.public_hex, "sig": sig}))
        while True:
            frame = json.loads((await ws.recv()).split("\n")[0])
            if frame["t"] == "welcome":
                break
            if frame["t"] == "error":
                raise RuntimeError(f"hello refused: {frame}")
        self.reader = asyncio.get_running_loop().create_task(self._read_colony())

    async def _read_colony(self) -> None:
        try:
            while True:
                msg = await self.ws.recv(decode=False)
                t = now_ns()
                self.messages_in += 1
                for part in msg.split(b"\n"):
                    if part.startswith(b'{"t":"ok"'):
                        i = part.find(b'"id":"')
                        self._ack(part[i + 6:i + 70], t)
                    elif part.startswith(b'{"t":"error"'):
                        self.errors.append(part[:300].decode("utf-8", "replace"))
        except Exception:
            pass

    async def publish_colony(self) -> None:
        from collab import frames
        from collab.events import Event, b64

        _, update = self.next_update()
        ev = Event.create(self.kp, FEED, "doc.update", {"update": b64(update)})
        data = frames.encode({"t": "pub", "event": ev.to_wire()})
        m = ev.id.encode()
        self.inflight += 1
        self.sent[m] = now_ns()
        await self.ws.send(data)

    # -- pycrdt-websocket ------------------------------------------------------------------
    async def open_peer(self) -> None:
        from pycrdt import create_sync_message, handle_sync_message

        self.ws = ws = await _connect(self.url, self.compression)
        await ws.send(create_sync_message(self.doc))
        while True:
            msg = await ws.recv(decode=False)
            if msg[0] == 0 and msg[1] == 0:
                reply = handle_sync_message(msg[1:], self.doc)
                if reply is not None:
                    await ws.send(reply)
            elif msg[0] == 0 and msg[1] == 1:
                handle_sync_message(msg[1:], self.doc)  # whatever the room already holds
                break
        self._updates.clear()
        self.reader = asyncio.get_running_loop().create_task(self._read_peer())

    async def _read_peer(self) -> None:
        prefix, find = self.prefix, MARK_RE.findall
        try:
            while True:
                msg = await self.ws.recv(decode=False)
                t = now_ns()
                self.messages_in += 1
                if prefix in msg:  # our own update, echoed by the room: that is the "ack"
                    for m in find(msg):
                        if m.startswith(prefix):
                            self._ack(m, t)
        except Exception:
            pass

    async def publish_peer(self) -> None:
        from pycrdt import create_update_message

        marker, update = self.next_update()
        data = create_update_message(update)
        self.inflight += 1
        self.sent[marker] = now_ns()
        await self.ws.send(data)


def writer_proc(conn: Any, system: str, url: str, n: int, sc: Scenario, compression: str | None) -> None:
    _run_loop(_writer_main(conn, system, url, n, sc, compression))


async def _writer_main(conn: Any, system: str, url: str, n: int, sc: Scenario, compression: str | None) -> None:
    writers = [Writer(i, url, compression) for i in range(n)]
    try:
        await asyncio.gather(*(w.open_colony() if system == COLONY else w.open_peer() for w in writers))
    except Exception as exc:
        conn.send(("error", repr(exc)))
        return
    conn.send(("ready", n))
    msg = await _recv_ctrl(conn)
    if msg[0] != "go":
        return
    _, t_start, t_end = msg

    async def sleep_until(t: int) -> None:
        d = (t - now_ns()) / NS
        if d > 0:
            await asyncio.sleep(d)

    async def run(w: Writer) -> None:
        publish = w.publish_colony if system == COLONY else w.publish_peer
        if sc.rate is not None:
            interval = int(NS / sc.rate)
            nxt = t_start + (w.idx * interval) // max(1, n)  # spread writers over the interval
            while nxt < t_end:
                await sleep_until(nxt)
                while w.inflight >= sc.window:  # safety valve only; never reached at the target rate
                    w.room.clear()
                    await w.room.wait()
                await publish()
                nxt += interval
                now = now_ns()
                if now - nxt > interval:  # fell behind by more than one tick: don't burst to catch up
                    nxt = now
        else:
            await sleep_until(t_start)
            while now_ns() < t_end:
                while w.inflight >= sc.window:
                    w.room.clear()
                    await w.room.wait()
                await publish()

    await asyncio.gather(*(run(w) for w in writers))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(w.inflight > 0 for w in writers):
        await asyncio.sleep(0.02)
    sent: dict[bytes, int] = {}
    acked: dict[bytes, int] = {}
    errors: list[str] = []
    for w in writers:
        sent.update(w.sent)
        acked.update(w.acked)
        errors.extend(w.errors[:5])
    conn.send(("result", {
        "sent": sent, "acked": acked, "errors": errors,
        "messages_in": sum(w.messages_in for w in writers),
    }))
    await _recv_ctrl(conn)  # "close"
    for w in writers:
        try:
            await asyncio.wait_for(w.ws.close(), 2)
        except Exception:
            pass
        if w.reader is not None:
            w.reader.cancel()
    conn.send(("closed",))


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------
def _expect(conn: Any, what: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"load generator: no {what!r} after {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] != what:
        raise RuntimeError(f"load generator: expected {what!r}, got {msg!r}")
    return msg


def pct(sorted_vals: list[int], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k] / 1e6


def lat_summary(vals: list[int]) -> dict[str, float]:
    vals.sort()
    return {
        "n": len(vals), "p50": pct(vals, 50), "p90": pct(vals, 90), "p99": pct(vals, 99),
        "p999": pct(vals, 99.9), "max": vals[-1] / 1e6 if vals else float("nan"),
        "mean": (sum(vals) / len(vals) / 1e6) if vals else float("nan"),
    }


BUCKET_NS = 250_000_000


def timeline(buckets: dict[int, list[int]]) -> dict[str, Any]:
    """Is the tail spread evenly or made of a few bad moments? p99 per 250 ms of send time."""
    p99s = []
    for k in sorted(buckets):
        v = sorted(buckets[k])
        p99s.append((k * BUCKET_NS / NS, pct(v, 99), len(v)))
    worst = sorted(p99s, key=lambda x: -x[1])[:5]
    return {
        "bucket_s": BUCKET_NS / NS,
        "buckets": len(p99s),
        "buckets_p99_over_20ms": sum(1 for _, p, _ in p99s if p > 20),
        "median_bucket_p99_ms": sorted(p for _, p, _ in p99s)[len(p99s) // 2] if p99s else None,
        "worst": [{"t_s": round(t, 2), "p99_ms": round(p, 2), "n": n} for t, p, n in worst],
    }


class Profiler:
    """py-spy record on the server during the measured window (optional)."""

    def __init__(self, pid: int, duration: float, out: Path) -> None:
        self.out = out
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration))), "--rate", "250",
             "--format", "raw", "--threads", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "py-spy did not finish"
        if not self.out.exists():
            return f"py-spy wrote nothing: {err[-500:]}"
        return summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive shares per function of the event-loop (main) thread, from py-spy's
    collapsed stacks. Other threads are listed by sample count only: py-spy counts a thread
    blocked inside a C call (sqlite's fsync, a queue wait) as active, so their samples are
    wall time, not CPU (bench_doc's per-thread CPU figures from /proc are the reliable ones)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames_ = [f for f in stack.split(";") if f]
        thread = frames_[0] if frames_ and frames_[0].startswith("thread ") else "?"
        per_thread[thread] += k
        if not thread.endswith("MainThread"):
            continue
        main += k
        frames_ = frames_[1:]
        if frames_:
            self_c[_short(frames_[-1])] += k
        for f in {_short(f) for f in frames_}:
            incl_c[f] += k
    if not main:
        return "(no main-thread samples)"
    lines = ["samples per thread: " + ", ".join(f"{t}: {c}" for t, c in per_thread.most_common()), "",
             f"main thread (event loop), {main} samples", "self%   function"]
    lines += [f"{100 * c / main:5.1f}   {f}" for f, c in self_c.most_common(top)]
    lines += ["", "incl%   function"]
    lines += [f"{100 * c / main:5.1f}   {f}" for f, c in incl_c.most_common(top + 15)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"; drop the line number, shorten the path
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"


def run_one(system: str, sc: Scenario, compression: str | None, args: argparse.Namespace,
            workdir: Path) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProc(system, workdir, args.server_diag)
    server.start()
    rss_start = proc_rss_kb(server.pid)
    url = server.url()
    procs: list[Any] = []
    conns: list[Any] = []
    profile_text = None
    try:
        room_ready = ctx.Event()
        nproc = max(1, min(args.sub_procs, sc.subscribers))
        groups = [list(range(sc.subscribers))[i::nproc] for i in range(nproc)]
        for gi, idxs in enumerate(groups):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=subscriber_proc, args=(child, system, url, idxs, compression, gi == 0, room_ready),
                            daemon=True, name=f"bench-sub-{gi}")
            p.start()
            procs.append(p)
            conns.append(parent)
        sub_conns = conns[:]
        for c in sub_conns:
            msg = c.recv() if c.poll(120) else ("error", "timeout connecting subscribers")
            if msg[0] != "ready":
                raise RuntimeError(f"{system}: subscribers failed: {msg[1]}")
        wparent, wchild = ctx.Pipe()
        wp = ctx.Process(target=writer_proc, args=(wchild, system, url, sc.writers, sc, compression), daemon=True,
                         name="bench-writers")
        wp.start()
        procs.append(wp)
        conns.append(wparent)
        msg = wparent.recv() if wparent.poll(60) else ("error", "timeout connecting writers")
        if msg[0] != "ready":
            raise RuntimeError(f"{system}: writers failed: {msg[1]}")

        time.sleep(0.5)  # let presence/sync chatter settle
        t_start = now_ns() + int(0.2 * NS)
        t0 = t_start + int(sc.warmup * NS)
        t1 = t0 + int(sc.duration * NS)
        wparent.send(("go", t_start, t1))
        time.sleep(max(0.0, (t0 - now_ns()) / NS))
        before = server.sample()
        lg_before = sum(proc_cpu_s(p.pid) for p in procs)
        box_before = machine_cpu()
        me_before = proc_cpu_s(os.getpid())
        prof = None
        if args.profile:
            prof = Profiler(server.pid, sc.duration, RESULTS_DIR / f"profile-{system}-{sc.name}.txt")
        time.sleep(max(0.0, (t1 - now_ns()) / NS))
        after = server.sample()
        lg_after = sum(proc_cpu_s(p.pid) for p in procs)
        box_after = machine_cpu()
        me_after = proc_cpu_s(os.getpid())

        _, wres = _expect(wparent, "result", 60)
        sent: dict[bytes, int] = wres["sent"]
        acked: dict[bytes, int] = wres["acked"]
        for c in sub_conns:
            c.send(("finish", list(sent), sent, t0, t1, 20.0))
        sub_results = [_expect(c, "result", 90)[1] for c in sub_conns]
        rss_end = proc_rss_kb(server.pid)
        if prof is not None:
            profile_text = prof.finish()
        for c in conns:
            c.send(("close",))
        for c in conns:
            if c.poll(10):
                c.recv()
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
        rc = server.stop()
        if args.server_diag:
            shutil.copy(server.log_path, RESULTS_DIR / f"server-{system}-{sc.name}.log")

    lats: list[int] = []
    buckets: dict[int, list[int]] = {}
    clients: list[dict[str, Any]] = []
    in_window = 0
    for r in sub_results:
        a = array.array("q")
        a.frombytes(r["latencies"])
        b = array.array("q")
        b.frombytes(r["sent_at"])
        lats.extend(a)
        for lt, st in zip(a, b, strict=True):
            buckets.setdefault(st // BUCKET_NS, []).append(lt)
        clients.extend(r["clients"])
        in_window += r["in_window"]
    ack_lat = [acked[m] - t for m, t in sent.items() if m in acked and t0 <= t < t1]
    sent_in_window = sum(1 for t in sent.values() if t0 <= t < t1)
    cpu = after["cpu_s"] - before["cpu_s"]
    missing = sum(c["missing"] for c in clients)
    dups = sum(c["duplicates"] for c in clients)
    result = {
        "system": system,
        "scenario": sc.name,
        "params": {**asdict(sc), "compression": compression or "none", "sub_procs": len(sub_conns)},
        "window_monotonic_s": [t0 / NS, t1 / NS],
        "published": len(sent),
        "acked": len(acked),
        "unacked": len(sent) - len(acked),
        "publish_errors": wres["errors"][:10],
        "published_in_window": sent_in_window,
        "publish_per_s": sent_in_window / sc.duration,
        "deliveries_in_window": in_window,
        "delivered_per_s": in_window / sc.duration,
        "latency_ms": lat_summary(lats),
        "ack_latency_ms": lat_summary(ack_lat),
        "latency_timeline": timeline(buckets),
        "server": {
            "cpu_s": cpu,
            "cpu_cores": cpu / sc.duration,
            "cpu_us_per_delivery": (cpu * 1e6 / in_window) if in_window else None,
            "cpu_cores_by_thread": {
                name: round((after["threads"].get(name, 0.0) - before["threads"].get(name, 0.0)) / sc.duration, 3)
                for name in sorted(after["threads"])
                if after["threads"].get(name, 0.0) - before["threads"].get(name, 0.0) > 0
            },
            "rss_kb_start": rss_start,
            "rss_kb_before": before["rss_kb"],
            "rss_kb_after": after["rss_kb"],
            "rss_kb_end": rss_end,
            "exit_code": rc,
        },
        "loadgen_cpu_cores": (lg_after - lg_before) / sc.duration,
        "machine": {k: (box_after[k] - box_before[k]) / sc.duration for k in box_after},
        "foreign_cores": ((box_after["busy_cores"] - box_before["busy_cores"]) - cpu - (lg_after - lg_before)
                          - (me_after - me_before)) / sc.duration,
        "messages": {
            "client_sent_updates": len(sent),
            "subscriber_ws_messages": sum(c["messages"] for c in clients),
            "subscriber_frames": sum(c["frames"] for c in clients),
            "subscriber_deliveries": sum(c["received"] for c in clients),
            "writer_ws_messages_received": wres["messages_in"],
        },
        "loss": {
            "subscribers": len(clients),
            "complete_subscribers": sum(1 for c in clients if c["missing"] == 0),
            "missing_total": missing,
            "duplicates_total": dups,
            "unexpected_total": sum(c["unexpected"] for c in clients),
            "ok": missing == 0 and dups == 0 and len(clients) == sc.subscribers,
            "subscriber_errors": [e for c in clients for e in c["errors"]][:5],
            "closed_codes": sorted({c["closed_code"] for c in clients if c["closed_code"] is not None}),
        },
    }
    if profile_text is not None:
        result["profile_summary"] = profile_text
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def ratios(colony: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    return {
        "delivered_per_s": ratio(colony["delivered_per_s"], peer["delivered_per_s"]),
        "latency_p50": ratio(colony["latency_ms"]["p50"], peer["latency_ms"]["p50"]),
        "latency_p99": ratio(colony["latency_ms"]["p99"], peer["latency_ms"]["p99"]),
        "cpu_us_per_delivery": ratio(colony["server"]["cpu_us_per_delivery"], peer["server"]["cpu_us_per_delivery"]),
        "rss_after": ratio(colony["server"]["rss_kb_after"], peer["server"]["rss_kb_after"]),
    }


def _median(vals: list[Any]) -> Any:
    v = sorted(x for x in vals if x is not None and x == x)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each headline figure over the repeats; every run is kept under "runs"."""
    first = runs[0]

    def med(*path: str) -> Any:
        vals = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v[k]
            vals.append(v)
        return _median(vals)

    p99s = [r["latency_ms"]["p99"] for r in runs]
    cpus = [r["server"]["cpu_us_per_delivery"] for r in runs if r["server"]["cpu_us_per_delivery"] is not None]
    return {
        "system": first["system"], "scenario": first["scenario"], "params": first["params"],
        "repeats": len(runs),
        "publish_per_s": med("publish_per_s"),
        "delivered_per_s": med("delivered_per_s"),
        "latency_ms": {
            "p50": med("latency_ms", "p50"), "p90": med("latency_ms", "p90"), "p99": med("latency_ms", "p99"),
            "p99_min": min(p99s), "p99_max": max(p99s),
            "max": max(r["latency_ms"]["max"] for r in runs),
        },
        "ack_latency_ms": {"p50": med("ack_latency_ms", "p50"), "p99": med("ack_latency_ms", "p99")},
        "server": {
            "cpu_us_per_delivery": _median(cpus), "cpu_us_per_delivery_min": min(cpus, default=None),
            "cpu_us_per_delivery_max": max(cpus, default=None),
            "cpu_cores": med("server", "cpu_cores"),
            "main_thread_cores": _median([r["server"]["cpu_cores_by_thread"].get("main") for r in runs]),
            "rss_kb_before": med("server", "rss_kb_before"), "rss_kb_after": med("server", "rss_kb_after"),
        },
        "loadgen_cpu_cores": med("loadgen_cpu_cores"),
        "machine_busy_cores": med("machine", "busy_cores"),
        "machine_steal_cores": med("machine", "steal_cores"),
        "foreign_cores": med("foreign_cores"),
        "contaminated_runs": sum(1 for r in runs if r.get("contaminated")),
        "messages": {k: med("messages", k) for k in first["messages"]},
        "loss": {
            "ok": all(r["loss"]["ok"] for r in runs),
            "subscribers": first["loss"]["subscribers"],
            "missing_total": sum(r["loss"]["missing_total"] for r in runs),
            "duplicates_total": sum(r["loss"]["duplicates_total"] for r in runs),
            "unacked_total": sum(r["unacked"] for r in runs),
        },
        "runs": runs,
    }


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ("scenario", "system", "N", "K", "pub/s", "deliv/s", "p50 ms", "p99 ms", "p99 range", "CPU µs/dlv",
            "srv cores", "RSS MB", "box cores", "lost")
    rows = [head]
    for label, by_sys in results.items():
        for system in SYSTEMS:
            r = by_sys.get(system)
            if r is None:
                continue
            p, lat = r["params"], r["latency_ms"]
            rows.append((
                label, system, str(p["subscribers"]), str(p["writers"]), fmt(r["publish_per_s"], ".0f"),
                fmt(r["delivered_per_s"], ".0f"), fmt(lat["p50"], ".2f"), fmt(lat["p99"], ".2f"),
                f"{fmt(lat['p99_min'], '.0f')}-{fmt(lat['p99_max'], '.0f')}",
                fmt(r["server"]["cpu_us_per_delivery"], ".1f"), fmt(r["server"]["cpu_cores"], ".2f"),
                fmt(r["server"]["rss_kb_after"] / 1024, ".0f"), fmt(r["machine_busy_cores"], ".2f"),
                str(r["loss"]["missing_total"]),
            ))
        if COLONY in by_sys and PEER in by_sys:
            q = ratios(by_sys[COLONY], by_sys[PEER])
            rows.append((label, "colony/peer", "", "", "", fmt(q["delivered_per_s"], ".2f") + "x",
                         fmt(q["latency_p50"], ".2f") + "x", fmt(q["latency_p99"], ".2f") + "x", "",
                         fmt(q["cpu_us_per_delivery"], ".2f") + "x", "", fmt(q["rss_after"], ".2f") + "x", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(cells)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("pycrdt", "pycrdt-websocket", "websockets", "uvicorn", "uvloop", "starlette", "PyNaCl"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Colony vs pycrdt-websocket doc fan-out benchmark")
    ap.add_argument("--quick", action="store_true", help="tiny CI smoke run (both systems, < 60 s)")
    ap.add_argument("--scenario", choices=["target", "saturation", "all"], default="all")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per system and scenario; figures are medians (default: 3 full, 1 quick)")
    ap.add_argument("--compression", choices=["deflate", "none", "both"], default=None,
                    help="whether clients offer permessage-deflate (browsers and the websockets library do by "
                         "default; both servers accept it by default). Default: both (full), deflate (quick)")
    ap.add_argument("--subscribers", type=int, default=None, help="override N")
    ap.add_argument("--writers", type=int, default=None, help="override K")
    ap.add_argument("--rate", type=float, default=None, help="override edits/s per writer (target scenario)")
    ap.add_argument("--window", type=int, default=None, help="override in-flight window (saturation)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of: " + ", ".join(SYSTEMS))
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (default 2)")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the server during each measured window (skews its numbers a little)")
    ap.add_argument("--server-diag", choices=["lag", "cprofile", "no-deflate"], default=None,
                    help="run Colony through benchmarks/colony_diag_server.py: log event-loop stalls, slow "
                         "GCs, slow appends and snapshots (lag), cProfile it (cprofile), or turn off "
                         "permessage-deflate on the server side (no-deflate); the server log is copied "
                         "to benchmarks/results/")
    ap.add_argument("--max-foreign", type=float, default=None,
                    help="CPU cores of other work on the machine tolerated during a measured window; a run "
                         "above it is redone (default 0.15 full, off in quick mode)")
    ap.add_argument("--retries", type=int, default=None, help="redo a disturbed run this often (default 2 full)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each run wait up to this many s for the machine to be idle (default 300 full)")
    ap.add_argument("--json", default=None, help="write results here (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    base = QUICK if args.quick else FULL
    repeat = args.repeat or (1 if args.quick else 3)
    comp_mode = args.compression or ("deflate" if args.quick else "both")
    compressions = ["deflate", "none"] if comp_mode == "both" else [comp_mode]
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    max_foreign = args.max_foreign if args.max_foreign is not None else (0.0 if args.quick else 0.15)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 300.0)
    names = ["target", "saturation"] if args.scenario == "all" else [args.scenario]
    scenarios = []
    for n in names:
        sc = base[n]
        over: dict[str, Any] = {}
        for field_, val in (("duration", args.duration), ("warmup", args.warmup), ("subscribers", args.subscribers),
                            ("writers", args.writers)):
            if val is not None:
                over[field_] = val
        if args.rate is not None and sc.rate is not None:
            over["rate"] = args.rate
        if args.window is not None and sc.rate is None:
            over["window"] = args.window
        scenarios.append(replace(sc, **over))
    if any(s.writers > 100 for s in scenarios):
        ap.error("at most 100 writers (markers carry a 2-digit writer number)")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="colony-bench-") as tmp:
        for sc in scenarios:
            for comp in compressions:
                label = f"{sc.name}/{comp}"
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
                for rep in range(repeat):
                    order = systems if rep % 2 == 0 else systems[::-1]  # alternate who goes first
                    for system in order:
                        workdir = Path(tmp) / f"{sc.name}-{comp}-{system}-{rep}"
                        workdir.mkdir()
                        print(f"[bench] {label} #{rep + 1}/{repeat}: {system} (N={sc.subscribers}, K={sc.writers}, "
                              f"{'%g/s' % sc.rate if sc.rate else 'window %d' % sc.window} per writer, "
                              f"{sc.warmup:g}+{sc.duration:g} s)", flush=True)
                        r = None
                        for attempt in range(1 + retries):
                            if quiet_wait > 0:
                                wait_quiet(max_foreign, quiet_wait)
                            try:
                                cand = run_one(system, sc, None if comp == "none" else "deflate", args,
                                               workdir / f"try{attempt}")
                            except Exception as exc:
                                failures.append(f"{label}/{system}#{rep + 1}: {exc}")
                                print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
                                break
                            cand["contaminated"] = max_foreign > 0 and cand["foreign_cores"] > max_foreign
                            if r is None or cand["foreign_cores"] < r["foreign_cores"]:
                                r = cand
                            if not cand["contaminated"]:
                                break
                            print(f"[bench]   other work used {cand['foreign_cores']:.2f} cores during the window;"
                                  f" {'retrying' if attempt < retries else 'keeping the least disturbed run'}",
                                  flush=True)
                        if r is None:
                            continue
                        runs[system].append(r)
                        print(f"[bench]   {r['delivered_per_s']:.0f} deliveries/s, p50 {r['latency_ms']['p50']:.2f} ms,"
                              f" p99 {r['latency_ms']['p99']:.2f} ms, "
                              f"{fmt(r['server']['cpu_us_per_delivery'])} µs CPU/delivery, "
                              f"lost {r['loss']['missing_total']}, other work {r['foreign_cores']:.2f} cores",
                              flush=True)
                        if "profile_summary" in r:
                            print(r["profile_summary"], flush=True)
                results[label] = {s: aggregate(v) for s, v in runs.items() if v}

    out = {
        "benchmark": "bench_doc",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine(),
        "results": results,
        "ratios": {lb: ratios(by[COLONY], by[PEER]) for lb, by in results.items() if COLONY in by and PEER in by},
        "failures": failures,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / time.strftime("bench_doc-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(table(results))
    print(f"\n[bench] {out['elapsed_s']} s; results in {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
