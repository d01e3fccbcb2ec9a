"""relay/coordination/coordinator.py, the runner of the namespaces' relay-side hooks, seen
through a namespace of this module ("bell/", registered as in test_hooks.py) on real relays
(uvicorn on port 0, both backends): a gated kind goes to its plug-in's gate with the
publisher's key; ``on_commit`` sees every record of a followed feed in seq order with the
states before and after it; timers are armed from the state after each record and fire the
plug-in's event; on start, a plug-in that asks gets its follow-ups replayed (their events
come back as duplicates) and timers are re-armed from the stored state."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from collab.client import Client
from collab.errors import InvalidEvent, Unauthorized
from collab.events import Event, Record
from collab.feedview import FeedView
from collab.keys import Keypair
from collab.namespaces import Admission, Namespace, default_registry
from relay.coordination.hooks import Context, Plugin
from relay.coordination.namespaces import default_plugins
from relay.core.worker import FeedRuntime
from relay.ops.runner import serving
from relay.server import Relay
from tests.conftest import Backend, make_config

FAST: dict[str, Any] = {"backoff_base": 0.02, "backoff_max": 0.2}
FEED = "bell/tower"
TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class Bell:
    kinds: tuple[str, ...] = ()
    due: int | None = None


class BellNamespace(Namespace[Bell]):
    """``bell.ring`` (anyone) is echoed by the relay (``bell.echo``); ``bell.arm {in_ms}`` sets
    a deadline the relay tolls (``bell.toll``); ``bell.gated`` passes the plug-in's gate."""

    name = "bell"
    kinds = frozenset(("bell.ring", "bell.echo", "bell.arm", "bell.toll", "bell.gated"))
    RELAY_ONLY = frozenset(("bell.echo", "bell.toll"))

    def initial(self, feed: str) -> Bell:
        return Bell()

    def validate(self, state: Bell, event: Event, adm: Admission) -> None:
        if event.kind in self.RELAY_ONLY and event.author != adm.relay:
            raise Unauthorized(f"{event.kind} is written by the relay only")
        if event.kind == "bell.toll" and (state.due is None or adm.now < state.due):
            raise InvalidEvent("no toll is due")

    def apply(self, state: Bell, record: Record) -> Bell:
        ev = record.event
        due = state.due
        if ev.kind == "bell.arm":
            due = record.rtime + ev.body["in_ms"]
        elif ev.kind == "bell.toll":
            due = None
        return Bell((*state.kinds, ev.kind), due)

    def view(self, state: Bell) -> Any:
        return dataclasses.asdict(state)


class BellPlugin(Plugin):
    namespace = "bell"
    gated_kinds = frozenset(("bell.gated",))
    follows = True

    def __init__(self, *, replay: bool = False, timed: bool = True) -> None:
        self.replay_on_start = replay
        self.timed = timed
        self.gated: list[tuple[str, str | None]] = []
        self.commits: list[tuple[str, int, Bell, Bell]] = []
        self._changed = asyncio.Condition()

    async def gate(self, ctx: Context, event: Event, session_key: str | None) -> tuple[int, bool]:
        self.gated.append((event.id, session_key))
        return await ctx.hub.runtime_publish(event, session_key)

    async def on_commit(self, ctx: Context, rec: Record, before: Any, after: Any) -> None:
        self.commits.append((rec.event.kind, rec.seq, before, after))
        if rec.event.kind == "bell.ring":  # a deterministic follow-up: ts and body from the record
            echo = Event.create(ctx.hub.relay_key, rec.feed, "bell.echo", {"of": rec.seq}, ts=rec.rtime)
            await ctx.try_publish(echo)
        async with self._changed:
            self._changed.notify_all()

    async def wait_commits(self, n: int) -> None:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.commits) >= n)

        await asyncio.wait_for(enough(), TIMEOUT)

    def timers(self, state: Any) -> list[tuple[int, str]]:
        return [(state.due, "toll")] if self.timed and state.due is not None else []

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        assert what == "toll" and rt.feed == FEED
        return Event.create(ctx.hub.relay_key, rt.feed, "bell.toll", {}, ts=deadline)


def relay_with(tmp: Path, backend: Backend, plugin: BellPlugin) -> Any:
    registry = default_registry()
    registry.register(BellNamespace())
    plugins = default_plugins()
    plugins.register(plugin)
    cfg = make_config(tmp / "r", backend)
    return serving(cfg, Relay(cfg, registry=registry, plugins=plugins))


def assert_commits_in_order(plugin: BellPlugin, kinds: list[str]) -> None:
    """on_commit saw ``kinds`` in seq order, each with the states just before and after it."""
    assert [k for k, _, _, _ in plugin.commits] == kinds
    assert [seq for _, seq, _, _ in plugin.commits] == list(range(1, len(kinds) + 1))
    for kind, seq, before, after in plugin.commits:
        assert before.kinds == tuple(kinds[:seq - 1]) and after.kinds == (*before.kinds, kind)


async def test_gates_follow_ups_and_timers(tmp_path: Path, backend: Backend) -> None:
    plugin = BellPlugin()
    key = Keypair.generate()
    async with relay_with(tmp_path, backend, plugin) as running:
        relay_hex = running.relay.hub.relay_key.public_hex
        assert running.relay.coordinator.plugins.gate_for("bell.gated") is plugin
        async with Client(running.url, key, **FAST) as c:
            view: FeedView[Bell] = FeedView(c, FEED, BellNamespace())
            async with view:
                await c.publish(FEED, "bell.ring", {})
                await view.wait_for(lambda s: "bell.echo" in s.kinds, timeout=TIMEOUT)
                # the gated kind goes through the plug-in's gate, with the publisher's key
                gated = await c.publish(FEED, "bell.gated", {})
                assert [k for _, k in plugin.gated] == [key.public_hex] and gated.seq == 3
                assert "bell.ring" not in {e for e, _ in plugin.gated}  # only the gated kind
                # a timer armed from the state tolls once the deadline passed, on the relay's clock
                await c.publish(FEED, "bell.arm", {"in_ms": 200})
                state = await view.wait_for(lambda s: "bell.toll" in s.kinds, timeout=TIMEOUT)
                assert state.due is None
                arm = next(r for r in view.records if r.event.kind == "bell.arm")
                toll = next(r for r in view.records if r.event.kind == "bell.toll")
                assert toll.event.author == relay_hex and toll.rtime >= arm.rtime + 200
                assert toll.event.ts == arm.rtime + 200  # the deadline the state gave
                kinds = ["bell.ring", "bell.echo", "bell.gated", "bell.arm", "bell.toll"]
                assert [r.event.kind for r in view.records] == kinds
                echo = next(r for r in view.records if r.event.kind == "bell.echo")
                assert echo.event.author == relay_hex and echo.event.body == {"of": 1}
            await plugin.wait_commits(len(kinds))
        assert_commits_in_order(plugin, kinds)


async def test_a_restart_replays_follow_ups_and_rearms_timers_from_the_stored_state(
        tmp_path: Path, backend: Backend) -> None:
    first = BellPlugin(timed=False)  # this run arms no timer: the deadline passes while it is down
    key = Keypair.generate()
    async with relay_with(tmp_path, backend, first) as running:
        async with Client(running.url, key, **FAST) as c:
            await c.publish(FEED, "bell.ring", {})
            await c.publish(FEED, "bell.arm", {"in_ms": 0})
            await first.wait_commits(3)  # ring, arm, and the echo (after the ring)
    kinds = sorted(k for k, _, _, _ in first.commits)
    assert kinds == ["bell.arm", "bell.echo", "bell.ring"]
    stored = [k for k, _, _, _ in sorted(first.commits, key=lambda c: c[1])]

    # not asked to replay: nothing is replayed at start, but the timer is armed from the state
    quiet = BellPlugin()
    async with relay_with(tmp_path, backend, quiet) as running:
        await quiet.wait_commits(1)  # the toll, fired at once (its deadline is past)
        assert [k for k, _, _, _ in quiet.commits] == ["bell.toll"] and quiet.commits[0][1] == 4
        assert quiet.commits[0][2].kinds == tuple(stored)

    # asked to replay: on_commit sees every stored record, in order, before the relay serves
    again = BellPlugin(replay=True)
    async with relay_with(tmp_path, backend, again) as running:
        stored.append("bell.toll")
        assert_commits_in_order(again, stored)
        head = (await running.relay.hub.runtime(FEED)).seq
        assert head == 4  # the replayed echo came back a duplicate: no new record
        assert again.gated == []
