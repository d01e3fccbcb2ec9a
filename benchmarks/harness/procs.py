"""``/proc`` sampling (process and per-thread CPU, RSS, whole-machine busy CPU, waiting for a
quiet machine) and :class:`ServerProc`, one server under test in its own subprocess.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import CLK_TCK, COLONY, COLONY_ARGS, HERE, RESULTS_DIR, ROOM, ROOT

#: where the colony command line lives in a source tree, newest layout first
CLI_MODULES = ("relay.ops.cli", "relay.cli")


# ---------------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------------
def dump_tasks() -> None:
    """Every asyncio task's stack, to stderr: where a hung correctness run waits."""
    import asyncio

    for task in asyncio.all_tasks():
        print(f"-- task {task.get_name()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of all its threads, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _cpu_or_zero(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except OSError:  # exited meanwhile
        return 0.0


def _rss_or_zero(pid: int) -> int:
    try:
        return proc_rss_kb(pid)
    except OSError:
        return 0


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
    user, nice, system, _idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
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


def cli_module(root: Path) -> str:
    """The module of the colony command line in source tree ``root`` (:data:`CLI_MODULES`)."""
    for mod in CLI_MODULES:
        if (root / (mod.replace(".", "/") + ".py")).is_file():
            return mod
    raise RuntimeError(f"{root} has none of {', '.join(CLI_MODULES)}: not a Colony source tree")


def colony_args(root: Path) -> list[str]:
    """:data:`COLONY_ARGS` that the command line of source tree ``root`` knows (a baseline from
    before a limit existed is run without it: it had no such limit to lift). A flag is known when
    its setting is named in the tree's ``relay/ops/cli_settings.py`` (every tree has it since
    the settings became flags); without that file every flag is passed."""
    settings = root / "relay" / "ops" / "cli_settings.py"
    if not settings.is_file():
        return list(COLONY_ARGS)
    text = settings.read_text()
    out: list[str] = []
    for flag, value in zip(COLONY_ARGS[::2], COLONY_ARGS[1::2], strict=True):
        if f'"{flag[2:].replace("-", "_")}"' in text:
            out += [flag, value]
    return out


# ---------------------------------------------------------------------------------------
# servers under test
# ---------------------------------------------------------------------------------------
class ServerProc:
    """One server subprocess: start, find its port, sample it, stop it.

    Colony runs from a source tree, ``code_dir`` (default: the tree this harness is in), as
    ``python -m <its cli module> serve ...`` with ``PYTHONPATH=code_dir``: the relay measured is
    that tree's, never whatever copy of the package happens to be installed."""

    def __init__(self, system: str, workdir: Path, diag: str | None = None, *, name: str | None = None,
                 extra_args: list[str] | None = None, code_dir: Path | None = None) -> None:
        diag = diag if system == COLONY else None
        self.system, self.workdir, self.diag = system, workdir, diag
        self.name = name or system  # several processes of one system: distinct logs and data dirs
        self.extra_args = list(extra_args or [])  # Colony only, e.g. --redis URL --relay-key FILE
        self.code_dir = code_dir or ROOT
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = workdir / f"{self.name}-server.log"

    def command(self) -> list[str]:
        if self.system == COLONY:
            base = [sys.executable, "-m", cli_module(self.code_dir)]
            if self.diag:  # same relay.ops.cli.main, wrapped with diagnostics (see colony_diag_server.py)
                base = [sys.executable, str(HERE / "colony_diag_server.py")]
            data = self.workdir / ("data" if self.name == self.system else f"data-{self.name}")
            return [*base, "serve", "--host", "127.0.0.1", "--port", "0", "--data", str(data),
                    "--log-level", "warning", *colony_args(self.code_dir), *self.extra_args]
        return [sys.executable, str(HERE / "pycrdt_ws_server.py"), "--host", "127.0.0.1", "--port", "0"]

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.system == COLONY:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.code_dir), env.get("PYTHONPATH")) if p)
        if self.diag == "lag":
            env["BENCH_DIAG_LAG"] = "1"
        elif self.diag == "no-deflate":
            env["BENCH_NO_DEFLATE"] = "1"
        elif self.diag == "cprofile":
            env["BENCH_CPROFILE"] = str(RESULTS_DIR / f"cprofile-{self.system}.pstats")
        # the server's stderr and its stdout (copied by pump) share one log; both append, so neither
        # overwrites the other; the server keeps its own descriptor, pump closes its own at EOF
        self.log_path.write_text("")
        with open(self.log_path, "a") as stderr_log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=stderr_log, text=True, env=env,
                                         cwd=str(self.workdir), start_new_session=True)
        pat = re.compile(r"listening on http://([\d.]+):(\d+)")
        found: list[int] = []
        ready = threading.Event()

        def pump() -> None:  # keep reading stdout so the server can never block on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            with open(self.log_path, "a") as log:
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
        """CPU and RSS of the server *with its child processes* (Colony's Yjs sandbox children
        work for it: their CPU is the server's cost, never "other work"); threads: the main
        process's own."""
        tree = [self.pid, *descendants(self.pid)]
        return {"cpu_s": sum(_cpu_or_zero(p) for p in tree), "rss_kb": sum(_rss_or_zero(p) for p in tree),
                "threads": thread_cpu_s(self.pid), "children": len(tree) - 1}

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
