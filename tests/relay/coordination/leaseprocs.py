"""The test side of lease agent processes (tests/relay/coordination/lease_agent.py): start one,
wait for what it prints, SIGKILL it; and ``colony replay --verify`` of a feed."""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from collab.keys import Keypair

FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
ROOT = Path(__file__).resolve().parents[3]


class Agent:
    """A lease_agent process; ``lines`` collects what it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, url: str, lease: str, key: Keypair, priority: int, ttl_ms: int, mode: str = "hold",
                    *args: str) -> Agent:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.relay.coordination.lease_agent", url, lease, key.seed.hex(),
            str(priority), str(ttl_ms), mode, *args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip())
            self.changed.set()
        self.changed.set()

    async def line(self, pred: Callable[[str], bool], timeout: float = 30.0) -> str:
        async def wait() -> str:
            while True:
                hit = next((x for x in self.lines if pred(x)), None)
                if hit is not None:
                    return hit
                if self.proc.returncode is not None or self._reader.done():
                    raise AssertionError(f"agent ended: {self.lines[-20:]}")
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


async def replay_verify(url: str, feed: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "replay", feed, "--verify", "--relay", url,
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b": verified" in err
