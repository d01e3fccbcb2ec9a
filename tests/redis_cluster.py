"""A real Redis Cluster for tests: three masters (no replicas) on free ports, never 6379.

``RedisCluster.start(tmp)`` launches three ``redis-server --cluster-enabled yes`` processes,
each in its own folder under ``tmp`` with its own cluster config file and an explicit
cluster-bus port (also a free port, so ``port + 10000`` never has to be free or valid), joins
them with ``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`` and waits
until every node reports ``cluster_state:ok``. ``stop()`` kills them.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.redis_server import RedisServer, free_port


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p != 6379 and p not in ports and p + 10000 != 6379:
            ports.append(p)
    return ports


@dataclass
class RedisCluster:
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node: clients discover the rest (``CLUSTER SLOTS``)."""
        return self.nodes[0].url

    def cli(self, *args: str, node: int = 0) -> str:
        return self.nodes[node].cli(*args)

    @classmethod
    def start(cls, directory: Path, masters: int = 3, timeout: float = 30.0) -> RedisCluster:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
        ports = _free_ports(2 * masters)
        cluster = cls()
        try:
            for i in range(masters):
                port, bus = ports[2 * i], ports[2 * i + 1]
                d = directory / f"node-{port}"
                cluster.nodes.append(RedisServer.start(d, port=port, extra=[
                    "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-port", str(bus), "--cluster-node-timeout", "5000",
                ]))
            addrs = [f"127.0.0.1:{p}" for p in cluster.ports]
            out = subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0",
                                  "--cluster-yes"], capture_output=True, text=True, timeout=timeout, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
            cluster.wait_ok(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node has logged ``Cluster state changed: ok``, then check that each says
        ``cluster_state:ok`` and knows all masters."""
        for node in self.nodes:
            assert node.log is not None
            if not node.log.wait_for("Cluster state changed: ok", timeout):
                raise RuntimeError(f"node {node.port} did not reach cluster_state:ok: {node.log.tail()}")
        states = [self.cli("CLUSTER", "INFO", node=i) for i in range(len(self.nodes))]
        if not all("cluster_state:ok" in s and f"cluster_known_nodes:{len(self.nodes)}" in s for s in states):
            raise RuntimeError(f"cluster logged ok but does not report it: {states}")

    def keyslot(self, key: str) -> int:
        return int(self.cli("CLUSTER", "KEYSLOT", key).strip())

    def slot_owners(self) -> dict[int, int]:
        """slot -> port of the master that owns it (parsed from ``CLUSTER NODES``)."""
        owners: dict[int, int] = {}
        lines = self.cli("CLUSTER", "NODES").splitlines()
        for line in lines:
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2]:
                continue
            port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue  # a slot being migrated
                lo, _, hi = rng.partition("-")
                for s in range(int(lo), int(hi or lo) + 1):
                    owners[s] = port
        return owners

    def owner_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot."""
        return self.slot_owners()[self.keyslot(key)]

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop(graceful=False)
