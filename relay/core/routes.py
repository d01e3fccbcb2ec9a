"""Where a publish goes before it reaches its feed's worker: the hub's detours.

The :class:`relay.core.hub.Hub` gets one :class:`PublishRoutes` through its constructor. Other
components register their detours here instead of setting attributes on the hub:

* the federation (``relay.federation.node``) registers the routing (who homes each feed), the
  call that forwards a publish to a feed's home, the call that starts mirroring a feed, and the
  one that compares a peer's heads with ours (the ``/fed`` endpoint hands them over);
* the coordinator (``relay.coordination.coordinator``) registers a gate for the kinds that must
  pass it first (a bid locks ledger stake before it is sequenced), and the opening events of
  relay-owned feeds (a ledger opens with its operators; the feed's worker seals it as seq 1);
* the coordinator also registers the fence check: a publish whose body carries a ``fence``
  is admitted only while its author holds that lease epoch (``relay.coordination.fence``);
* the relay's lifecycle says when it starts draining (new publishes are refused).

``Hub.publish`` consults them in that order: forward if another relay homes the feed, check the
fence of a fenced event, gate for gated kinds, else sequence here.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from collab.events import Event

from relay.core.routing import Routing

#: a detour of a publish: ``(event, session key) -> (seq, duplicate)``
PublishCall = Callable[[Event, str | None], Awaitable[tuple[int, bool]]]
#: starts mirroring a feed another relay homes (its records then come from the home)
EnsureMirror = Callable[[str], Awaitable[None]]
#: compares a peer's heads (``[{feed, seq, hash}]`` from its ``/fed`` link) with ours
PeerHeads = Callable[[str, Any], Awaitable[None]]
#: the relay's event that opens a relay-owned feed (None: the worker's default ``feed.policy``)
Opening = Callable[[str], Event | None]


class PublishRoutes:
    """The registry of publish detours one hub consults (see the module docstring)."""

    __slots__ = ("draining", "ensure_mirror", "fence", "forward", "gate", "gated_kinds", "opening", "peer_heads",
                 "routing")

    def __init__(self, routing: Routing) -> None:
        self.routing = routing
        self.forward: PublishCall | None = None
        self.ensure_mirror: EnsureMirror | None = None
        self.peer_heads: PeerHeads | None = None
        self.gate: PublishCall | None = None
        self.gated_kinds: frozenset[str] = frozenset()
        self.opening: Opening | None = None
        self.fence: PublishCall | None = None
        self.draining = False  # the relay is stopping: new publishes are refused (Relay.drain)

    def register_federation(self, routing: Routing, forward: PublishCall, ensure_mirror: EnsureMirror,
                            peer_heads: PeerHeads | None = None) -> None:
        """Forward publishes of feeds another member homes; mirror those feeds on subscribe;
        compare the heads peers send."""
        self.routing, self.forward, self.ensure_mirror, self.peer_heads = routing, forward, ensure_mirror, peer_heads

    def unregister_forward(self) -> None:
        self.forward = None

    def register_gate(self, kinds: Iterable[str], gate: PublishCall) -> None:
        """Publishes of ``kinds`` go through ``gate`` (which sequences them with
        ``Hub.runtime_publish`` once it let them pass)."""
        self.gated_kinds, self.gate = frozenset(kinds), gate

    def unregister_gate(self) -> None:
        self.gate, self.gated_kinds = None, frozenset()

    def register_fence(self, fence: PublishCall | None) -> None:
        """Fenced publishes (``body.fence``) go through ``fence`` (which checks the lease, then
        calls ``Hub.publish_here``); None removes it."""
        self.fence = fence

    def register_opening(self, opening: Opening | None) -> None:
        """The opening events of relay-owned feeds come from ``opening`` (None: the default)."""
        self.opening = opening

    def start_draining(self) -> None:
        self.draining = True

    def remote(self, feed: str) -> bool:
        """Whether another member of the federation homes ``feed`` (publishes are forwarded)."""
        return self.forward is not None and not self.routing.is_home(feed)

    def detours(self, event: Event) -> bool:
        """Whether a publish of ``event`` is forwarded or gated rather than sequenced here directly."""
        return ((self.gate is not None and event.kind in self.gated_kinds) or self.remote(event.feed)
                or (self.fence is not None and fenced(event)))


def fenced(event: Event) -> bool:
    """Whether ``event`` carries a fence (``body.fence``, docs/coordination.md "Leases")."""
    return isinstance(event.body, dict) and "fence" in event.body
