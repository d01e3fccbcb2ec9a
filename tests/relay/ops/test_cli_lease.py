"""relay/ops/cli_lease.py: ``colony lease campaign|status|resign|watch`` as the real ``colony``
subprocess against an in-process relay: a held lease (``--hold``) is taken over after the
holding command is interrupted, ``--json``, and exit 1 with the relay's code on a refusal."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from collab.keys import Keypair
from tests.relay.ops.test_cli import colony

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def env_of(tmp_path: Path, relay: Any, name: str) -> tuple[Keypair, dict[str, str]]:
    key = Keypair.generate()
    key.save(tmp_path / name)
    return key, {"COLONY_RELAY": relay.url, "COLONY_KEY": str(tmp_path / name)}


async def test_lease_from_the_shell(relay: Any, tmp_path: Path) -> None:
    a, a_env = env_of(tmp_path, relay, "a.key")
    b, b_env = env_of(tmp_path, relay, "b.key")
    feed = "lease/cli"
    hold = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "lease", "campaign", feed, "--hold", "--ttl-ms", "3000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **a_env})
    try:
        assert hold.stdout is not None
        line = await asyncio.wait_for(hold.stdout.readline(), 30)
        assert line.decode().strip() == f"granted {feed} epoch 1"
        rc, out, err = await colony("lease", "status", feed, "--json", env=b_env)
        assert rc == 0, err
        st = json.loads(out)
        assert st["holder"] == a.public_hex and st["epoch"] == 1 and not st["holding"]
        # from now on: b's campaign, b's withdrawal, a's resignation (renewals in between)
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.ops.cli", "lease", "watch", feed, "--count", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **a_env})
        assert watch.stderr is not None
        assert (await asyncio.wait_for(watch.stderr.readline(), 30)).startswith(f"# following {feed}".encode())
        rc, out, err = await colony("lease", "campaign", feed, "--json", env=b_env)
        assert rc == 0 and [c["key"] for c in json.loads(out)["standby"]] == [b.public_hex], err
        rc, out, err = await colony("lease", "resign", feed, env=b_env)  # withdraws b's candidacy
        assert rc == 0 and out.startswith(f"{feed}#"), err
        rc, out, err = await colony("lease", "resign", feed, env=b_env)
        assert rc == 1 and err.startswith("error: conflict: ")
        hold.send_signal(signal.SIGINT)  # interrupted: it resigns on the way out
        await asyncio.wait_for(hold.wait(), 30)
        rc, out, err = await colony("lease", "status", feed, env=b_env)
        assert rc == 0 and out.startswith(f"{feed}: free (last epoch 1)"), out
        assert "epoch 1" in out and "resigned" in out
        out, _ = await asyncio.wait_for(watch.communicate(), 30)
        lines = out.decode().splitlines()
        assert [x.split(" ")[1] for x in lines[:3]] == ["campaign", "withdraw", "resign"], lines
        assert lines[3] == f"{feed}: free (last epoch 1)"
    finally:
        if hold.returncode is None:
            hold.kill()
            await hold.wait()
