"""The hub through its public calls, on real SQLite storage: loading, the one publish call and
its detours (registered on PublishRoutes, never set on the hub), unloading."""
from __future__ import annotations

from pathlib import Path

from collab.errors import Unavailable
from collab.events import Event
from collab.keys import Keypair

from relay.core.routing import Member, Routing
from tests.relay.core.hubkit import RELAY, Sink, hub_on_sqlite

ALICE = Keypair.from_seed(b"A" * 32)


def msg(n: int, feed: str = "chat/a") -> Event:
    return Event.create(ALICE, feed, "msg", {"n": n}, ts=1000 + n)


async def test_publish_sequences_dedups_and_a_new_hub_reloads_from_storage(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        assert await hub.publish(msg(1), ALICE.public_hex) == (1, False)
        assert await hub.publish(msg(2), ALICE.public_hex) == (2, False)
        assert await hub.publish(msg(1), ALICE.public_hex) == (1, True)
        rt = await hub.runtime("chat/a")
        head = rt.head
        assert rt.seq == 2 and rt.state == 2
    async with hub_on_sqlite(tmp_path) as hub:
        rt = await hub.runtime("chat/a")
        assert (rt.seq, rt.head, rt.state) == (2, head, 2)
        assert await hub.publish(msg(2), ALICE.public_hex) == (2, True)  # the dedup set was reloaded
        assert await hub.publish(msg(3), ALICE.public_hex) == (3, False)


async def test_a_registered_gate_sees_gated_kinds_only(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        seen: list[str] = []

        async def gate(event: Event, key: str | None) -> tuple[int, bool]:
            seen.append(event.kind)
            return await hub.runtime_publish(event, key)

        hub.routes.register_gate({"special"}, gate)
        special = Event.create(ALICE, "chat/a", "special", {}, ts=1)
        assert hub.detours(special) and not hub.detours(msg(1)) and hub.gated_kinds == frozenset({"special"})
        assert await hub.publish(msg(1), ALICE.public_hex) == (1, False)
        assert await hub.publish(special, ALICE.public_hex) == (2, False)
        assert seen == ["special"]
        hub.routes.unregister_gate()
        assert not hub.detours(special)


async def test_a_feed_another_member_homes_is_forwarded(tmp_path: Path) -> None:
    other = Keypair.from_seed(b"O" * 32)
    async with hub_on_sqlite(tmp_path) as hub:
        routing = Routing(Member(RELAY.public_hex, "http://me"), (Member(other.public_hex, "http://other"),))
        forwarded: list[str] = []
        mirrored: list[str] = []

        async def forward(event: Event, key: str | None) -> tuple[int, bool]:
            forwarded.append(event.feed)
            return 7, False

        async def ensure_mirror(feed: str) -> None:
            mirrored.append(feed)

        hub.routes.register_federation(routing, forward, ensure_mirror)
        assert hub.routing is routing
        remote = next(f"chat/r{i}" for i in range(1000) if not routing.is_home(f"remote/{i}"))
        local = next(f"chat/{i}" for i in range(1000) if routing.is_home(f"chat/{i}"))
        assert hub.remote(remote) and not hub.remote(local)
        assert await hub.publish(msg(1, remote), ALICE.public_hex) == (7, False)
        assert await hub.publish(msg(1, local), ALICE.public_hex) == (1, False)
        assert forwarded == [remote]
        await hub.subscribe(Sink(), remote, 0)
        assert mirrored == [remote]
        hub.routes.unregister_forward()
        assert not hub.remote(remote)


async def test_draining_is_said_by_the_routes(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        assert not hub.draining
        hub.routes.start_draining()
        assert hub.draining


async def test_idle_feeds_are_snapshotted_and_unloaded(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path, idle_feed_seconds=0.0) as hub:
        for i in range(3):
            await hub.publish(msg(i), ALICE.public_hex)
        sink = Sink(ALICE.public_hex)
        await hub.subscribe(sink, "chat/a", 0)
        assert await hub.unload_idle() == 0  # a subscriber keeps it loaded
        assert hub.unsubscribe(sink, "chat/a")
        assert await hub.unload_idle() == 1 and "chat/a" not in hub.feeds
        assert (await hub.runtime("chat/a")).seq == 3


async def test_a_failed_append_answers_unavailable_and_reloads(tmp_path: Path) -> None:
    async with hub_on_sqlite(tmp_path) as hub:
        assert await hub.publish(msg(1), ALICE.public_hex) == (1, False)
        rt = await hub.runtime("chat/a")
        await hub.storage.close()  # the store goes away under the worker
        try:
            await hub.publish(msg(2), ALICE.public_hex)
        except Unavailable:
            pass
        else:
            raise AssertionError("an append to a closed store was acknowledged")
        assert rt.seq == 1
        await hub.storage.open()
        assert await hub.publish(msg(2), ALICE.public_hex) == (2, False)
