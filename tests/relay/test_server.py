"""The relay's lifecycle (relay/server.py): components start in order and close in reverse; a
component that fails to start closes the ones already started, leaving no task, thread, file
(lock, database) or socket behind, so a second relay on the same data directory starts."""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.server import Relay
from relay.storage.redis import RedisStorage
from tests.conftest import Backend, make_config
from tests.redis_server import free_port

PEER = "http://127.0.0.1:9#" + "ab" * 32  # any member: the federation refuses to start before dialing it


@dataclass(frozen=True)
class Footprint:
    """What a relay may hold while it runs: tasks, its own threads, file descriptors."""

    tasks: frozenset[asyncio.Task[object]]
    threads: frozenset[str]
    fds: frozenset[str]

    @classmethod
    def now(cls) -> Footprint:
        fds = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed meanwhile
                fds.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        threads = frozenset(f"{t.name}:{t.ident}" for t in threading.enumerate() if t.name.startswith("colony-"))
        return cls(frozenset(asyncio.all_tasks()), threads, frozenset(fds))

    def left_since(self, before: Footprint) -> dict[str, list[str]]:
        left = {
            "tasks": sorted(t.get_name() for t in self.tasks - before.tasks),
            "threads": sorted(self.threads - before.threads),
            "fds": sorted(self.fds - before.fds),
        }
        return {k: v for k, v in left.items() if v}


async def test_a_relay_that_ran_leaves_nothing_behind(tmp_path: Path, backend: Backend) -> None:
    before = Footprint.now()
    async with Relay(make_config(tmp_path / "r", backend)) as relay:
        assert relay.hub.storage.name == backend.name
        assert Footprint.now().left_since(before)  # it does hold something while it runs
    assert Footprint.now().left_since(before) == {}
    with pytest.raises(RuntimeError, match="not running"):
        _ = relay.hub


async def test_a_component_failing_to_start_closes_those_already_started(tmp_path: Path, backend: Backend) -> None:
    """Federation refuses to start (port 0 and no public URL) after storage, bus and hub started."""
    data = tmp_path / "r"
    before = Footprint.now()
    relay = Relay(make_config(data, backend, peers=(PEER,)))
    with pytest.raises(RuntimeError, match="public-url"):
        async with relay:
            pytest.fail("the relay must not start")
    assert Footprint.now().left_since(before) == {}
    assert relay.closing
    with pytest.raises(RuntimeError, match="not running"):
        _ = relay.hub
    async with Relay(make_config(data, backend)) as again:  # the data directory is free again
        assert again.hub.storage.name == backend.name
    assert Footprint.now().left_since(before) == {}


async def test_storage_that_cannot_open_leaves_no_lock_behind(tmp_path: Path) -> None:
    """SQLite takes the directory's lock and then fails to open its database: the lock is released."""
    data = tmp_path / "r"
    (data / "colony.db").mkdir(parents=True)  # a directory where the database file belongs
    before = Footprint.now()
    with pytest.raises(Exception, match="unable to open database"):
        async with Relay(make_config(data)):
            pytest.fail("the relay must not start")
    assert Footprint.now().left_since(before) == {}
    (data / "colony.db").rmdir()
    async with Relay(make_config(data)) as relay:
        assert relay.hub.storage.name == "sqlite"


async def test_a_redis_nobody_listens_on_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "r"
    url = f"redis://127.0.0.1:{free_port()}/0"
    before = Footprint.now()
    with pytest.raises(RuntimeError, match="cannot reach Redis"):
        async with Relay(make_config(data), storage=RedisStorage(url, open_timeout=0.3)):
            pytest.fail("the relay must not start")
    assert Footprint.now().left_since(before) == {}
    async with Relay(make_config(data)) as relay:  # the same data directory, on SQLite
        assert relay.hub.storage.name == "sqlite"


async def test_a_relay_cannot_be_entered_twice(tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path / "r"))
    async with relay:
        with pytest.raises(RuntimeError, match="already running"):
            await relay.__aenter__()
        assert not relay.closing
    assert relay.closing
    async with relay:  # but again once it stopped
        assert not relay.closing
