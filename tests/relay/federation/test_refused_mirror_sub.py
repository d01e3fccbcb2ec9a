"""A subscription refused with a transient code (the relay's storage was down) is made again:
by a mirror (the first test) and by the SDK's client (the second). A home that refuses a mirror
subscription must not leave the mirror waiting forever (found by the chaos run, tests/chaos: a
federated relay never mirrored a feed whose subscription reached the site while Redis was paused
or restarting).

Relay B homes ``note/*`` on its own redis-server; relay A (SQLite) mirrors. With B's Redis
paused, an agent subscribes to a B feed on A: A's mirror subscription reaches B, whose load of
the feed fails with ``unavailable``. Before the fix A's link only logged the error; the mirror
stayed "active" and nothing resubscribed until the link itself dropped, so the agent on A never
saw B's records. Now the refusal ends that subscription and the next sync tick subscribes again.
"""
from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from collab.client import Client
from collab.errors import RelayError
from collab.events import Record
from collab.keys import Keypair
from relay.core.limits import Limits
from relay.ops.runner import serving
from tests.conftest import Backend, make_config
from tests.redis_server import RedisServer
from tests.relay.federation.test_link import free_port
from tests.wait import eventually

pytestmark = pytest.mark.timeout(60)
FAST = {"backoff_base": 0.05, "backoff_max": 0.5}


@pytest.fixture
def home_redis(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer.start(tmp_path / "redis")
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop(graceful=False)


async def test_a_refused_mirror_subscription_is_made_again(tmp_path: Path, home_redis: RedisServer) -> None:
    ka, kb = Keypair.generate(), Keypair.generate()
    ka.save(tmp_path / "a" / "relay.key")
    kb.save(tmp_path / "b" / "relay.key")
    pa, pb = free_port(), free_port()
    ua, ub = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
    pins = (f"note/*={kb.public_hex}",)
    limits = Limits(storage_timeout=1.0)
    ca = make_config(tmp_path / "a", None, "a", public_url=ua, peers=(f"{ub}#{kb.public_hex}",), pins=pins,
                     sync_interval=0.2, limits=limits)
    cb = make_config(tmp_path / "b", Backend("redis", home_redis.url, "refused"), "b", public_url=ub,
                     peers=(f"{ua}#{ka.public_hex}",), pins=pins, sync_interval=0.2, limits=limits)
    feed = "note/refused"
    async with serving(dataclasses.replace(cb, port=pb)) as rb, serving(dataclasses.replace(ca, port=pa)) as ra:
        link = ra.relay.federation.links[kb.public_hex]
        await link.wait_connected(15)
        writer = Keypair.generate()
        async with (Client(rb.url, writer, **FAST) as home_client, Client(rb.url, writer, retry_limit=0) as probe,
                    Client(ra.url, Keypair.generate(), **FAST) as agent):
            got: list[Record] = []
            assert home_redis.proc is not None
            os.kill(home_redis.proc.pid, signal.SIGSTOP)  # B cannot load the feed now
            try:
                sub = await agent.subscribe(feed, on_record=got.append)
                await sub.wait_synced(10)  # A has sent B its mirror subscription
                # a publish on B sent now is refused once storage_timeout has passed; B's load
                # of the feed for A started earlier, with the same bound, so it failed too
                with pytest.raises(RelayError) as err:
                    await probe.publish("note/probe", "note", {})
                assert err.value.code == "unavailable"
            finally:
                os.kill(home_redis.proc.pid, signal.SIGCONT)
            for n in range(3):
                await home_client.publish(feed, "note", {"n": n})
            await eventually(lambda: [r.seq for r in got] == [1, 2, 3], 15,
                             "the agent on the mirror to get every record of the home's feed")
            assert link.refused_subs >= 1


async def test_a_client_subscription_refused_as_unavailable_is_asked_again(
        tmp_path: Path, home_redis: RedisServer) -> None:
    """The agent's side of the same fault (also found by the chaos run): a relay on Redis refuses
    a ``sub`` with ``unavailable`` while Redis is paused. The SDK used to end the subscription
    for good (a watcher silently stopped following a feed); now it asks again after a backoff,
    as it resends a publish refused with a transient code."""
    cfg = make_config(tmp_path / "r", Backend("redis", home_redis.url, "subretry"), "r",
                      limits=Limits(storage_timeout=1.0))
    feed = "note/sub-retry"
    async with (serving(cfg) as relay, Client(relay.url, Keypair.generate(), **FAST) as writer,
                Client(relay.url, Keypair.generate(), retry_limit=0) as probe,
                Client(relay.url, Keypair.generate(), **FAST) as reader):
        got: list[Record] = []
        assert home_redis.proc is not None
        os.kill(home_redis.proc.pid, signal.SIGSTOP)
        try:
            sub = await reader.subscribe(feed, on_record=got.append)  # the relay cannot load the feed
            await reader.ping(10)  # the sub is at the relay (a ping is answered after it)
            with pytest.raises(RelayError) as err:  # sent after the sub: refused after it
                await probe.publish("note/probe", "note", {})
            assert err.value.code == "unavailable"
        finally:
            os.kill(home_redis.proc.pid, signal.SIGCONT)
        for n in range(3):
            await writer.publish(feed, "note", {"n": n})
        await eventually(lambda: [r.seq for r in got] == [1, 2, 3], 15, "the reader to get every record")
        assert sub.error is None and not sub.closed
