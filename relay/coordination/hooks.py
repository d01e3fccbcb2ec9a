"""Namespace plug-ins on the relay's side: the hook interface and the registry.

A namespace is a pure state machine in ``collab/namespaces`` plus, when it needs an actor
with a clock and authority over several feeds, a relay-side :class:`Plugin` registered in a
:class:`Plugins` set (``relay/coordination/namespaces/`` holds the built-in ones). The
coordinator (``relay/coordination/coordinator.py``) is the one hook runner: it names no
namespace, it asks the registry. The hooks, all optional (docs/design.md, "Namespace
plug-ins"):

* ``gated_kinds`` and :meth:`Plugin.gate`: publishes of these kinds are handed to the plug-in
  instead of being sequenced directly (the auction locks a bid's stake in the ledger first).
* :meth:`Plugin.on_commit`: after a record of a followed feed commits on its home relay, with
  the state before and after it; relay-signed follow-ups go out through ``ctx.publish``.
  ``replay_on_start`` re-runs it over the whole log when the relay starts (follow-ups have
  deterministic ids, so the ones already made come back as duplicates).
* :meth:`Plugin.timers` / :meth:`Plugin.on_timer`: deadlines read from a followed feed's state,
  re-armed after every record; at the deadline ``on_timer`` returns the relay-signed event to
  publish (or None).
* :meth:`Plugin.on_load`: this process loaded a followed feed (its timers are armed from the
  loaded state first); make the follow-ups that state owes, which another process of the site
  may have died before making.
* :meth:`Plugin.opening`: the relay-signed event that opens a feed of a relay-owned namespace
  (``Namespace.relay_owned``: agents cannot create such feeds); the feed's worker seals it as
  seq 1 in the same append as the first event it accepts there (default: ``feed.policy``).
* ``routes``: HTTP views mounted by the app (``/trust``, ``/agents``); a view reaches the
  running relay as a :class:`Site` through ``request.app.state.relay``.
* ``sdk``: the ``collab`` module agents use for this namespace (documentation and discovery).

Hooks receive a :class:`Context` (the coordinator): the hub, the relay's key, publishing as
the relay, per-key locks and the site's settings. Plug-in instances belong to one relay:
build a fresh set per relay (:func:`relay.coordination.namespaces.default_plugins`).
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.routing import BaseRoute

from collab.errors import InvalidEvent
from collab.events import Event, Record, namespace_of

from relay.coordination.directory import Directory
from relay.core.hub import Hub
from relay.core.worker import FeedRuntime


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """The site's trust parameters (``--trust-pretrusted``, ``--trust-half-life``)."""

    pretrusted: frozenset[str] = frozenset()
    half_life_ms: int = 30 * 24 * 3600 * 1000


class Context(Protocol):
    """What a hook may use: implemented by :class:`relay.coordination.coordinator.Coordinator`."""

    @property
    def hub(self) -> Hub: ...

    @property
    def relay(self) -> str:
        """The relay's public key (hex): the author of every follow-up and timer event."""

    @property
    def operators(self) -> tuple[str, ...]: ...

    @property
    def trust(self) -> TrustSettings: ...

    async def publish(self, ev: Event) -> tuple[int, bool]:
        """Publish a relay-signed event through the hub (validated like any agent's)."""

    async def try_publish(self, ev: Event) -> None:
        """Publish, and log (not raise) a refusal: another process may have made the move."""

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        """One asyncio lock per key, shared by every hook of this relay process."""


class Site(Protocol):
    """What an HTTP view reads from the running relay (``relay.server.Relay``)."""

    @property
    def hub(self) -> Hub: ...

    @property
    def coordinator(self) -> Context: ...

    @property
    def directory(self) -> Directory: ...


class Plugin:
    """The relay-side hooks of one namespace; every hook is optional (the defaults do nothing)."""

    #: the namespace (feeds ``<namespace>/...``) whose records reach on_commit and timers
    namespace: str = ""
    #: publishes of these kinds go through :meth:`gate`
    gated_kinds: frozenset[str] = frozenset()
    #: on_commit and timers run for this namespace's feeds (on their home relay)
    follows: bool = False
    #: when the relay starts, re-run on_commit over every record of every followed feed
    replay_on_start: bool = False
    #: the collab module agents use for this namespace
    sdk: str = ""

    @property
    def routes(self) -> Sequence[BaseRoute]:
        """HTTP views of this namespace."""
        return ()

    @property
    def openapi(self) -> dict[str, dict[str, Any]]:
        """The OpenAPI paths of :attr:`routes` (path -> method -> operation; relay.endpoints.openapi
        merges them into ``GET /openapi.json``)."""
        return {}

    async def gate(self, ctx: Context, event: Event, session_key: str | None) -> tuple[int, bool]:
        """Sequence ``event`` (one of ``gated_kinds``) with whatever must happen first."""
        raise InvalidEvent(f"{self.namespace or type(self).__name__} gates no {event.kind}")

    def opening(self, ctx: Context, feed: str) -> Event | None:
        """The relay-signed event that opens ``feed`` of a relay-owned namespace (its ``ts`` fixed,
        e.g. 0, so every process of a site makes the same one), or None for ``feed.policy`` with
        the namespace's default policy."""
        return None

    async def on_commit(self, ctx: Context, rec: Record, before: Any, after: Any) -> None:
        """``rec`` committed, taking the feed's state from ``before`` to ``after``."""

    async def on_load(self, ctx: Context, rt: FeedRuntime) -> None:
        """``rt`` was loaded by this process (at start, for a client, for a timer): publish what
        its current state owes (deterministic ids: what was made already comes back a duplicate)."""

    def timers(self, state: Any) -> Iterable[tuple[int, str]]:
        """``(deadline ms, what)`` to arm for a feed in ``state`` (replacing the previous ones)."""
        return ()

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        """The relay-signed event to publish when timer ``what`` of ``rt.feed`` fires, or None."""
        return None


class Plugins:
    """The relay-side plug-ins of one relay, by namespace; answers the hook runner's questions."""

    def __init__(self, plugins: Iterable[Plugin] = ()) -> None:
        self._by_ns: dict[str, Plugin] = {}
        self._by_kind: dict[str, Plugin] = {}
        for p in plugins:
            self.register(p)

    def register(self, plugin: Plugin) -> None:
        if not plugin.namespace:
            raise ValueError(f"{type(plugin).__name__} names no namespace")
        if plugin.namespace in self._by_ns:
            raise ValueError(f"namespace {plugin.namespace!r} has a plug-in already")
        taken = plugin.gated_kinds & self._by_kind.keys()
        if taken:
            raise ValueError(f"kinds {sorted(taken)} are gated by another plug-in already")
        self._by_ns[plugin.namespace] = plugin
        self._by_kind.update(dict.fromkeys(plugin.gated_kinds, plugin))

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._by_ns.values())

    def names(self) -> list[str]:
        return sorted(self._by_ns)

    def get(self, namespace: str) -> Plugin | None:
        return self._by_ns.get(namespace)

    def followed(self, feed: str) -> Plugin | None:
        """The plug-in that follows ``feed``'s records (on_commit, timers), or None."""
        p = self._by_ns.get(namespace_of(feed))
        return p if p is not None and p.follows else None

    def followed_namespaces(self) -> list[str]:
        return [name for name, p in sorted(self._by_ns.items()) if p.follows]

    @property
    def gated_kinds(self) -> frozenset[str]:
        return frozenset(self._by_kind)

    def gate_for(self, kind: str) -> Plugin:
        p = self._by_kind.get(kind)
        if p is None:
            raise InvalidEvent(f"no plug-in gates {kind}")
        return p

    def routes(self) -> list[BaseRoute]:
        return [r for p in self._by_ns.values() for r in p.routes]
