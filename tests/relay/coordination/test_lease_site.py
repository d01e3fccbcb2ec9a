"""A lease on a two-process Redis site whose holder dies together with the relay process it is
connected to (SIGKILL of both, a machine going down), twice. That process runs the lease's
timers and sequences the lease feed (with sequencer leases, the default, it holds the feed's
sequencer lease: every publish went through it). The other process expires the holder and
grants the next candidate within the bound docs/coordination.md gives: the TTL plus a timer
tick of the death, or with sequencer leases max(TTL, sequencer lease + a hand-off tick) plus a
timer tick (the expiry waits for the dead sequencer's lease to lapse).

Round 1 is the hard case: the surviving process never loaded the lease feed (it started before
the lease existed and nobody used it there), so the lease's timers ran in the killed process
only; the candidates' clients fail over to the survivor, which loads the feed and must arm the
expiry itself. In round 2 the process killed in round 1 has been restarted (adopting the lease
as it started) and the other one is killed. Every round: epochs strictly increase; then every
fenced note the first holder had acked is stored, ``colony replay --verify`` proves no overlap,
and each grant and expiry is stored once.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from collab import frames
from collab.client import Client
from collab.events import Event, Record, now_ms
from collab.keys import Keypair
from collab.lease import Lease
from collab.replay import fetch_records
from relay.core.sequencer import TICK as SEQ_TICK
from relay.ops.runner import serving
from relay.storage.sqlite import SqliteStorage
from tests.conftest import make_config
from tests.procs import RelayProc, start_relay_proc
from tests.relay.coordination.leaseprocs import FAST, Agent, replay_verify
from tests.tcpproxy import TcpProxy

TTL = 1500
ROUNDS = 2  # the survivor never loaded the lease; then it had adopted it when it (re)started
TICK = 500  # a timer tick on a loaded 2-core machine (the bound the single-process test uses)
HAND_OFF_TICK = int(SEQ_TICK * 1000)  # how often a waiting hand-off asks for a lapsed sequencer lease


class SiteProc:
    """One relay process of the site behind a proxy, so its URL survives a restart."""

    def __init__(self, name: str, data: Path, args: tuple[str, ...], proxy: TcpProxy) -> None:
        self.name, self.data, self.args, self.proxy = name, data, args, proxy
        self.proc: RelayProc | None = None

    async def launch(self) -> None:
        self.proc = await start_relay_proc(self.data, *self.args, timeout=60)
        self.proxy.target_port = int(self.proc.url.rsplit(":", 1)[1])

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()
        await self.proc.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
@pytest.mark.parametrize("seq_lease", [2.0, 0.0], ids=["sequencer-lease", "no-sequencer-lease"])
async def test_the_lease_moves_when_its_holder_and_its_relay_process_are_killed(backend: Any, tmp_path: Path,
                                                                                seq_lease: float) -> None:
    feed, notes = "lease/site-leader", "notes/site-leader"
    site_key = Keypair.generate()  # the site's processes share their relay key, as a real site does
    key_file = site_key.save(tmp_path / "site.key")
    args = (*backend.serve_args("s"), "--relay-key", str(key_file), "--sync-interval", "0.5",
            "--sequencer-lease", str(seq_lease))
    bound = max(TTL, int(seq_lease * 1000) + HAND_OFF_TICK if seq_lease else 0) + TICK
    procs = [SiteProc(n, tmp_path / n, args, await TcpProxy(0).start()) for n in ("a", "b")]
    agents: list[Agent] = []
    try:
        for p in procs:
            await p.launch()  # both up before the lease exists: b never loads it in round 1
        urls = ",".join(p.proxy.url for p in procs)  # every client starts on a, fails over to b
        keys = [Keypair.generate() for _ in range(6)]
        agents.append(await Agent.start(urls, feed, keys[0], 50, TTL, "write", notes))
        await agents[0].line(lambda x: x == "wrote 3")  # the first holder writes fenced notes
        for k, prio in zip(keys[1:], (40, 30, 20, 0, 0), strict=True):
            agents.append(await Agent.start(urls, feed, k, prio, TTL))
        by_key = {k.public_hex: a for k, a in zip(keys, agents, strict=True)}
        async with Client([p.proxy.url for p in procs], Keypair.generate(), **FAST) as watcher:
            view = Lease(watcher, feed)
            await view.start()
            try:
                st = await view.wait_for(lambda s: s.holder == keys[0].public_hex and len(s.candidates) == 5, 30)
                on = 0  # every client is on this process (they all fail over together)
                for rnd in range(ROUNDS):
                    holder = by_key[st.holder or ""]
                    assert st.holder == keys[rnd].public_hex and st.epoch == rnd + 1
                    await holder.line(lambda x: x.startswith("granted"))
                    killed = now_ms()
                    await procs[on].kill9()
                    await holder.kill()
                    try:
                        st = await view.wait_for(lambda s, e=st.epoch: s.epoch > e and s.holder is not None, 15)
                    except TimeoutError:
                        pytest.fail(f"round {rnd}: the lease did not move: {view.state}")
                    granted = st.history[-1]["granted"]
                    assert st.epoch == rnd + 2 and st.holder == keys[rnd + 1].public_hex
                    assert st.history[-2]["end"] == "expired"
                    assert granted - killed <= bound, (rnd, granted - killed)
                    if rnd < ROUNDS - 1:
                        await procs[on].launch()  # back, adopting the lease as it starts
                        on = 1 - on
                assert [h["epoch"] for h in st.history] == list(range(1, ROUNDS + 2))
                wrote = {int(x.split()[1]) for x in agents[0].lines if x.startswith("wrote ")}
            finally:
                await view.close()
        url = procs[1 - on].proxy.url  # the survivor
        stored = {r["event"]["body"]["n"] for r in await fetch_records(url, notes)}
        assert wrote <= stored, sorted(wrote - stored)  # no acked note lost with its relay process
        kinds = [r["event"]["kind"] for r in await fetch_records(url, feed)]
        assert kinds.count("lease.granted") == ROUNDS + 1 and kinds.count("lease.expired") == ROUNDS
        await replay_verify(url, feed)
    finally:
        for a in agents:
            await a.kill()
        for p in procs:
            with contextlib.suppress(Exception):
                await p.stop()
            await p.proxy.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_relay_that_loads_a_lease_owing_a_grant_makes_it(backend: Any, tmp_path: Path) -> None:
    """The holder's resignation is stored but the relay died before it granted the standby (its
    log is written here, offline, as that relay would have left it): loading the lease on start
    makes the grant, with the same id the lost follow-up would have had."""
    feed, ttl = "lease/owed", 60_000
    cfg = make_config(tmp_path / "r", backend)
    x, y = Keypair.generate(), Keypair.generate()
    async with serving(cfg) as running:
        async with Client(running.url, x, **FAST) as cx, Client(running.url, y, **FAST) as cy:
            lx = Lease(cx, feed, ttl_ms=ttl)
            await lx.start()
            await lx.campaign()
            await lx.wait_for(lambda s: s.holder == x.public_hex, 10)
            await Lease(cy, feed, ttl_ms=ttl).campaign()
            await lx.wait_for(lambda s: len(s.candidates) == 1, 10)
            await lx.close()
    relay_key = Keypair.load_or_create(cfg.data_dir / "relay.key")
    async with SqliteStorage(cfg.data_dir) as storage:
        head = await storage.head(feed)
        assert head is not None
        rec = Record.seal(relay_key, Event.create(x, feed, "lease.resign", {"epoch": 1}), head.seq + 1, head.hash)
        await storage.append(feed, head.seq, [(rec, frames.encode(rec.to_wire()))])
    async with serving(cfg) as running:
        async with Client(running.url, Keypair.generate(), **FAST) as cw:
            view = Lease(cw, feed)
            await view.start()
            st = await view.wait_for(lambda s: s.holder is not None, 10)
            await view.close()
        assert st.holder == y.public_hex and st.epoch == 2
        recs = await fetch_records(running.url, feed)
        assert recs[-1]["event"]["kind"] == "lease.granted" and recs[-1]["seq"] == head.seq + 2
        assert recs[-1]["event"]["ts"] == rec.rtime  # the follow-up the dead relay owed, exactly
