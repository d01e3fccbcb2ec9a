#!/usr/bin/env python3
"""Leader election benchmark: Colony's ``lease/`` feeds beside etcd's election API, same TTL.

Colony: one relay process (``colony serve``, SQLite). L leases with C candidates each (every
candidate its own key; the standbys campaign over HTTP, a holder renews over its own WebSocket
every TTL/3, as ``collab.lease.Lease`` does). Measured:

* relay CPU per renewal: the relay process's CPU time over a steady window with every holder
  renewing, divided by the renewals acknowledged in it;
* failover: F times, a lease's holder is killed (its connection dropped, its renewals stop, at a
  random phase of its renewal cycle); the time from the kill to the relay's grant to the next
  candidate (the grant record's ``rtime``; one clock, one machine).

etcd (``etcd`` 3.4 from Debian's ``etcd-server``, its v3 election API through the JSON gateway):
the same L x C election (``/v3/election/campaign`` with one lease per candidate, keep-alive every
TTL/3); F times a leader's keep-alive stops; the time from then to the next candidate's campaign
call returning (it is leader). etcd's lessor checks expiries every 500 ms and refuses TTLs under
its minimum (1.5 s with default timeouts): use a TTL of at least 2000 ms.

    python benchmarks/bench_lease.py                # L=100, C=10, TTL 3000 ms, F=30
    python benchmarks/bench_lease.py --quick        # L=6, C=3, TTL 2000 ms, F=3 (a correctness run)
    python benchmarks/bench_lease.py --json out.json --no-etcd
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.procs import proc_cpu_s  # noqa: E402
from benchmarks.harness.stats import lat_summary  # noqa: E402
from collab.client import Client  # noqa: E402
from collab.errors import RelayError  # noqa: E402
from collab.events import Event, now_ms  # noqa: E402
from collab.keys import Keypair  # noqa: E402
from collab.lease import Lease  # noqa: E402

LISTEN_RE = re.compile(r"listening on (http://[\d.]+:\d+)")


def free_port() -> int:
    import socket

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

    def __init__(self, url: str, key: Keypair, feed: str, ttl_ms: int) -> None:
        self.url, self.key, self.feed, self.ttl_ms = url, key, feed, ttl_ms
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


async def colony_run(n_leases: int, n_cands: int, ttl_ms: int, n_fail: int, window_s: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-lease-"))
    proc, url = start_relay(tmp / "data")
    holders: dict[str, Holder] = {}
    expired: list[str] = []  # leases whose holder was replaced other than by a benchmark kill
    reaped: list[asyncio.Future[None]] = []
    grants: asyncio.Queue[tuple[str, str, int, int]] = asyncio.Queue()
    try:
        keys = {f"lease/b{i}": [Keypair.generate() for _ in range(n_cands)] for i in range(n_leases)}
        by_hex = {k.public_hex: k for ks in keys.values() for k in ks}
        watcher = await Client(url, Keypair.generate()).__aenter__()
        views: list[Lease] = []
        for feed in keys:
            view = Lease(watcher, feed)

            def on(rec: Any, _b: Any, after: Any, feed: str = feed) -> None:
                if rec.event.kind == "lease.granted":
                    grants.put_nowait((feed, after.holder, after.epoch, rec.rtime))

            view.listeners.append(on)
            await view.start()
            views.append(view)
        changed = asyncio.Event()

        async def follow() -> None:  # whoever is granted starts renewing
            while True:
                feed, holder, epoch, _ = await grants.get()
                prev = holders.get(feed)
                if prev is not None and not prev.killed:  # expired unplanned (a machine too slow for the TTL)
                    expired.append(feed)
                    reaped.append(asyncio.ensure_future(prev.kill()))
                h = holders[feed] = Holder(url, by_hex[holder], feed, ttl_ms)
                h.start(epoch)
                changed.set()

        async def until(pred: Any) -> None:
            while not pred():
                changed.clear()
                await changed.wait()

        follower = asyncio.ensure_future(follow())  # before the campaigns: grants come at once
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            async def campaign(feed: str, key: Keypair) -> None:
                ev = Event.create(key, feed, "lease.campaign", {"ttl_ms": ttl_ms})
                r = await http.post(f"/feeds/{feed}/events", json=ev.to_wire())
                r.raise_for_status()
            for c in range(n_cands):  # campaign order: candidate 0 of every lease first
                await asyncio.gather(*(campaign(feed, ks[c]) for feed, ks in keys.items()))

        await until(lambda: len(holders) == n_leases)
        await asyncio.sleep(ttl_ms / 1000)  # every holder into its renewal rhythm
        cpu0, n0 = proc_cpu_s(proc.pid), sum(h.renewals for h in holders.values())
        t0 = time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, n1 = proc_cpu_s(proc.pid), sum(h.renewals for h in holders.values())
        elapsed = time.monotonic() - t0
        renewals = n1 - n0
        cpu_per_renewal_us = (cpu1 - cpu0) / renewals * 1e6 if renewals else None

        failovers: list[int] = []
        feeds = list(keys)
        for i in range(n_fail):
            feed = feeds[i % n_leases]
            await asyncio.sleep(random.uniform(0, ttl_ms / 3000))  # a random phase of the renewal cycle
            old = holders[feed]
            old.killed = True
            killed = now_ms()
            await old.kill()
            await until(lambda feed=feed, old=old: holders[feed] is not old)
            view = views[feeds.index(feed)]
            failovers.append(view.state.granted - killed)
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
                "failover_ms": lat_summary([v * 1_000_000 for v in failovers]), "failovers": failovers}
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


async def etcd_run(n_leases: int, n_cands: int, ttl_ms: int, n_fail: int) -> dict[str, Any]:
    etcd = shutil.which("etcd")
    if etcd is None:
        return {"error": "etcd is not installed (apt-get install etcd-server)"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
    proc, curl, version = start_etcd(etcd, tmp)
    try:
        conns = n_leases * n_cands + 64
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(base_url=curl, timeout=httpx.Timeout(3600.0), limits=limits) as http:
            for _ in range(200):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            ttl_s = max(1, ttl_ms // 1000)
            alive: dict[int, asyncio.Task[None]] = {}
            leader: dict[str, tuple[int, float]] = {}  # election -> (lease id, monotonic time elected)
            elected = asyncio.Event()

            async def keepalive(lease: int) -> None:
                while True:
                    await asyncio.sleep(ttl_s / 3)
                    await http.post("/v3/lease/keepalive", json={"ID": lease})

            async def candidate(name: str, i: int) -> None:
                r = await http.post("/v3/lease/grant", json={"TTL": ttl_s})
                lease = int(r.json()["ID"])
                alive[lease] = asyncio.ensure_future(keepalive(lease))
                r = await http.post("/v3/election/campaign", json={"name": b64(name), "lease": lease,
                                                                   "value": b64(f"c{i}")})
                r.raise_for_status()  # returns once this candidate leads
                leader[name] = (lease, time.monotonic())
                elected.set()

            names = [f"bench/e{i}" for i in range(n_leases)]
            tasks = [asyncio.ensure_future(candidate(n, c)) for c in range(n_cands) for n in names]
            while len(leader) < n_leases:
                elected.clear()
                await elected.wait()
            failovers: list[int] = []
            for i in range(n_fail):
                name = names[i % n_leases]
                await asyncio.sleep(random.uniform(0, ttl_s / 3))
                lease, _ = leader[name]
                alive.pop(lease).cancel()  # the leader dies: its keep-alives stop
                killed = time.monotonic()
                while leader[name][0] == lease:
                    elected.clear()
                    await elected.wait()
                failovers.append(int((leader[name][1] - killed) * 1000))
            for t in [*tasks, *alive.values()]:
                t.cancel()
            await asyncio.gather(*tasks, *alive.values(), return_exceptions=True)
        return {"version": version, "leases": n_leases, "candidates": n_cands, "ttl_ms": ttl_s * 1000,
                "failover_ms": lat_summary([v * 1_000_000 for v in failovers]), "failovers": failovers}
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


def show(name: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{name}: {r['error']}", flush=True)
        return
    f = r["failover_ms"]
    cpu = r.get("relay_cpu_per_renewal_us")
    print(f"{name}: L={r['leases']} C={r['candidates']} TTL={r['ttl_ms']} ms  failover p50 {f['p50']:.0f} ms "
          f"p99 {f['p99']:.0f} ms max {f['max']:.0f} ms (n={len(r['failovers'])})"
          + (f"  relay CPU/renewal {cpu:.0f} us ({r['renewals']} renewals)" if cpu is not None else ""), flush=True)


async def run(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"colony": await colony_run(a.leases, a.candidates, a.ttl_ms, a.failovers, a.window)}
    show("colony", out["colony"])
    if not a.no_etcd:
        out["etcd"] = await etcd_run(a.etcd_leases or a.leases, a.candidates, a.ttl_ms, a.failovers)
        show("etcd", out["etcd"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leases", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--ttl-ms", type=int, default=3000)
    ap.add_argument("--failovers", type=int, default=30)
    ap.add_argument("--window", type=float, default=10.0, help="seconds of steady renewals measured for CPU")
    ap.add_argument("--quick", action="store_true", help="L=6, C=3, TTL 2000 ms, F=3, window 1 s")
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--etcd-leases", type=int, default=None,
                    help="elections on etcd (default: --leases; each candidate holds one gateway request open)")
    ap.add_argument("--json", default=None, metavar="FILE")
    a = ap.parse_args()
    if a.quick:
        a.leases, a.candidates, a.ttl_ms, a.failovers, a.window = 6, 3, 2000, 3, 1.0
    out = asyncio.run(run(a))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
