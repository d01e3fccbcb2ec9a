"""Shared pieces of the benchmarks in this folder (``bench_doc.py``, ``bench_scaleout.py``).

* ``/proc`` sampling: process and per-thread CPU, RSS, whole-machine busy CPU, waiting for a
  quiet machine;
* :class:`ServerProc`: one server under test in its own subprocess (Colony on SQLite or on
  Redis, or pycrdt-websocket), its port, ``/health``, CPU and RSS;
* the load generators: subscriber and writer processes (forked, one uvloop event loop each)
  that publish Yjs updates to one doc feed (or, with ``Scenario.docs`` > 1, to several: writer
  and subscriber ``i`` use ``doc/bench-{i % docs}``) and time every delivery with
  ``time.monotonic_ns`` matched by event id (see ``bench_doc.py`` for the workload);
* :func:`run_workload`: one measured run against one or several server processes (clients
  spread evenly over them), with warm-up, a measured window, latency percentiles, CPU and RSS
  of the servers and of any other processes named (e.g. redis-server), and a loss check
  (per doc: each subscriber gets exactly the updates of its own doc, once);
* py-spy profiling and the summary of its output; small statistics helpers.
"""
from __future__ import annotations

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
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
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
    docs: int = 1  # doc feeds: writer k publishes to and subscriber i reads doc_feed(k or i, docs)


def doc_of(idx: int, docs: int) -> int:
    """The doc (0..docs-1) of writer or subscriber ``idx``: ``idx % docs``."""
    return idx % docs


def doc_feed(idx: int, docs: int) -> str:
    """The feed of writer or subscriber ``idx``: :data:`FEED` with one doc (so results stay
    comparable with the single-doc runs), else ``doc/bench-{idx % docs}``."""
    return FEED if docs <= 1 else f"{FEED}-{doc_of(idx, docs)}"


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

    def __init__(self, system: str, workdir: Path, diag: str | None = None, *, name: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        diag = diag if system == COLONY else None
        self.system, self.workdir, self.diag = system, workdir, diag
        self.name = name or system  # several processes of one system: distinct logs and data dirs
        self.extra_args = list(extra_args or [])  # Colony only, e.g. --redis URL --relay-key FILE
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = workdir / f"{self.name}-server.log"

    def command(self) -> list[str]:
        if self.system == COLONY:
            exe = Path(sys.executable).parent / "colony"
            base = [str(exe)] if exe.exists() else [sys.executable, "-m", "relay.ops.cli"]
            if self.diag:  # same relay.ops.cli.main, wrapped with diagnostics (see colony_diag_server.py)
                base = [sys.executable, str(HERE / "colony_diag_server.py")]
            data = self.workdir / ("data" if self.name == self.system else f"data-{self.name}")
            return [*base, "serve", "--host", "127.0.0.1", "--port", "0", "--data", str(data),
                    "--log-level", "warning", *COLONY_ARGS, *self.extra_args]
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

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """Colony's ``GET /health`` (storage and bus counters)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=timeout) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

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

    __slots__ = ("closed_code", "errors", "feed", "frames", "idx", "marks", "messages", "synced", "times", "ws")

    def __init__(self, idx: int, feed: str = FEED) -> None:
        self.idx = idx
        self.feed = feed
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
            await ws.send(json.dumps({"t": "sub", "feed": self.feed, "since": 0}))
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


def _pick(url: str | list[str], idx: int) -> str:
    """Client ``idx``'s server: one URL, or a list that clients are spread over round-robin."""
    return url if isinstance(url, str) else url[idx % len(url)]


def subscriber_proc(conn: Any, system: str, url: str | list[str], indices: list[int], compression: str | None,
                    prime: bool, room_ready: Any, docs: int = 1) -> None:
    if system == PEER and not prime:
        room_ready.wait(60)
    _run_loop(_subscriber_main(conn, system, url, indices, compression, prime, room_ready, docs))


async def _subscriber_main(conn: Any, system: str, url: str | list[str], indices: list[int], compression: str | None,
                           prime: bool, room_ready: Any, docs: int = 1) -> None:
    clients = [SubClient(i, doc_feed(i, docs)) for i in indices]
    tasks: list[asyncio.Task[None]] = []

    def launch(c: SubClient) -> asyncio.Task[None]:
        u = _pick(url, c.idx)
        coro = c.run_colony(u, compression) if system == COLONY else c.run_peer(u, compression)
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
    # expected_by_doc: doc -> the markers published (and not refused) to that doc's feed; every
    # subscriber must receive exactly those of its own doc, once each, and nothing else
    _, expected_by_doc, send_times, t0, t1, drain_s = msg
    exp_sets = {d: set(v) for d, v in expected_by_doc.items()}
    empty: set[bytes] = set()

    def expected_of(c: SubClient) -> set[bytes]:
        return exp_sets.get(doc_of(c.idx, docs), empty)

    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        if all(len(c.marks) >= len(expected_of(c)) for c in clients) and \
                all(expected_of(c) <= set(c.marks) for c in clients):
            break
        await asyncio.sleep(0.05)
    lat = array.array("q")
    sent_at = array.array("q")
    per_client = []
    in_window = 0
    for c in clients:
        got = set(c.marks)
        expected = expected_of(c)
        mine = 0
        for m, t in zip(c.marks, c.times, strict=True):
            if t0 <= t < t1:
                mine += 1
            ts = send_times.get(m)
            if ts is not None and t0 <= ts < t1:
                lat.append(t - ts)
                sent_at.append(ts - t0)
        per_client.append({
            "idx": c.idx, "doc": doc_of(c.idx, docs), "expected": len(expected), "received": len(c.marks),
            "missing": len(expected - got), "in_window": mine,
            "duplicates": len(c.marks) - len(got), "unexpected": len(got - expected),
            "messages": c.messages, "frames": c.frames, "errors": c.errors[:3], "closed_code": c.closed_code,
        })
        in_window += mine
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

    def __init__(self, idx: int, url: str, compression: str | None, feed: str = FEED) -> None:
        from pycrdt import Doc, Text

        self.idx, self.url, self.compression, self.feed = idx, url, compression, feed
        self.doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self._updates: list[bytes] = []
        self.doc.observe(lambda ev: self._updates.append(ev.update))
        self.n = 0
        self.sent: dict[bytes, int] = {}
        self.acked: dict[bytes, int] = {}
        self.refused: dict[bytes, int] = {}  # publishes the relay answered with an error (never stored)
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
        if m in self.sent and m not in self.acked and m not in self.refused:
            self.acked[m] = t
            self.inflight -= 1
            self.room.set()

    def _refuse(self, m: bytes, t: int) -> None:
        if m in self.sent and m not in self.acked and m not in self.refused:
            self.refused[m] = t
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
                        i = part.find(b'"id":"')
                        if i >= 0:  # a refused publish: it frees its slot in the window
                            self._refuse(part[i + 6:i + 70], t)
        except Exception:
            pass

    async def publish_colony(self) -> None:
        from collab import frames
        from collab.events import Event, b64

        _, update = self.next_update()
        ev = Event.create(self.kp, self.feed, "doc.update", {"update": b64(update)})
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


def writer_proc(conn: Any, system: str, url: str | list[str], n: int, sc: Scenario, compression: str | None) -> None:
    _run_loop(_writer_main(conn, system, url, n, sc, compression))


async def _writer_main(conn: Any, system: str, url: str | list[str], n: int, sc: Scenario,
                       compression: str | None) -> None:
    writers = [Writer(i, _pick(url, i), compression, doc_feed(i, sc.docs)) for i in range(n)]
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

    async def room_for_one(w: Writer) -> bool:
        """Wait until ``w`` may send (fewer than ``window`` in flight); False once the load ends."""
        while w.inflight >= sc.window:
            w.room.clear()
            left = (t_end - now_ns()) / NS
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(w.room.wait(), left)
            except TimeoutError:
                return False
        return True

    async def run(w: Writer) -> None:
        publish = w.publish_colony if system == COLONY else w.publish_peer
        if sc.rate is not None:
            interval = int(NS / sc.rate)
            nxt = t_start + (w.idx * interval) // max(1, n)  # spread writers over the interval
            while nxt < t_end:
                await sleep_until(nxt)
                if not await room_for_one(w):  # safety valve only; never reached at the target rate
                    break
                await publish()
                nxt += interval
                now = now_ns()
                if now - nxt > interval:  # fell behind by more than one tick: don't burst to catch up
                    nxt = now
        else:
            await sleep_until(t_start)
            while now_ns() < t_end:
                if not await room_for_one(w):
                    break
                await publish()

    await asyncio.gather(*(run(w) for w in writers))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(w.inflight > 0 for w in writers):
        await asyncio.sleep(0.02)
    sent: dict[bytes, int] = {}
    acked: dict[bytes, int] = {}
    refused: dict[bytes, int] = {}
    errors: list[str] = []
    by_doc: dict[int, list[bytes]] = {}  # doc -> markers its writers published
    for w in writers:
        by_doc.setdefault(doc_of(w.idx, sc.docs), []).extend(w.sent)
        sent.update(w.sent)
        acked.update(w.acked)
        refused.update(w.refused)
        errors.extend(w.errors[:5])
    conn.send(("result", {
        "sent": sent, "acked": acked, "refused": refused, "errors": errors, "by_doc": by_doc,
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


def sample_procs(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: {"cpu_s": proc_cpu_s(pid), "rss_kb": proc_rss_kb(pid)} for name, pid in pids.items()}


def run_workload(system: str, sc: Scenario, compression: str | None, servers: list[ServerProc], *,
                 sub_procs: int = 2, profile_paths: list[Path] | None = None,
                 extra_pids: dict[str, int] | None = None,
                 probe: Callable[[], Any] | None = None) -> dict[str, Any]:
    """One measured run of scenario ``sc`` against already started ``servers``.

    Subscribers and writers are spread round-robin over the servers (client ``i`` uses server
    ``i % len(servers)``). With ``sc.docs`` = D > 1 (Colony only), writer ``k`` publishes to
    ``doc/bench-{k % D}`` and subscriber ``i`` reads ``doc/bench-{i % D}``; the loss check is per
    doc (each subscriber must get exactly its doc's updates) and ``"loss"["per_doc"]`` breaks it
    down. Server CPU and RSS are summed over all servers (``"server"``); with
    several servers every one is also reported on its own (``"servers"``). ``extra_pids``
    (e.g. ``{"redis": pid}``) are sampled the same way and reported under ``"extra"``; their
    CPU counts as part of the system under test, not as other work. ``probe`` is called right
    before and right after the measured window (``"probe": {"before": ..., "after": ...}``).
    ``profile_paths``: py-spy each server during the window, one output file each."""
    if sc.docs < 1:
        raise ValueError(f"docs must be >= 1, not {sc.docs}")
    if sc.docs > 1 and system != COLONY:
        raise ValueError("several docs (docs > 1) are only implemented for Colony")
    ctx = mp.get_context("fork")
    extra_pids = extra_pids or {}
    rss_start = sum(proc_rss_kb(s.pid) for s in servers)
    urls = [s.url() for s in servers]
    url: str | list[str] = urls[0] if len(urls) == 1 else urls
    procs: list[Any] = []
    conns: list[Any] = []
    profile_text = None
    probes: dict[str, Any] = {}
    try:
        room_ready = ctx.Event()
        nproc = max(1, min(sub_procs, sc.subscribers))
        groups = [list(range(sc.subscribers))[i::nproc] for i in range(nproc)]
        for gi, idxs in enumerate(groups):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=subscriber_proc,
                            args=(child, system, url, idxs, compression, gi == 0, room_ready, sc.docs),
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
        if probe is not None:
            probes["before"] = probe()
        before = [s.sample() for s in servers]
        ex_before = sample_procs(extra_pids)
        lg_before = sum(proc_cpu_s(p.pid) for p in procs)
        box_before = machine_cpu()
        me_before = proc_cpu_s(os.getpid())
        profs = []
        if profile_paths:
            profs = [Profiler(s.pid, sc.duration, path) for s, path in zip(servers, profile_paths, strict=True)]
        time.sleep(max(0.0, (t1 - now_ns()) / NS))
        after = [s.sample() for s in servers]
        ex_after = sample_procs(extra_pids)
        lg_after = sum(proc_cpu_s(p.pid) for p in procs)
        box_after = machine_cpu()
        me_after = proc_cpu_s(os.getpid())
        if probe is not None:
            probes["after"] = probe()

        _, wres = _expect(wparent, "result", 60)
        sent: dict[bytes, int] = wres["sent"]
        acked: dict[bytes, int] = wres["acked"]
        refused: dict[bytes, int] = wres["refused"]
        # per doc: a refused publish was never stored, so not a loss
        expected_by_doc = {d: [m for m in ms if m not in refused] for d, ms in wres["by_doc"].items()}
        for c in sub_conns:
            c.send(("finish", expected_by_doc, sent, t0, t1, 20.0))
        sub_results = [_expect(c, "result", 90)[1] for c in sub_conns]
        rss_end = sum(proc_rss_kb(s.pid) for s in servers)
        if profs:
            texts = [pr.finish() for pr in profs]
            profile_text = texts[0] if len(texts) == 1 else "\n\n".join(
                f"== {s.name} (pid {s.pid}) ==\n{t}" for s, t in zip(servers, texts, strict=True))
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
    cpus = [a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)]
    cpu = sum(cpus)
    threads_before: dict[str, float] = {}
    threads_after: dict[str, float] = {}
    for smp, acc in [(x, threads_before) for x in before] + [(x, threads_after) for x in after]:
        for name, v in smp["threads"].items():
            acc[name] = acc.get(name, 0.0) + v
    ex_cpu = {n: ex_after[n]["cpu_s"] - ex_before[n]["cpu_s"] for n in extra_pids}
    missing = sum(c["missing"] for c in clients)
    dups = sum(c["duplicates"] for c in clients)
    unexpected = sum(c["unexpected"] for c in clients)
    per_doc = []
    for d in range(sc.docs):
        cs = [c for c in clients if c["doc"] == d]
        ms = wres["by_doc"].get(d, [])
        per_doc.append({
            "doc": d, "feed": doc_feed(d, sc.docs), "subscribers": len(cs),
            "writers": sum(1 for k in range(sc.writers) if doc_of(k, sc.docs) == d),
            "published": len(ms), "refused": sum(1 for m in ms if m in refused),
            "published_in_window": sum(1 for m in ms if t0 <= sent[m] < t1),
            "complete_subscribers": sum(1 for c in cs if c["missing"] == 0),
            "missing": sum(c["missing"] for c in cs), "duplicates": sum(c["duplicates"] for c in cs),
            "unexpected": sum(c["unexpected"] for c in cs),
            "delivered_per_s": sum(c["in_window"] for c in cs) / sc.duration,
        })
    result: dict[str, Any] = {
        "system": system,
        "scenario": sc.name,
        "params": {**asdict(sc), "compression": compression or "none", "sub_procs": len(sub_conns)},
        "window_monotonic_s": [t0 / NS, t1 / NS],
        "published": len(sent),
        "acked": len(acked),
        "unacked": len(sent) - len(acked),
        "refused": len(refused),
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
                name: round((threads_after.get(name, 0.0) - threads_before.get(name, 0.0)) / sc.duration, 3)
                for name in sorted(threads_after)
                if threads_after.get(name, 0.0) - threads_before.get(name, 0.0) > 0
            },
            "rss_kb_start": rss_start,
            "rss_kb_before": sum(x["rss_kb"] for x in before),
            "rss_kb_after": sum(x["rss_kb"] for x in after),
            "rss_kb_end": rss_end,
            "exit_code": None,  # filled in by the caller once it has stopped the server(s)
        },
        "loadgen_cpu_cores": (lg_after - lg_before) / sc.duration,
        "machine": {k: (box_after[k] - box_before[k]) / sc.duration for k in box_after},
        "foreign_cores": ((box_after["busy_cores"] - box_before["busy_cores"]) - cpu - sum(ex_cpu.values())
                          - (lg_after - lg_before) - (me_after - me_before)) / sc.duration,
        "messages": {
            "client_sent_updates": len(sent),
            "subscriber_ws_messages": sum(c["messages"] for c in clients),
            "subscriber_frames": sum(c["frames"] for c in clients),
            "subscriber_deliveries": sum(c["received"] for c in clients),
            "expected_deliveries": sum(c["expected"] for c in clients),
            "writer_ws_messages_received": wres["messages_in"],
        },
        "loss": {
            "subscribers": len(clients),
            "complete_subscribers": sum(1 for c in clients if c["missing"] == 0),
            "missing_total": missing,
            "duplicates_total": dups,
            "unexpected_total": unexpected,
            "ok": missing == 0 and dups == 0 and unexpected == 0 and len(clients) == sc.subscribers,
            "per_doc": per_doc,
            "subscriber_errors": [e for c in clients for e in c["errors"]][:5],
            "closed_codes": sorted({c["closed_code"] for c in clients if c["closed_code"] is not None}),
        },
    }
    if len(servers) > 1:
        result["servers"] = [{
            "name": s.name, "pid": s.pid, "cpu_cores": c / sc.duration,
            "main_thread_cores": round((a["threads"]["main"] - b["threads"]["main"]) / sc.duration, 3),
            "rss_kb_after": a["rss_kb"],
        } for s, c, a, b in zip(servers, cpus, after, before, strict=True)]
    if extra_pids:
        result["extra"] = {n: {
            "cpu_s": ex_cpu[n], "cpu_cores": ex_cpu[n] / sc.duration,
            "cpu_us_per_delivery": (ex_cpu[n] * 1e6 / in_window) if in_window else None,
            "rss_kb_before": ex_before[n]["rss_kb"], "rss_kb_after": ex_after[n]["rss_kb"],
        } for n in extra_pids}
    if probe is not None:
        result["probe"] = probes
    if profile_text is not None:
        result["profile_summary"] = profile_text
    return result


def measure(run: Callable[[int], dict[str, Any]], retries: int, max_foreign: float, quiet_wait: float
            ) -> dict[str, Any]:
    """Call ``run(attempt)`` until a run is undisturbed by other work on the machine (at most
    ``1 + retries`` times); returns the least disturbed run, marked ``contaminated`` when even
    that one saw more than ``max_foreign`` cores of other work. Exceptions propagate."""
    r = None
    for attempt in range(1 + retries):
        if quiet_wait > 0:
            wait_quiet(max_foreign, quiet_wait)
        cand = run(attempt)
        cand["contaminated"] = max_foreign > 0 and cand["foreign_cores"] > max_foreign
        if r is None or cand["foreign_cores"] < r["foreign_cores"]:
            r = cand
        if not cand["contaminated"]:
            break
        print(f"[bench]   other work used {cand['foreign_cores']:.2f} cores during the window;"
              f" {'retrying' if attempt < retries else 'keeping the least disturbed run'}", flush=True)
    assert r is not None
    return r


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def median(vals: list[Any]) -> Any:
    v = sorted(x for x in vals if x is not None and x == x)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def machine(extra_versions: tuple[str, ...] = ()) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("pycrdt", "pycrdt-websocket", "websockets", "uvicorn", "uvloop", "starlette", "PyNaCl",
                *extra_versions):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def scenarios_from_args(base: dict[str, Any], names: list[str], args: Any, ap: Any) -> list[Any]:
    """The named base scenarios with the command line's overrides applied (shared by every
    benchmark script): duration, warm-up, subscribers, writers and docs (if the script has
    ``--docs``) always; the rate only for fixed-rate scenarios and the window only for
    as-fast-as-possible ones."""
    from dataclasses import replace

    scenarios = []
    for name in names:
        sc = base[name]
        over: dict[str, Any] = {k: v for k, v in (("duration", args.duration), ("warmup", args.warmup),
                                                  ("subscribers", args.subscribers), ("writers", args.writers),
                                                  ("docs", getattr(args, "docs", None)))
                                if v is not None}
        if getattr(args, "rate", None) is not None and sc.rate is not None:
            over["rate"] = args.rate
        if getattr(args, "window", None) is not None and sc.rate is None:
            over["window"] = args.window
        scenarios.append(replace(sc, **over))
    if any(s.writers > 100 for s in scenarios):
        ap.error("at most 100 writers (markers carry a 2-digit writer number)")
    for s in scenarios:
        if not 1 <= s.docs <= min(s.writers, s.subscribers):
            ap.error(f"{s.name}: docs must be between 1 and min(writers, subscribers) = "
                     f"{min(s.writers, s.subscribers)}, not {s.docs}")
    return scenarios
