"""The namespace plug-in interface (relay/coordination/hooks.py): the registry's rules, and a
namespace written entirely in this test module (a pure state machine plus a relay-side plug-in
with a gate, a follow-up, a timer and an HTTP view) that a real relay runs without any edit to
the coordinator. Real relays on both backends, real sockets; every wait is on folded state."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.client import Client
from collab.errors import InvalidEvent, RelayError, Unauthorized
from collab.events import Event, Record, now_ms
from collab.feedview import FeedView
from collab.keys import Keypair
from collab.namespaces import Admission, Namespace, default_registry
from relay.coordination.hooks import Context, Plugin, Plugins
from relay.coordination.namespaces import default_plugins
from relay.core.worker import FeedRuntime
from relay.ops.runner import serving
from relay.server import Relay
from tests.conftest import Backend, make_config

FAST: dict[str, Any] = {"backoff_base": 0.02, "backoff_max": 0.2}


# -- a namespace the relay has never heard of: "chime/" ----------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Chime:
    """``chime.set {in_ms}`` asks for a ring ``in_ms`` after its receipt; the relay writes
    ``chime.ring`` at that time and ``chime.done {ring}`` after the ring is recorded. A
    ``chime.paid`` is gated: the relay writes ``chime.receipt`` just before it."""

    due: int | None = None
    rings: int = 0
    done: tuple[int, ...] = ()
    receipts: int = 0
    paid: int = 0


class ChimeNamespace(Namespace[Chime]):
    name = "chime"
    kinds = frozenset(("chime.set", "chime.ring", "chime.done", "chime.paid", "chime.receipt"))
    RELAY_ONLY = frozenset(("chime.ring", "chime.done", "chime.receipt"))

    def initial(self, feed: str) -> Chime:
        return Chime()

    def validate(self, state: Chime, event: Event, adm: Admission) -> None:
        if event.kind in self.RELAY_ONLY and event.author != adm.relay:
            raise Unauthorized(f"{event.kind} is written by the relay only")
        body = event.body
        if event.kind == "chime.set" and not (isinstance(body, dict) and isinstance(body.get("in_ms"), int)):
            raise InvalidEvent("chime.set needs {in_ms: int}")
        if event.kind == "chime.ring" and (state.due is None or adm.now < state.due):
            raise InvalidEvent("no chime is due")

    def apply(self, state: Chime, record: Record) -> Chime:
        ev = record.event
        if ev.kind == "chime.set":
            return dataclasses.replace(state, due=record.rtime + ev.body["in_ms"])
        if ev.kind == "chime.ring":
            return dataclasses.replace(state, due=None, rings=state.rings + 1)
        if ev.kind == "chime.done":
            return dataclasses.replace(state, done=(*state.done, ev.body["ring"]))
        if ev.kind == "chime.receipt":
            return dataclasses.replace(state, receipts=state.receipts + 1)
        return dataclasses.replace(state, paid=state.paid + 1)

    def view(self, state: Chime) -> Any:
        return dataclasses.asdict(state)


class ChimePlugin(Plugin):
    namespace = "chime"
    gated_kinds = frozenset(("chime.paid",))
    follows = True

    def __init__(self) -> None:
        self.commits: list[tuple[str, int]] = []

    async def gate(self, ctx: Context, event: Event, session_key: str | None) -> tuple[int, bool]:
        await ctx.publish(Event.create(ctx.hub.relay_key, event.feed, "chime.receipt", {"for": event.id}))
        return await ctx.hub.runtime_publish(event, session_key)

    async def on_commit(self, ctx: Context, rec: Record, before: Any, after: Any) -> None:
        self.commits.append((rec.event.kind, rec.seq))
        if rec.event.kind == "chime.ring":
            assert after.rings == before.rings + 1
            body = {"ring": rec.seq}
            await ctx.try_publish(Event.create(ctx.hub.relay_key, rec.feed, "chime.done", body, ts=rec.rtime))

    def timers(self, state: Any) -> list[tuple[int, str]]:
        return [] if state.due is None else [(state.due, "ring")]

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        assert what == "ring"
        return Event.create(ctx.hub.relay_key, rt.feed, "chime.ring", {}, ts=deadline)

    @property
    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/chimes", self.count)]

    async def count(self, request: Request) -> Response:
        return JSONResponse({"commits": len(self.commits)})


async def test_a_namespace_from_a_test_module_runs_its_relay_hooks(tmp_path: Path, backend: Backend) -> None:
    registry = default_registry()
    registry.register(ChimeNamespace())
    plugins = default_plugins()
    chime = ChimePlugin()
    plugins.register(chime)
    cfg = make_config(tmp_path / "r", backend)
    async with serving(cfg, Relay(cfg, registry=registry, plugins=plugins)) as running:
        async with Client(running.url, Keypair.generate(), **FAST) as c:
            view: FeedView[Chime] = FeedView(c, "chime/kitchen", ChimeNamespace())
            async with view:
                start = now_ms()
                await c.publish("chime/kitchen", "chime.set", {"in_ms": 300})
                # the timer rings it (on the relay's clock), the follow-up records the ring
                state = await view.wait_for(lambda s: s.done, timeout=20)
                assert state.rings == 1 and state.due is None and state.done == (2,)
                ring = next(r for r in view.records if r.event.kind == "chime.ring")
                assert ring.event.author == running.relay.hub.relay_key.public_hex
                assert ring.rtime >= view.records[0].rtime + 300 and now_ms() - start >= 300
                # the gate runs before the gated kind is sequenced
                await c.publish("chime/kitchen", "chime.paid", {})
                state = await view.wait_for(lambda s: s.paid == 1, timeout=20)
                assert state.receipts == 1
                kinds = [r.event.kind for r in view.records]
                assert kinds == ["chime.set", "chime.ring", "chime.done", "chime.receipt", "chime.paid"]
                with pytest.raises(RelayError) as refused:  # relay-only kinds stay relay-only
                    await c.publish("chime/kitchen", "chime.ring", {})
                assert refused.value.code == "unauthorized"
        # the follow-ups saw every record in order, and the plug-in's view is mounted
        assert [k for k, _ in chime.commits] == kinds
        async with httpx.AsyncClient(base_url=running.url) as http:
            resp = await http.get("/chimes")
            assert resp.status_code == 200 and resp.json() == {"commits": 5}
            assert (await http.get("/trust/global")).status_code == 200  # the built-in views are still there


# -- the registry ------------------------------------------------------------------------------------
def test_the_default_plugins_cover_the_coordination_namespaces() -> None:
    plugins = default_plugins()
    assert plugins.names() == ["agent", "auction", "dm", "lease", "ledger", "task", "vouch"]
    assert plugins.gated_kinds == {"auction.open", "auction.bid"}
    assert plugins.followed_namespaces() == ["auction", "lease", "task"]
    assert plugins.gate_for("auction.bid") is plugins.get("auction")
    assert plugins.followed("auction/x") is plugins.get("auction")
    assert plugins.followed("vouch/global") is None and plugins.followed("doc/x") is None
    paths = sorted(getattr(r, "path", "") for r in plugins.routes())
    assert paths == ["/agents", "/agents/{key}", "/trust/{topic}", "/trust/{topic}/{key}"]
    for p in plugins:  # every plug-in names the SDK module agents use, and it imports
        assert p.sdk and __import__(p.sdk, fromlist=["_"])
    assert default_plugins().get("vouch") is not plugins.get("vouch")  # a fresh set per relay


def test_the_registry_refuses_ambiguous_plugins() -> None:
    plugins = Plugins([ChimePlugin()])
    with pytest.raises(ValueError, match="has a plug-in already"):
        plugins.register(ChimePlugin())

    class Thief(Plugin):
        namespace = "thief"
        gated_kinds = frozenset(("chime.paid",))

    with pytest.raises(ValueError, match="gated by another"):
        plugins.register(Thief())
    with pytest.raises(ValueError, match="names no namespace"):
        plugins.register(Plugin())
    with pytest.raises(InvalidEvent):
        plugins.gate_for("doc.update")


async def test_the_default_hooks_do_nothing() -> None:
    p = Plugin()
    assert list(p.timers(object())) == [] and p.routes == ()
    with pytest.raises(InvalidEvent):
        await p.gate(None, Event.create(Keypair.generate(), "x/y", "x.z", {}), None)  # type: ignore[arg-type]
