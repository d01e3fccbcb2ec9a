"""Real redis-server processes for tests: on free ports, in temporary folders, never 6379."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    port: int
    dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None, appendonly: bool = False,
              extra: list[str] | None = None) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; scripts/test installs it (apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes" if appendonly else "no",
                "--appendfsync", "always", "--dir", str(directory), "--logfile", str(directory / "redis.log"),
                *(extra or [])]
        srv = cls(port or free_port(), directory, args)
        srv.launch()
        return srv

    def launch(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server on {self.port} did not start: {log[-2000:]}")
            time.sleep(0.02)

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=30, check=False).stdout

    def stop(self, graceful: bool = True) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if graceful:
            with contextlib.suppress(Exception):
                self.cli("SHUTDOWN")  # with AOF on, this flushes before exiting
                self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.launch()
