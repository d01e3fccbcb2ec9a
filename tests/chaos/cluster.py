"""The parts a chaos run breaks: one redis-server (AOF, fsync always) on a free port, three
``colony serve`` processes of one site on it, and one more relay (its own SQLite store)
federated with the site. Every relay sits behind a :class:`tests.tcpproxy.TcpProxy`, so its
URL survives a restart (the proxy is pointed at the new port) and its links can be cut; the
federation link (the outside relay's to the site, and the site's to it) has proxies of its own.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from collab.keys import Keypair
from tests.procs import RelayProc, start_relay_proc
from tests.redis_server import RedisServer
from tests.tcpproxy import TcpProxy

SITE_PROCS = 3


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Node:
    """One relay process behind its proxy; ``args`` restart it the same way."""

    name: str
    data: Path
    args: tuple[str, ...]
    proxy: TcpProxy
    proc: RelayProc | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return self.proxy.url

    async def launch(self) -> None:
        self.proc = await start_relay_proc(self.data, *self.args, timeout=60, log=self.data.parent / f"{self.name}.log")
        self.proxy.target_port = _port(self.proc.url)

    async def kill_and_restart(self) -> None:
        assert self.proc is not None
        self.proc.kill9()
        await self.proc.proc.wait()
        self.restarts += 1
        await self.launch()

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.proc.pid, sig)

    async def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                await self.proc.stop()


@dataclass
class Cluster:
    tmp: Path
    redis: RedisServer
    site_key: Keypair
    fed_key: Keypair
    operator: Keypair
    site: list[Node] = field(default_factory=list)
    fed: Node | None = None
    fed_links: list[TcpProxy] = field(default_factory=list)  # [outside relay -> site, site -> outside relay]

    @property
    def nodes(self) -> list[Node]:
        assert self.fed is not None
        return [*self.site, self.fed]

    @property
    def site_urls(self) -> list[str]:
        return [n.url for n in self.site]

    def redis_pid(self) -> int | None:
        p = self.redis.proc
        return p.pid if p is not None and p.poll() is None else None

    def redis_signal(self, sig: signal.Signals) -> None:
        pid = self.redis_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def redis_restart(self) -> None:
        """SIGKILL redis-server and start it again on the same port and AOF file."""
        self.redis_signal(signal.SIGCONT)
        await asyncio.to_thread(self.redis.stop, False)
        await asyncio.to_thread(self.redis.launch)

    async def close(self) -> None:
        await asyncio.gather(*(n.stop() for n in [*self.site, *([self.fed] if self.fed else [])]),
                             return_exceptions=True)
        for p in [*(n.proxy for n in self.site), *([self.fed.proxy] if self.fed else []), *self.fed_links]:
            await p.close()
        self.redis_signal(signal.SIGCONT)
        self.redis.stop(graceful=False)


async def start_cluster(tmp: Path) -> Cluster:
    """Redis, the site's three processes and the federated relay, all up and listening."""
    redis = await asyncio.to_thread(RedisServer.start, tmp / "redis", appendonly=True)
    c = Cluster(tmp, redis, Keypair.generate(), Keypair.generate(), Keypair.generate())
    try:
        site_file, fed_file = c.site_key.save(tmp / "site.key"), c.fed_key.save(tmp / "fed.key")
        proxies = [await TcpProxy(0).start() for _ in range(SITE_PROCS + 1)]
        # the federation proxies chain to the relays' own proxies, so they follow restarts
        to_site, to_fed = await TcpProxy(proxies[0].port).start(), await TcpProxy(proxies[-1].port).start()
        c.fed_links = [to_site, to_fed]
        pin = f"*={c.site_key.public_hex}"  # the site homes every feed; the outside relay mirrors
        common = ("--operator", c.operator.public_hex, "--pin", pin, "--snapshot-catchup", "1000000",
                  "--sync-interval", "0.5")
        for i in range(SITE_PROCS):
            args = ("--redis", redis.url, "--redis-prefix", "chaos", "--relay-key", str(site_file),
                    "--public-url", proxies[i].url, "--peer", f"{to_fed.url}#{c.fed_key.public_hex}", *common)
            c.site.append(Node(f"site{i}", tmp / f"site{i}", args, proxies[i]))
        c.fed = Node("fed", tmp / "fed", ("--relay-key", str(fed_file), "--public-url", proxies[-1].url,
                                          "--peer", f"{to_site.url}#{c.site_key.public_hex}", *common),
                     proxies[-1])
        await asyncio.gather(*(n.launch() for n in c.nodes))
    except BaseException:
        await c.close()
        raise
    return c

