"""Run a relay as a real subprocess (``colony serve --port 0``) for crash and restart tests."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

LISTEN_RE = re.compile(rb"listening on (http://[\d.]+:\d+)")


async def read_listen_line(stream: asyncio.StreamReader, pattern: re.Pattern[bytes], what: str) -> str:
    """Read a child's output until a line matches ``pattern``; its first group (a URL). Raises,
    with everything it printed, if the child exits first."""
    seen = b""
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError(f"{what} exited before listening: {seen.decode(errors='replace')}")
        seen += line
        m = pattern.search(line)
        if m:
            return m.group(1).decode()


@dataclass
class RelayProc:
    proc: asyncio.subprocess.Process
    url: str

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


async def start_relay_proc(data: Path, *args: str, timeout: float = 30.0, backend: object = None,
                           site: str = "r", log: Path | None = None) -> RelayProc:
    """``backend`` (tests.conftest.Backend) adds ``--redis`` arguments for the Redis backend;
    ``log``: a file the relay's output is appended to (else it is read and dropped)."""
    if backend is not None:
        args = (*backend.serve_args(site), *args)  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "serve", "--port", "0", "--data", str(data), "--log-level", "warning",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None

    try:
        url = await asyncio.wait_for(read_listen_line(proc.stdout, LISTEN_RE, "relay"), timeout)
    except BaseException:  # never leave a relay that did not come up running (e.g. hung at startup)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise

    async def drain() -> None:  # keep the pipe from filling up
        assert proc.stdout is not None
        with open(log, "ab") if log is not None else contextlib.nullcontext() as out:  # noqa: ASYNC230
            while chunk := await proc.stdout.read(65536):
                if out is not None:
                    out.write(chunk)
                    out.flush()

    asyncio.get_running_loop().create_task(drain())
    return RelayProc(proc, url)
