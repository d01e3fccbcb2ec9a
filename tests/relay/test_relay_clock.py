"""Rules run on the relay's clock (issue 13, item 1): a capability's expiry is judged on the
relay's receipt time (``rtime``), never on the author's ``ts``, both when the relay sequences
an event and when ``colony replay --verify`` re-checks a stored log. Real relays, real sockets,
both backends."""
from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc as YDoc
from pycrdt import Text

from collab import frames
from collab.capability import Capability
from collab.events import Event, Record, b64, now_ms
from collab.keys import Keypair
from relay.ops.runner import Running
from tests.conftest import Backend
from tests.procs import start_relay_proc
from tests.rawclient import Raw
from tests.relay.storage.chain import make_storage

HOUR = 3_600_000
_rids = itertools.count()


def yjs_update(text: str) -> str:
    doc = YDoc()
    doc["text"] = t = Text()
    t += text
    return b64(doc.get_update())


def cap_write(author: Keypair, feed: str, cap: Capability, ts: int, ctx: int = 1) -> Event:
    """A non-member's ``doc.update`` written under ``cap``, with an author-chosen ``ts``."""
    return Event.create(author, feed, "doc.update", {"update": yjs_update("x"), "cap": cap.to_wire()}, ctx=ctx, ts=ts)


async def publish(raw: Raw, event: Event) -> dict[str, Any]:
    return await raw.request({"t": "pub", "event": event.to_wire()}, f"r{next(_rids)}")


async def create(url: str, owner: Keypair, feed: str, policy: str) -> None:
    raw = await Raw.connect(url, owner)
    try:
        ok = await publish(raw, Event.create(owner, feed, "feed.policy", {"policy": policy}))
        assert ok["t"] == "ok" and ok["seq"] == 1, ok
    finally:
        await raw.close()


async def stored(url: str, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{url}/feeds/{feed}/events", params={"limit": 100})
    return list(resp.json()["records"]) if resp.status_code == 200 else []


async def test_an_expired_capability_with_a_back_dated_ts_is_refused(relay: Running) -> None:
    owner, mallory = Keypair.generate(), Keypair.generate()
    feed = "doc/clock-members"
    await create(relay.ws_url, owner, feed, "members")
    now = now_ms()
    expired = Capability.issue(owner, feed, write=True, ttl_ms=HOUR, now=now - 2 * HOUR)  # expired an hour ago
    raw = await Raw.connect(relay.ws_url, mallory)
    try:
        # the attack: ts back-dated to before exp (the relay's clock is an hour past it)
        err = await publish(raw, cap_write(mallory, feed, expired, ts=expired.exp - 1))
        assert (err["t"], err.get("code")) == ("error", "unauthorized"), err
        assert "expired" in err["message"]
        # and the other way round: a live capability is honoured whatever ts claims (ts is not a clock)
        live = Capability.issue(owner, feed, write=True, ttl_ms=HOUR)
        ok = await publish(raw, cap_write(mallory, feed, live, ts=live.exp + HOUR))
        assert (ok["t"], ok.get("seq")) == ("ok", 2), ok  # seq 2: the refused write took no seq
    finally:
        await raw.close()


async def colony_replay(url: str, feed: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", "replay", feed, "--verify", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLONY_RELAY": url})
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


async def test_replay_verify_flags_a_capability_write_that_held_only_by_its_ts(tmp_path: Path,
                                                                               backend: Backend) -> None:
    """A record crafted straight into storage, sealed by the relay's own key, that a relay judging
    on ``ts`` would have accepted: replay re-checks the capability at the record's ``rtime``."""
    data = tmp_path / "data"
    owner, mallory = Keypair.generate(), Keypair.generate()
    feed = "doc/clock-replay"
    relay = await start_relay_proc(data, backend=backend)
    try:  # "signed": HTTP reads it (replay), and a capability is checked whatever the policy
        await create(relay.ws_url, owner, feed, "signed")
    finally:
        await relay.stop()
    store = make_storage("sqlite", str(data)) if backend.name == "sqlite" else \
        make_storage("redis", str(backend.redis_url), f"{backend.prefix}-r")
    now = now_ms()
    expired = Capability.issue(owner, feed, write=True, ttl_ms=HOUR, now=now - 2 * HOUR)
    async with store:
        head = await store.head(feed)
        assert head is not None and head.seq == 1
        rec = Record.seal(Keypair.load(data / "relay.key"), cap_write(mallory, feed, expired, ts=expired.exp - 1),
                          2, head.hash, rtime=now)
        await store.append(feed, 1, [(rec, frames.encode(rec.to_wire()))])
    relay = await start_relay_proc(data, backend=backend)
    try:
        assert [r["seq"] for r in await stored(relay.url, feed)] == [1, 2]  # the log itself is well formed
        rc, err = await colony_replay(relay.url, feed)
        assert rc == 1, err
        assert "VERIFICATION FAILED" in err and "seq 2: unauthorized" in err and "expired" in err, err
    finally:
        await relay.stop()
