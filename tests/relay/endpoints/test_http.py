"""The HTTP API's health and error surfaces (relay/endpoints/http.py, relay/app.py).

Anyone may call ``GET /health`` and read error bodies: they name unhealthy components by fixed
names and show counters, never storage paths, peer URLs or exception text. Operators find those
in the log and in ``/metrics`` (``colony_component_up``)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from collab.dm import dm_feed, seal_message
from collab.events import Event, now_ms
from collab.httpauth import MAX_SKEW_MS, authorization
from collab.keys import Keypair
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config
from tests.rawclient import Raw
from tests.redis_server import RedisServer
from tests.relay.test_access_binds import publish_at_once, subscribe
from tests.wait import eventually

LEAKS = ("Error", "Exception", "Traceback", "redis://", "127.0.0.1", "colony.db", "/tmp", "Errno", "refused")  # noqa: S108 - text looked for in answers, not a path


def assert_no_leak(text: str, *extra: str) -> None:
    for needle in (*LEAKS, *extra):
        assert needle not in text, f"{needle!r} shown to an anonymous caller: {text}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it gets killed)."""
    srv = RedisServer.start(tmp_path / "redis")
    yield srv
    srv.stop(graceful=False)


async def test_health_of_a_healthy_relay_names_its_components(tmp_path: Path, backend: Backend) -> None:
    async with serving(make_config(tmp_path / "r", backend)) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["ok"] is True and body["components"] == {"storage": "up", "bus": "up"}, body
        assert body["federation"] is None
        assert_no_leak(resp.text, str(tmp_path))


async def test_health_of_a_failing_storage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLite store stops under a running relay: /health says ``storage`` is down and no more;
    the log has the detail, /metrics the gauge, and an HTTP request that needs storage gets a
    fixed 503 body."""
    caplog.set_level(logging.INFO, logger="relay")
    async with serving(make_config(tmp_path / "r")) as run, httpx.AsyncClient() as http:
        assert (await http.get(f"{run.url}/health")).status_code == 200
        await run.relay.hub.storage.close()

        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["ok"] is False and body["components"]["storage"] == "down", body
        assert body["components"]["bus"] == "up" and body["backend"] == "sqlite"
        assert_no_leak(resp.text, str(tmp_path))
        assert any("component storage is down" in r.getMessage() and "colony.db" in r.getMessage()
                   for r in caplog.records), "the operator's log says what is down, and where"

        metrics = (await http.get(f"{run.url}/metrics")).text
        assert 'colony_component_up{component="storage"} 0' in metrics
        assert 'colony_component_up{component="bus"} 1' in metrics

        resp = await http.get(f"{run.url}/feeds")
        assert resp.status_code == 503
        assert resp.json() == {"error": "unavailable", "message": "the relay cannot serve this right now; retry later"}
        assert_no_leak(resp.text, str(tmp_path), "closed")


async def test_health_of_a_relay_whose_redis_is_down(tmp_path: Path, private_redis: RedisServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    backend = Backend("redis", private_redis.url, "health")
    async with serving(make_config(tmp_path / "r", backend)) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 200 and resp.json()["components"] == {"storage": "up", "bus": "up"}
        assert_no_leak(resp.text, str(private_redis.port))

        private_redis.stop(graceful=False)  # the process is gone once this returns: refused from now on
        resp = await http.get(f"{run.url}/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["ok"] is False and body["components"]["storage"] == "down", body
        assert body["backend"] == "redis" and body["storage"]["backend"] == "redis"
        assert_no_leak(resp.text, str(private_redis.port), str(tmp_path))
        assert any("component storage is down" in r.getMessage() and str(private_redis.port) in r.getMessage()
                   for r in caplog.records), "the operator's log names the Redis that is down"
        assert 'colony_component_up{component="storage"} 0' in (await http.get(f"{run.url}/metrics")).text


async def test_a_bad_request_still_says_what_was_wrong(tmp_path: Path) -> None:
    """Errors about the caller's own input keep their explanation."""
    async with serving(make_config(tmp_path / "r")) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/feeds", params={"limit": "x"})
        assert resp.status_code == 400
        assert resp.json() == {"error": "invalid", "message": "limit must be an integer"}


# -- private feeds: owner and participants only for their readers (docs/protocol.md 12, 15) --------

async def test_private_feed_metadata_is_shown_only_to_its_readers(relay: Running) -> None:
    """A ``members`` feed and a ``dm/`` feed: anonymous and stranger-signed requests see neither
    owner nor participants (the dm feed is not even listed, and its reads are refused before
    storage is asked); a member's signed request sees them."""
    owner, member, stranger = Keypair.generate(), Keypair.generate(), Keypair.generate()
    feed, dm = "chat/private", dm_feed(owner.public_hex, member.public_hex)
    raw_owner = await Raw.connect(relay.ws_url, owner)
    raw_member = await Raw.connect(relay.ws_url, member)
    rkey = relay.relay.hub.relay_key.public_hex

    def signed(key: Keypair, path: str, ts: int | None = None) -> dict[str, str]:
        return {"authorization": authorization(key, rkey, "GET", path, now_ms() if ts is None else ts)}

    try:
        await publish_at_once(raw_owner, [
            Event.create(owner, feed, "feed.policy", {"policy": "members"}),
            Event.create(owner, feed, "acl.grant", {"key": member.public_hex, "read": True}),
            Event.create(owner, dm, "dm.msg", seal_message(owner, member.public_hex, "request", "hi"))], "p")
        await subscribe(raw_member, feed)
        await subscribe(raw_member, dm)
        async with httpx.AsyncClient(base_url=relay.url) as http:
            for headers in ({}, signed(stranger, f"/feeds/{feed}")):
                info = (await http.get(f"/feeds/{feed}", headers=headers)).json()
                assert info["policy"] == "members" and info["seq"] == 2, info
                assert info["owner"] is info["participants"] is info["subscribers"] is info["state"] is None
            for headers in ({}, signed(stranger, "/feeds")):
                listed = {f["feed"]: f for f in (await http.get("/feeds", headers=headers)).json()["feeds"]}
                assert dm not in listed and listed[feed]["participants"] is listed[feed]["subscribers"] is None
            for path in (f"/feeds/{dm}", f"/feeds/{dm}/events", f"/feeds/{dm}/state", f"/feeds/{feed}/events",
                         "/feeds/" + dm_feed(member.public_hex, Keypair.generate().public_hex)):  # none stored
                for headers in ({}, signed(stranger, path)):
                    resp = await http.get(path, headers=headers)
                    assert resp.status_code == 403 and resp.json()["error"] == "unauthorized", (path, resp.text)

            async def member_sees(path: str) -> bool:
                got = (await http.get(path, headers=signed(member, path))).json()
                return bool(got["owner"] == owner.public_hex and member.public_hex in got["participants"])

            await eventually(lambda: member_sees(f"/feeds/{feed}"), 10, "the member sees the members feed's metadata")
            await eventually(lambda: member_sees(f"/feeds/{dm}"), 10, "the member sees the dm feed's metadata")
            events = (await http.get(f"/feeds/{dm}/events", headers=signed(member, f"/feeds/{dm}/events"))).json()
            assert [r["seq"] for r in events["records"]] == [1]
            mine = (await http.get("/feeds", headers=signed(member, "/feeds"))).json()["feeds"]
            listed = {f["feed"]: f for f in mine}
            assert member.public_hex in listed[dm]["participants"] and member.public_hex in listed[feed]["participants"]
            # a signature made for another path, a stale one, a malformed header
            assert (await http.get(f"/feeds/{dm}", headers=signed(member, "/feeds"))).status_code == 401
            stale = signed(member, f"/feeds/{dm}", now_ms() - MAX_SKEW_MS - 5000)
            assert (await http.get(f"/feeds/{dm}", headers=stale)).json()["error"] == "unauthorized"
            bad = await http.get(f"/feeds/{dm}", headers={"authorization": "Colony key=00"})
            assert bad.status_code == 400 and bad.json()["error"] == "invalid"
    finally:
        await raw_owner.close()
        await raw_member.close()
