"""PublishRoutes: the registry of a hub's publish detours (pure, no I/O)."""
from __future__ import annotations

from collab.events import Event
from collab.keys import Keypair

from relay.core.routes import PublishRoutes
from relay.core.routing import Member, Routing

ME, PEER, ALICE = (Keypair.from_seed(bytes([c]) * 32) for c in b"MPA")


async def _forward(event: Event, key: str | None) -> tuple[int, bool]:
    return 1, False


async def _mirror(feed: str) -> None:
    return None


def test_nothing_is_detoured_until_registered() -> None:
    routes = PublishRoutes(Routing(Member(ME.public_hex, "")))
    ev = Event.create(ALICE, "auction/x", "auction.bid", {}, ts=1)
    assert not routes.detours(ev) and not routes.remote("auction/x") and not routes.draining
    routes.register_gate(["auction.bid"], _forward)
    assert routes.detours(ev) and routes.gated_kinds == frozenset({"auction.bid"})
    assert not routes.detours(Event.create(ALICE, "auction/x", "auction.open", {}, ts=1))
    routes.unregister_gate()
    assert not routes.detours(ev) and routes.gated_kinds == frozenset()
    routes.start_draining()
    assert routes.draining


def test_a_feed_homed_elsewhere_is_remote_once_federation_registers() -> None:
    routing = Routing(Member(ME.public_hex, "http://me"), (Member(PEER.public_hex, "http://peer"),))
    routes = PublishRoutes(Routing(Member(ME.public_hex, "")))
    remote = next(f"chat/{i}" for i in range(1000) if not routing.is_home(f"chat/{i}"))
    assert not routes.remote(remote)
    routes.register_federation(routing, _forward, _mirror)
    assert routes.routing is routing and routes.remote(remote)
    assert routes.detours(Event.create(ALICE, remote, "msg", {}, ts=1))
    routes.unregister_forward()
    assert not routes.remote(remote)
