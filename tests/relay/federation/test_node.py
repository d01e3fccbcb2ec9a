"""relay/federation/node.py: a relay's membership in a federation, on real relays of a
two-member federation (helpers of test_link.py): ``start`` links every configured peer and
reports them in ``health``; an agent's publish to a feed the peer homes is forwarded there
and answered with the home's seq; with the home down it is ``home_unreachable`` (feeds that
are not docs do not wait); ``close`` unhooks forwarding from the hub."""
from __future__ import annotations

from pathlib import Path

import pytest

from collab.client import Client
from collab.errors import RelayError
from collab.keys import Keypair
from relay.core.config import Config
from relay.federation.node import Federation as Node
from tests.relay.federation.test_link import DEADLINE, Federation, http_events
from tests.wait import eventually



async def test_start_links_every_peer_and_health_reports_them(fed: Federation) -> None:
    a, b = fed.sites["a"], fed.sites["b"]
    ra, rb = await fed.start("a"), await fed.start("b")
    node = ra.relay.federation
    assert isinstance(node, Node) and set(node.links) == {b.hex}
    await node.links[b.hex].wait_connected(DEADLINE)
    await rb.relay.federation.links[a.hex].wait_connected(DEADLINE)
    health = node.health()
    assert health["members"] == [{"key": a.hex, "url": a.url}, {"key": b.hex, "url": b.url}]
    assert health["links"] == {b.hex: {"url": b.url, "connected": True, "last_error": None}}
    assert health["alarms"] == 0
    assert node.routing.home("note/x").key == b.hex and not node.routing.is_home("note/x")  # pinned


async def test_forward_to_home_then_home_unreachable(fed: Federation) -> None:
    b = fed.sites["b"]
    ra = await fed.start("a")
    await fed.start("b")
    link = ra.relay.federation.links[b.hex]
    await link.wait_connected(DEADLINE)
    agent = Keypair.generate()
    async with Client(ra.url, agent) as client:
        acks = [await client.publish("note/home", "note.text", {"n": n}) for n in range(3)]
    assert [ack.seq for ack in acks] == [1, 2, 3]  # B's seqs: B orders the feed
    stored = await http_events(b, "note/home")
    assert [r["event"]["body"]["n"] for r in stored] == [0, 1, 2] and {r["relay"] for r in stored} == {b.hex}
    # B goes away: a note (not a doc) is refused at once rather than held
    await fed.stop("b")
    await eventually(lambda: not link.connected, DEADLINE, "A's link to notice B is gone")
    assert ra.relay.federation.health()["links"][b.hex]["connected"] is False
    async with Client(ra.url, agent) as client:
        with pytest.raises(RelayError) as refused:
            await client.publish("note/home", "note.text", {"n": 3})
        assert refused.value.code == "home_unreachable"
        # a feed A homes is untouched by B's absence
        mine = next(f for f in (f"misc/f{n}" for n in range(100)) if ra.relay.federation.routing.is_home(f))
        assert (await client.publish(mine, "note.text", {})).seq == 1


async def test_close_unhooks_forwarding(fed: Federation) -> None:
    b = fed.sites["b"]
    ra = await fed.start("a")
    await fed.start("b")
    node, routes = ra.relay.federation, ra.relay.hub.routes
    await node.links[b.hex].wait_connected(DEADLINE)
    assert routes.routing is node.routing and routes.forward == node.forward
    assert routes.remote("note/x") and not routes.remote(
        next(f for f in (f"misc/f{n}" for n in range(100)) if node.routing.is_home(f)))
    await node.close()
    assert routes.forward is None and not routes.remote("note/x")  # sequenced here, no longer forwarded
    assert all(not link.connected for link in node.links.values())


async def test_a_federated_relay_on_port_0_needs_a_public_url(tmp_path: Path, fed: Federation) -> None:
    ra = await fed.start("a")
    peer = fed.sites["b"]
    cfg = Config(data_dir=tmp_path, port=0, peers=(f"{peer.url}#{peer.hex}",))
    with pytest.raises(RuntimeError, match="public-url"):
        Node(ra.relay.hub, cfg)
