"""Real redis-server processes for tests: on free ports, in temporary folders, never 6379."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerLog:
    """What a redis-server prints, copied line by line into ``redis.log`` by a reader thread, with
    :meth:`wait_for` to block until a line containing some text appears (or the process ends):
    readiness is the server saying so, not a polling loop."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self.path = path
        self._lines: list[str] = []
        self._ended = False
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            for raw in stream:
                line = raw.decode("utf-8", "replace")
                out.write(line)
                out.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float, since: int = 0) -> bool:
        """True once a line at index >= ``since`` contains ``text``; False on timeout or exit."""
        def seen() -> bool:
            return self._ended or any(text in line for line in self._lines[since:])
        with self._cond:
            self._cond.wait_for(seen, timeout)
            return any(text in line for line in self._lines[since:])

    def mark(self) -> int:
        with self._cond:
            return len(self._lines)

    def tail(self, chars: int = 2000) -> str:
        with self._cond:
            return "".join(self._lines)[-chars:]


@dataclass
class RedisServer:
    port: int
    dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log: ServerLog | None = None

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
                "--appendfsync", "always", "--dir", str(directory), "--logfile", "", *(extra or [])]
        srv = cls(port or free_port(), directory, args)
        srv.launch()
        return srv

    def launch(self) -> None:
        # --logfile "" logs to stdout: a reader thread copies it to redis.log and wakes us on
        # "Ready to accept connections" (printed once the listening socket is open and, with AOF,
        # the data is loaded).
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.log = ServerLog(self.proc.stdout, self.dir / "redis.log")
        if not self.log.wait_for("Ready to accept connections", timeout=15):
            self.proc.kill()
            raise RuntimeError(f"redis-server on {self.port} did not start: {self.log.tail()}")

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
