#!/usr/bin/env python3
"""Leader election benchmark: Colony's ``lease/`` feeds beside etcd's election API, same TTL.

Colony: one relay process (``colony serve``, SQLite). L leases with C candidates each (every
candidate its own key; the standbys campaign over HTTP, a holder renews over its own WebSocket
every TTL/3, as ``collab.lease.Lease`` does). Measured:

* relay CPU per renewal: the relay process's CPU time over a steady window with every holder
  renewing, divided by the renewals acknowledged in it;
* failover: F times, 10 distinct leases at a time (``--parallel``), a lease's holder is killed
  (its connection dropped, its renewals stop) at a random phase of its renewal cycle; the time
  from the kill until the benchmark's subscriber sees the grant to the next candidate (and,
  beside it, until the grant record's ``rtime``: one clock, one machine).

etcd (``etcd`` 3.4 from Debian's ``etcd-server``, its v3 election API through the JSON gateway):
the same L x C election, every candidate with its own etcd lease kept alive every TTL/3
(:class:`KeepAlives`) calling ``/v3/election/campaign``, which returns once it leads; F times, as
many at a time, a leader's keep-alives stop; the time from then until the next candidate's
campaign call returns. Also etcd's CPU per keep-alive over a steady window. etcd's lessor checks
expiries every 500 ms and refuses TTLs under 1.5 s (default timeouts): use a TTL >= 2000 ms.

    python benchmarks/bench_lease.py                # L=100, C=10, TTL 3000 ms, F=100
    python benchmarks/bench_lease.py --quick        # L=6, C=3, TTL 2000 ms, F=3 (a correctness run)
    python benchmarks/bench_lease.py --json out.json --no-etcd
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import faulthandler
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.procs import dump_tasks, proc_cpu_s  # noqa: E402
from benchmarks.harness.stats import lat_summary  # noqa: E402
from collab.client import Client  # noqa: E402
from collab.errors import RelayError  # noqa: E402
from collab.events import Event, now_ms  # noqa: E402
from collab.keys import Keypair  # noqa: E402
from collab.lease import Lease  # noqa: E402

LISTEN_RE = re.compile(r"listening on (http://[\d.]+:\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Colony ------------------------------------------------------------------------------------------
def start_relay(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "relay.ops.cli", "serve", "--port", "0", "--data", str(data),
                             "--log-level", "warning"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the relay exited before listening")
        m = LISTEN_RE.search(line)
        if m:
            out = proc.stdout
            threading.Thread(target=lambda out=out: [None for _ in out], daemon=True).start()  # never block on the pipe
            return proc, m.group(1)


class Holder:
    """One candidate that holds its lease: its own connection, renewing every TTL/3."""

    def __init__(self, url: str, key: Keypair, feed: str, ttl_ms: int, granted: int, seen: float) -> None:
        self.url, self.key, self.feed, self.ttl_ms = url, key, feed, ttl_ms
        self.granted, self.seen = granted, seen  # the grant's rtime; when the benchmark saw it (monotonic)
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.renewals = 0
        self.killed = False  # by the benchmark (a planned failover)

    def start(self, epoch: int) -> None:
        self.task = asyncio.ensure_future(self._renew(epoch))

    async def _renew(self, epoch: int) -> None:
        self.client = await Client(self.url, self.key, backoff_base=0.05, backoff_max=0.5).__aenter__()
        try:
            while True:  # renew at once (as collab.lease.Lease does on its grant), then every TTL/3
                await self.client.publish(self.feed, "lease.renew", {"epoch": epoch})
                self.renewals += 1
                await asyncio.sleep(self.ttl_ms / 3000)  # the renewal cadence
        except RelayError as exc:  # lost the lease (the benchmark set-up was too slow): say so
            print(f"{self.feed}: renewal refused: {exc}", file=sys.stderr)

    async def kill(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.client is not None:
            await self.client.aclose()


class Changes:
    """Wake whoever waits for a condition on the benchmark's state."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()

    async def until(self, pred: Callable[[], bool], timeout: float = 120.0) -> None:
        async def wait() -> None:
            while not pred():
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(wait(), timeout)


async def waves(names: list[str], n_fail: int, parallel: int, ttl_ms: int,
                one: Callable[[str], Awaitable[None]]) -> None:
    """``n_fail`` failovers, ``parallel`` distinct elections at a time, each killed at a random
    phase of its renewal cycle (``one`` sleeps that phase, kills, waits for the next leader)."""
    todo = [names[i % len(names)] for i in range(n_fail)]
    step = max(1, min(parallel, len(names)))
    for w in range(0, n_fail, step):
        await asyncio.gather(*(one(name) for name in todo[w:w + step]))


async def colony_run(n_leases: int, n_cands: int, ttl_ms: int, n_fail: int, window_s: float,
                     parallel: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-lease-"))
    proc, url = start_relay(tmp / "data")
    holders: dict[str, Holder] = {}
    expired: list[str] = []  # leases whose holder was replaced other than by a benchmark kill
    reaped: list[asyncio.Future[None]] = []
    grants: asyncio.Queue[tuple[str, str, int, int, float]] = asyncio.Queue()
    try:
        keys = {f"lease/b{i}": [Keypair.generate() for _ in range(n_cands)] for i in range(n_leases)}
        by_hex = {k.public_hex: k for ks in keys.values() for k in ks}
        watcher = await Client(url, Keypair.generate()).__aenter__()
        views: list[Lease] = []
        for feed in keys:
            view = Lease(watcher, feed)

            def on(rec: Any, _b: Any, after: Any, feed: str = feed) -> None:
                if rec.event.kind == "lease.granted":
                    grants.put_nowait((feed, after.holder, after.epoch, rec.rtime, time.monotonic()))

            view.listeners.append(on)
            await view.start()
            views.append(view)
        changes = Changes()

        async def follow() -> None:  # whoever is granted starts renewing
            while True:
                feed, holder, epoch, rtime, seen = await grants.get()
                prev = holders.get(feed)
                if prev is not None and not prev.killed:  # expired unplanned (a machine too slow for the TTL)
                    expired.append(feed)
                    reaped.append(asyncio.ensure_future(prev.kill()))
                h = holders[feed] = Holder(url, by_hex[holder], feed, ttl_ms, rtime, seen)
                h.start(epoch)
                changes.set()

        follower = asyncio.ensure_future(follow())  # before the campaigns: grants come at once
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            async def campaign(feed: str, key: Keypair) -> None:
                ev = Event.create(key, feed, "lease.campaign", {"ttl_ms": ttl_ms})
                r = await http.post(f"/feeds/{feed}/events", json=ev.to_wire())
                r.raise_for_status()
            for c in range(n_cands):  # campaign order: candidate 0 of every lease first
                await asyncio.gather(*(campaign(feed, ks[c]) for feed, ks in keys.items()))

        try:
            await changes.until(lambda: len(holders) == n_leases, 30)
        except TimeoutError:
            raise RuntimeError(f"no grant seen: {[(v.feed, v.state.epoch, v.state.holder) for v in views]}") from None
        await asyncio.sleep(ttl_ms / 1000)  # every holder into its renewal rhythm
        cpu0, n0 = proc_cpu_s(proc.pid), sum(h.renewals for h in holders.values())
        t0 = time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, n1 = proc_cpu_s(proc.pid), sum(h.renewals for h in holders.values())
        elapsed = time.monotonic() - t0
        renewals = n1 - n0
        cpu_per_renewal_us = (cpu1 - cpu0) / renewals * 1e6 if renewals else None

        failovers: list[int] = []  # kill -> the benchmark sees the grant (as etcd's: campaign returns)
        granted: list[int] = []  # kill -> the grant's rtime (the relay's clock)

        async def one(feed: str) -> None:
            await asyncio.sleep(random.uniform(0, ttl_ms / 3000))  # a random phase
            old = holders[feed]
            old.killed = True
            killed, t = now_ms(), time.monotonic()
            await old.kill()
            try:
                await changes.until(lambda: holders[feed] is not old, 2 * ttl_ms / 1000 + 10)
            except TimeoutError:
                v = views[feeds.index(feed)].state
                raise RuntimeError(f"{feed}: no grant seen since its holder was killed (the view: epoch "
                                   f"{v.epoch}, holder {v.holder}, seq {v.seq})") from None
            new = holders[feed]
            failovers.append(int((new.seen - t) * 1000))
            granted.append(new.granted - killed)

        feeds = list(keys)
        await waves(feeds, n_fail, parallel, ttl_ms, one)
        follower.cancel()
        for h in holders.values():
            await h.kill()
        for view in views:
            await view.close()
        await watcher.aclose()
        return {"leases": n_leases, "candidates": n_cands, "ttl_ms": ttl_ms, "renewals": renewals,
                "unplanned_expiries": len(expired),
                "renewals_per_s": renewals / elapsed,
                "relay_cpu_per_renewal_us": cpu_per_renewal_us,
                "failover_ms": lat_summary([v * 1_000_000 for v in failovers]), "failovers": failovers,
                "grant_ms": lat_summary([v * 1_000_000 for v in granted])}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


# -- etcd ----------------------------------------------------------------------------------------------
def start_etcd(etcd: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    cport, pport = free_port(), free_port()
    curl = f"http://127.0.0.1:{cport}"
    proc = subprocess.Popen([etcd, "--data-dir", str(tmp / "etcd"), "--listen-client-urls", curl,
                             "--advertise-client-urls", curl, "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                             "--initial-cluster", f"default=http://127.0.0.1:{pport}", "--log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    version = subprocess.run([etcd, "--version"], capture_output=True, text=True, check=False).stdout
    return proc, curl, version.split("\n")[0]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def cancel_all(tasks: list[asyncio.Future[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class KeepAlives:
    """Every candidate's etcd lease kept alive every TTL/3, as etcd's own client does: one
    keep-alive stream for all of them, on a thread of its own (the Go client's goroutine), so the
    benchmark's work never delays a keep-alive. Through the JSON gateway that is one
    ``/v3/lease/keepalive`` request per tick whose body is the due leases' requests one after the
    other (the gateway sends each on one gRPC stream and answers each; see ``BATCH``). One request per lease and
    keep-alive instead (1000 a second here) is more than a Python client gets through the gateway
    in time while 1000 campaigns open their connections: leases expire before or while their
    candidates campaign, and an expired candidate's campaign never returns."""

    TICK_S = 0.02
    #: keep-alives per request: the gateway (Go's HTTP/1.1 server, not full duplex) may stop
    #: reading a request body once it has begun to answer, so a body stays within what it has
    #: read by then (about 4 KiB); the requests it did not answer go again at the next tick
    BATCH = 64

    def __init__(self, url: str, ttl_s: int) -> None:
        self.url, self.every = url, ttl_s / 3
        self.due: dict[int, float] = {}  # lease -> when its next keep-alive is due (monotonic)
        self.sent = 0
        self.expired: set[int] = set()  # leases a keep-alive found expired
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="keepalives", daemon=True)
        self._thread.start()

    def add(self, lease: int) -> None:
        with self._lock:
            self.due[lease] = time.monotonic() + self.every

    def drop(self, lease: int) -> None:
        with self._lock:
            self.due.pop(lease, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _send(self, http: httpx.AsyncClient, ids: list[int]) -> None:
        r = await http.post("/v3/lease/keepalive", content="".join(json.dumps({"ID": i}) for i in ids))
        r.raise_for_status()
        answered = set()
        for line in r.text.splitlines():
            res = json.loads(line).get("result", {}) if line else {}
            if not res:
                continue
            answered.add(lease := int(res["ID"]))
            if int(res.get("TTL", 0)) <= 0:
                self.expired.add(lease)
                self.drop(lease)
        self.sent += len(answered)
        with self._lock:
            for lease in set(ids) - answered:  # the gateway cut the stream short: again at the next tick
                if lease in self.due:
                    self.due[lease] = 0.0

    async def _run(self) -> None:
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
                while not self._stop.is_set():
                    now = time.monotonic()
                    with self._lock:
                        ids = [lease for lease, t in self.due.items() if t <= now]
                        for lease in ids:
                            self.due[lease] = now + self.every
                    batches = [ids[i:i + self.BATCH] for i in range(0, len(ids), self.BATCH)]
                    await asyncio.gather(*(self._send(http, b) for b in batches))
                    await asyncio.sleep(self.TICK_S)
        except BaseException as exc:  # noqa: BLE001 (the main loop reports it)
            self.error = exc


async def etcd_run(n_leases: int, n_cands: int, ttl_ms: int, n_fail: int, window_s: float,
                   parallel: int) -> dict[str, Any]:
    etcd = shutil.which("etcd")
    if etcd is None:
        return {"error": "etcd is not installed (apt-get install etcd-server)"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
    proc, curl, version = start_etcd(etcd, tmp)
    ka: KeepAlives | None = None
    tasks: list[asyncio.Future[None]] = []
    try:
        held = n_leases * n_cands + 16  # every waiting campaign holds its gateway request (and connection) open
        limits = httpx.Limits(max_connections=held, max_keepalive_connections=held)
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=curl, timeout=30))
            waiting = await stack.enter_async_context(httpx.AsyncClient(base_url=curl, timeout=3600.0, limits=limits))
            stack.push_async_callback(cancel_all, tasks)  # first: no campaign in flight as the clients close
            for _ in range(200):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            ttl_s = max(1, ttl_ms // 1000)
            ka = KeepAlives(curl, ttl_s)
            leader: dict[str, tuple[int, float]] = {}  # election -> (lease id, monotonic time elected)
            changes = Changes()
            planned: set[int] = set()  # leases the benchmark stopped keeping alive
            unplanned = 0
            slots = asyncio.Semaphore(32)

            def failed() -> list[BaseException]:
                return [e for t in tasks if t.done() and not t.cancelled() and (e := t.exception()) is not None]

            async def candidate(name: str, i: int) -> None:
                nonlocal unplanned
                async with slots:
                    for attempt in range(5):  # a loaded etcd may answer "request timed out": again
                        r = await http.post("/v3/lease/grant", json={"TTL": ttl_s})
                        if r.status_code < 500 or attempt == 4:
                            break
                    r.raise_for_status()
                lease = int(r.json()["ID"])
                assert ka is not None
                ka.add(lease)
                r = await waiting.post("/v3/election/campaign", json={"name": b64(name), "lease": lease,
                                                                      "value": b64(f"c{i}")})
                r.raise_for_status()  # returns once this candidate leads
                prev = leader.get(name)
                if prev is not None and prev[0] not in planned:
                    unplanned += 1
                leader[name] = (lease, time.monotonic())
                changes.set()

            names = [f"bench/e{i}" for i in range(n_leases)]
            for c in range(n_cands):  # candidate 0 of every election first, as on Colony
                for n in names:
                    tasks.append(t := asyncio.ensure_future(candidate(n, c)))
                    t.add_done_callback(lambda _t: changes.set())  # a failed candidate ends the wait
                    await asyncio.sleep(0.002)  # a paced start: ~500 connections a second to the gateway
            await changes.until(lambda: len(leader) == n_leases or bool(failed()))
            if failed():
                return {"error": f"{len(failed())} candidates failed, e.g. {failed()[0]!r}"}
            await asyncio.sleep(ttl_ms / 1000)  # every keep-alive into its rhythm
            cpu0, n0, t0 = proc_cpu_s(proc.pid), ka.sent, time.monotonic()
            await asyncio.sleep(window_s)
            cpu1, n1, elapsed = proc_cpu_s(proc.pid), ka.sent, time.monotonic() - t0
            failovers: list[int] = []

            async def one(name: str) -> None:
                await asyncio.sleep(random.uniform(0, ttl_ms / 3000))  # a random phase
                lease, _ = leader[name]
                planned.add(lease)
                assert ka is not None
                ka.drop(lease)  # the leader dies: its keep-alives stop
                killed = time.monotonic()
                await changes.until(lambda: leader[name][0] != lease)
                failovers.append(int((leader[name][1] - killed) * 1000))

            lost = len(ka.expired)  # before any kill: the set-up was too slow for the TTL
            if lost or ka.error is not None:
                return {"error": f"{lost} candidates' leases expired during the set-up ({ka.error!r})"}
            await waves(names, n_fail, parallel, ttl_ms, one)
            if failed():
                return {"error": f"{len(failed())} campaigns failed, e.g. {failed()[0]!r}"}
        keepalives = n1 - n0
        return {"version": version, "leases": n_leases, "candidates": n_cands, "ttl_ms": ttl_s * 1000,
                "keepalives": keepalives, "keepalives_per_s": keepalives / elapsed,
                "etcd_cpu_per_keepalive_us": (cpu1 - cpu0) / keepalives * 1e6 if keepalives else None,
                "unplanned_expiries": unplanned,
                "failover_ms": lat_summary([v * 1_000_000 for v in failovers]), "failovers": failovers}
    finally:
        await cancel_all(tasks)
        if ka is not None:
            ka.close()
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


def show(name: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{name}: {r['error']}", flush=True)
        return
    f = r["failover_ms"]
    line = (f"{name}: L={r['leases']} C={r['candidates']} TTL={r['ttl_ms']} ms  failover p50 {f['p50']:.0f} ms "
            f"p99 {f['p99']:.0f} ms max {f['max']:.0f} ms (n={len(r['failovers'])}, "
            f"unplanned expiries {r['unplanned_expiries']})")
    if "grant_ms" in r:
        line += f"  to the grant's rtime: p50 {r['grant_ms']['p50']:.0f} p99 {r['grant_ms']['p99']:.0f} ms"
    if r.get("relay_cpu_per_renewal_us") is not None:
        line += f"  relay CPU/renewal {r['relay_cpu_per_renewal_us']:.0f} us ({r['renewals']} renewals)"
    if r.get("etcd_cpu_per_keepalive_us") is not None:
        line += f"  etcd CPU/keep-alive {r['etcd_cpu_per_keepalive_us']:.0f} us ({r['keepalives']} keep-alives)"
    print(line, flush=True)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": os.getloadavg()}
    if a.quick:  # a correctness run that hangs says which task waits where (to stderr)
        asyncio.get_running_loop().call_later(38, dump_tasks)
    out["colony"] = await colony_run(a.leases, a.candidates, a.ttl_ms, a.failovers, a.window, a.parallel)
    show("colony", out["colony"])
    if not a.no_etcd:
        out["etcd"] = await etcd_run(a.etcd_leases or a.leases, a.candidates, a.ttl_ms, a.failovers, a.window,
                                     a.parallel)
        show("etcd", out["etcd"])
        c, e = out["colony"]["failover_ms"], out["etcd"].get("failover_ms")
        if e:
            print(f"colony / etcd failover: p50 {c['p50'] / e['p50']:.2f}  p99 {c['p99'] / e['p99']:.2f}", flush=True)
    out["load_after"] = os.getloadavg()
    print(f"load average before {out['load_before'][0]:.2f}, after {out['load_after'][0]:.2f}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leases", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--ttl-ms", type=int, default=3000)
    ap.add_argument("--failovers", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=10, help="failovers at a time (in distinct elections)")
    ap.add_argument("--window", type=float, default=10.0, help="seconds of steady renewals measured for CPU")
    ap.add_argument("--quick", action="store_true", help="L=6, C=3, TTL 2000 ms, F=3 at once, window 1 s")
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--etcd-leases", type=int, default=None,
                    help="elections on etcd (default: --leases)")
    ap.add_argument("--json", default=None, metavar="FILE")
    a = ap.parse_args()
    if a.quick:
        a.leases, a.candidates, a.ttl_ms, a.failovers, a.parallel, a.window = 6, 3, 2000, 3, 3, 1.0
        faulthandler.dump_traceback_later(40)  # and which thread
    out = asyncio.run(run(a))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
