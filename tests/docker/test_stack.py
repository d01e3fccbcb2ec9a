"""The Docker stack, for real: build the image, bring the whole ``docker/compose.yml`` up on a real
Docker engine, and check what a user would see.

The base images are the stand-ins ``scripts/docker-images`` builds from Debian's packages (no
container registry is reachable here; it also installs and starts Docker when it must): the build
gets ``PYTHON_IMAGE``, compose ``COLONY_REDIS_IMAGE``. The compose project has a name of its own;
the host ports are the file's (8701-8703), so they must be free. The test waits on the engine's
events (``docker events``: health, exits), never on fixed sleeps:

1. every service healthy (keys and demo exit 0), the demo's banner names the host URLs;
2. through the host ports, the three relays serve the same document and coordination feeds
   (``colony replay --verify``), and the scenes completed (auction, task tree, vouches, ledger);
3. relay-b gets SIGTERM while an agent publishes to it: it drains and exits (not killed), Docker
   restarts it (``restart: unless-stopped``), and every acknowledged event is on every relay;
4. ``down -v`` leaves no container and no volume, named or anonymous.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab.client import Client
from collab.errors import ColonyError
from collab.events import Record
from collab.keys import Keypair
from collab.replay import fetch_log
from tests.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yml"
PORTS = {"relay-a": 8701, "relay-b": 8702, "relay-c": 8703}
RELAYS = tuple(PORTS)
FEEDS = ("doc/demo", "auction/review-design-note", "ledger/main", "task/quarterly-report", "vouch/global")
PACE = "0.2"  # the demo's pace: every scene, quicker than a person watching (1)
DRAIN_FEED = f"note/drain-{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.timeout(900)  # a cold run builds the stand-in base images (minutes)


def _run(args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False)


def _ok(args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> str:
    res = _run(args, timeout, env)
    assert res.returncode == 0, f"{' '.join(args)} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _compose_program() -> list[str]:
    if _run(["docker", "compose", "version"], 30).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]  # Debian's v1.29 (scripts/docker-images installs it)


def _pip_build_args() -> list[str]:
    """The host's package index, when it names one other than PyPI (environment or pip config)."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        res = _run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], 60)
        url = res.stdout.strip() if res.returncode == 0 else ""
    return ["--build-arg", f"PIP_INDEX_URL={url}"] if url.startswith(("http://", "https://")) else []


def _ports_free() -> None:
    for service, port in PORTS.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as docker-proxy binds: TIME_WAIT is no owner
            try:
                s.bind(("0.0.0.0", port))
            except OSError as exc:
                pytest.fail(f"host port {port} is taken ({exc.strerror}): docker/compose.yml publishes {service} "
                            f"there (8701-8703); stop what listens on it (a stack left running? `docker ps`) "
                            "and run again")


class Events:
    """``docker events`` of one compose project, from before it starts: waiters look at every event
    seen so far and then at each new one."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.seen: list[dict[str, Any]] = []
        self._new = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "docker", "events", "--since", str(int(time.time()) - 1), "--format", "{{json .}}",
            "--filter", "type=container", "--filter", f"label=com.docker.compose.project={self.project}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            event = json.loads(line)
            async with self._new:
                self.seen.append(event)
                self._new.notify_all()

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def wait(self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float,
                   after: int = 0) -> dict[str, Any]:
        """The first event from index ``after`` on that ``match`` accepts."""
        async def first() -> dict[str, Any]:
            async with self._new:
                i = after
                while True:
                    for event in self.seen[i:]:
                        if match(event):
                            return event
                    i = len(self.seen)
                    await self._new.wait()
        try:
            return await asyncio.wait_for(first(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout:g} s; events: " + "; ".join(
                f"{_service(e)} {e.get('Action')}" for e in self.seen if not str(e.get("Action")).startswith("exec_"))
            ) from None


def _service(event: dict[str, Any]) -> str:
    return str(event.get("Actor", {}).get("Attributes", {}).get("com.docker.compose.service", "?"))


def _is(service: str, action: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: _service(e) == service and e.get("Action") == action


async def _colony(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def _replays(feed: str) -> dict[str, dict[str, Any]]:
    """``colony replay FEED --verify --json`` through each relay's host port."""
    results = await asyncio.gather(*(_colony("replay", feed, "--verify", "--json", "--relay",
                                             f"http://localhost:{port}") for port in PORTS.values()))
    out = {}
    for relay, (rc, text, err) in zip(RELAYS, results, strict=True):
        assert rc == 0, f"colony replay {feed} --verify via {relay}: {err}"
        out[relay] = json.loads(text)
    return out


async def _same_on_every_relay(feed: str, timeout: float = 60) -> dict[str, Any]:
    """The feed as every relay serves it, once all three agree (a mirror may still be catching up:
    polled with a deadline); each chain verifies, with no anomaly."""
    seen: dict[str, Any] = {}
    views: dict[str, tuple[Any, ...]] = {}

    async def agree() -> bool:  # a mirror's catching up has no host-side event: polled, with a deadline
        seen.update(await _replays(feed))
        for relay, r in seen.items():
            assert r["verified"] and not r["anomalies"], (feed, relay, r["anomalies"])
        views.update({relay: (r["seq"], r["head"], json.dumps(r["state"], sort_keys=True))
                      for relay, r in seen.items()})
        return len(set(views.values())) == 1 and seen["relay-a"]["seq"] > 0

    try:
        await eventually(agree, timeout, f"{feed} the same on every relay", interval=0.5)
    except pytest.fail.Exception:
        raise AssertionError(f"{feed}: the relays differ after {timeout:g} s: "
                             + ", ".join(f"{r} seq {v[0]} head {v[1][:12]}" for r, v in views.items())) from None
    return seen["relay-a"]


async def _publish_through_sigterm(container: str, events: Events) -> list[tuple[str, int]]:
    """An agent publishes to relay-b, several events in flight; once some are acknowledged relay-b
    gets SIGTERM. The (id, seq) of every acknowledged event; relay-b must drain and exit cleanly."""
    acked: list[tuple[str, int]] = []
    enough = asyncio.Event()
    async with Client(f"http://localhost:{PORTS['relay-b']}", Keypair.generate(), reconnect=False) as client:
        async def publisher(n: int) -> None:
            i = 0
            while True:
                try:
                    ack = await client.publish(DRAIN_FEED, "note.text", {"text": f"{n}.{i}"})
                except (ColonyError, OSError):  # the drain closed the connection (or refused the rest): stop
                    return
                acked.append((ack.id, ack.seq))
                i += 1
                if len(acked) >= 100:
                    enough.set()

        mark = len(events.seen)
        tasks = [asyncio.create_task(publisher(n)) for n in range(8)]
        await asyncio.wait_for(enough.wait(), 60)
        # SIGTERM to the relay (PID 1) from inside: `docker stop` sends the same signal, but a container
        # stopped by hand (stop, kill) is not restarted; this one must be (restart: unless-stopped)
        _ok(["docker", "exec", container, "sh", "-c", "kill -TERM 1"], 30)
        died = await events.wait(_is("relay-b", "die"), "exit of relay-b after SIGTERM", 45, after=mark)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    code = died["Actor"]["Attributes"].get("exitCode")
    assert code in ("0", "143"), f"relay-b exited {code} after SIGTERM (0 or 143 is a drained exit)"
    await events.wait(_is("relay-b", "health_status: healthy"), "relay-b healthy again after its restart", 120,
                      after=events.seen.index(died))
    return acked


async def test_stack_up_demo_feeds_drain_down() -> None:
    _ports_free()
    images = dict(line.split("=", 1) for line in _ok([str(ROOT / "scripts" / "docker-images")], 900).split())
    t0 = time.monotonic()
    _ok(["docker", "build", "-q", "-f", "docker/Dockerfile", "-t", "colony:local",
         "--build-arg", f"PYTHON_IMAGE={images['COLONY_PYTHON_IMAGE']}", *_pip_build_args(), "."], 600)
    # the previous build's image, untagged now, shares all but its code layers: drop it
    _ok(["docker", "image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=colony"], 120)
    project = f"colonytest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "COLONY_REDIS_IMAGE": images["COLONY_REDIS_IMAGE"], "COLONY_DEMO_PACE": PACE}
    compose = [*_compose_program(), "-p", project, "-f", str(COMPOSE)]
    volumes_before = set(_ok(["docker", "volume", "ls", "-q"]).split())
    events = Events(project)
    await events.start()
    try:
        _ok([*compose, "up", "-d", "--no-build"], 300, env)

        # 1. every service up: relays and redis healthy, keys and demo done
        for service in ("redis", *RELAYS):
            await events.wait(_is(service, "health_status: healthy"), f"{service} healthy", 120)
        logs = ""
        for service, within in (("keys", 60), ("demo", 240)):
            died = await events.wait(_is(service, "die"), f"{service} exit", within)
            logs = _run([*compose, "logs", "--no-color", service], 60, env).stdout
            assert died["Actor"]["Attributes"].get("exitCode") == "0", f"{service} failed:\n{logs[-4000:]}"
        assert "every scene ended as scripted" in logs and "all agents converged" in logs, logs[-4000:]
        assert "the document reads as scripted" in logs, logs[-4000:]
        for port in PORTS.values():  # the banner names what a person opens: the host's ports
            assert f"on http://localhost:{port}:" in logs, logs[:3000]
        assert "watch it live:   http://localhost:8701/#doc/demo" in logs and "relay-a:8765/#" not in logs

        # no container, one-shot or not, has an anonymous volume (a VOLUME in the image would give
        # every one-shot container one, and `docker compose run`/`up` would leave them behind)
        ids = _ok(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).split()
        for info in json.loads(_ok(["docker", "inspect", *ids])):
            anonymous = [m for m in info["Mounts"] if m["Type"] == "volume" and not m["Name"].startswith(project + "_")]
            assert not anonymous, f"{info['Name']}: anonymous volumes {anonymous}"

        # 2. the same verified feeds on the three relays, and the scenes completed
        states = {feed: (await _same_on_every_relay(feed))["state"] for feed in FEEDS}
        assert states["auction/review-design-note"]["status"] == "completed"
        task = states["task/quarterly-report"]
        assert task["status"] == "completed" and all(s["status"] == "completed" for s in task["subtasks"])
        assert len(task["subtasks"]) >= 2
        assert states["ledger/main"]["balances"] and not states["ledger/main"]["locks"]
        assert states["vouch/global"], "the agents vouched for each other"
        rc, text, err = await _colony("doc", "cat", "doc/demo", "--relay", "http://localhost:8703")
        assert rc == 0 and "# Relay design note" in text, err
        assert text.rstrip("\n") == states["doc/demo"]["text"].rstrip("\n")

        # 3. SIGTERM on relay-b while an agent publishes to it: no acknowledged event is lost
        container = _ok(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                         "--filter", "label=com.docker.compose.service=relay-b"]).strip()
        acked = await _publish_through_sigterm(container, events)
        assert len(acked) >= 100
        want = dict(acked)
        for relay, port in PORTS.items():
            async def has_all(port: int = port) -> bool:  # relay-c mirrors the feed: polled with a deadline
                _, records = await fetch_log(f"http://localhost:{port}", DRAIN_FEED)
                have = {rec.event.id: rec.seq for rec in map(Record.from_wire, records)}
                return all(have.get(i) == s for i, s in want.items())

            await eventually(has_all, 60, f"{relay} to hold all {len(want)} acknowledged events", interval=0.5)
    finally:
        await events.stop()
        down = _run([*compose, "down", "-v", "--remove-orphans"], 300, env)
    assert down.returncode == 0, down.stderr

    # 4. nothing left: no container of the project, no volume at all that was not there before
    assert not _ok(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).split()
    left = set(_ok(["docker", "volume", "ls", "-q"]).split()) - volumes_before
    assert not left, f"volumes left behind (anonymous volumes of one-shot services?): {left}"
    print(f"stack test: {time.monotonic() - t0:.0f} s after the base images")
