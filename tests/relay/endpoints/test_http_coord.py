"""relay/endpoints/http_coord.py: ``GET /route/{feed}`` on real relays (uvicorn on port 0):
a lone relay homes every feed; a federated one names the member its pins and rendezvous
hashing choose (the peer need not be up: the answer is this relay's routing), says whether
that is itself and whether the feed is replicated; a bad feed name is a 400."""
from __future__ import annotations

from pathlib import Path

import httpx

from collab.keys import Keypair
from relay.core.routing import Member, Routing
from relay.ops.runner import Running, serving
from tests.conftest import Backend, make_config


async def test_a_lone_relay_homes_every_feed(relay: Running) -> None:
    me = relay.relay.hub.relay_key.public_hex
    async with httpx.AsyncClient(base_url=relay.url) as http:
        resp = await http.get("/route/doc/notes")
        assert resp.status_code == 200
        body = resp.json()
        assert body["feed"] == "doc/notes" and body["self"] is True and body["home"]["key"] == me
        assert body["replicated"] is False
        assert (await http.get("/route/vouch/global")).json()["replicated"] is True  # the default prefix
        bad = await http.get("/route/no-namespace")
        assert bad.status_code == 400 and bad.json()["error"] == "invalid"


async def test_a_federated_relay_names_each_feeds_home(tmp_path: Path, backend: Backend) -> None:
    key, peer = Keypair.generate(), Keypair.generate()
    key.save(tmp_path / "r" / "relay.key")
    me_url, peer_url = "http://me.invalid:1", "http://127.0.0.1:9"  # the peer is never reached
    cfg = make_config(tmp_path / "r", backend, public_url=me_url, peers=(f"{peer_url}#{peer.public_hex}",),
                      pins=(f"task/*={peer.public_hex}", f"doc/mine*={key.public_hex}"),
                      replicate=("vouch/", "agent/"))
    expected = Routing(Member(key.public_hex, me_url), (Member(peer.public_hex, peer_url),), ("vouch/", "agent/"),
                       (("task/*", peer.public_hex), ("doc/mine*", key.public_hex)))
    async with serving(cfg) as running:
        assert running.relay.hub.relay_key.public_hex == key.public_hex
        async with httpx.AsyncClient(base_url=running.url) as http:
            pinned = (await http.get("/route/task/build")).json()
            assert pinned == {"feed": "task/build", "home": {"key": peer.public_hex, "url": peer_url},
                              "self": False, "replicated": False}
            mine = (await http.get("/route/doc/mine-too")).json()
            assert mine["home"] == {"key": key.public_hex, "url": me_url} and mine["self"] is True
            assert (await http.get("/route/agent/profile")).json()["replicated"] is True
            seen = set()
            for n in range(20):  # the rest by rendezvous hashing, as every member computes it
                feed = f"misc/f{n}"
                body = (await http.get(f"/route/{feed}")).json()
                assert body["home"]["key"] == expected.home(feed).key
                assert body["self"] == expected.is_home(feed)
                seen.add(body["self"])
            assert seen == {True, False}  # both members home some of them
