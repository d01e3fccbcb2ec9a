"""The built-in namespaces' relay-side plug-ins (``relay.coordination.hooks``), one module each.

Adding a namespace: write its state machine in ``collab/namespaces/<name>.py`` and register it
in ``collab.namespaces.default_registry``; if it needs the relay (a gate, follow-ups, timers,
HTTP views), write ``relay/coordination/namespaces/<name>.py`` with a ``Plugin`` subclass and
list it here. Nothing else names a namespace.
"""
from __future__ import annotations

from relay.coordination.hooks import Plugins
from relay.coordination.namespaces.agent import AgentPlugin
from relay.coordination.namespaces.auction import AuctionPlugin
from relay.coordination.namespaces.dm import DmPlugin
from relay.coordination.namespaces.lease import LeasePlugin
from relay.coordination.namespaces.ledger import LedgerPlugin
from relay.coordination.namespaces.task import TaskPlugin
from relay.coordination.namespaces.vouch import VouchPlugin


def default_plugins() -> Plugins:
    """A fresh set of the built-in plug-ins (they keep per-relay caches: one set per relay)."""
    return Plugins([LedgerPlugin(), AuctionPlugin(), VouchPlugin(), TaskPlugin(), AgentPlugin(), DmPlugin(),
                    LeasePlugin()])


__all__ = ["AgentPlugin", "AuctionPlugin", "DmPlugin", "LeasePlugin", "LedgerPlugin", "TaskPlugin", "VouchPlugin",
           "default_plugins"]
