"""Namespace plug-ins: pure state machines over a feed's log.

A namespace owns the meaning of the events in feeds ``<name>/...``. The relay calls
``validate`` before sequencing and ``apply`` after; replaying the same log through the same
functions gives the same state anywhere (relay, agent, auditor). ``base`` holds the interface
and the registry; each namespace is one module; :func:`default_registry` lists them.
The relay-side half of a namespace (ledger gate, follow-ups, timers, HTTP views) is in
``relay/coordination/namespaces/`` (docs/design.md, "Namespace plug-ins").
"""
from __future__ import annotations

from .agent import AgentNamespace
from .auction import AuctionNamespace
from .base import Admission, Namespace, Registry
from .dm import DmNamespace
from .doc import DocNamespace, DocState
from .doc_pending import DEFAULT_BOUND, PendingBound
from .generic import GenericNamespace
from .lease import LeaseNamespace
from .ledger import LedgerNamespace
from .relaylog import RelayLogNamespace
from .task import TaskNamespace
from .vouch import VouchNamespace


def default_registry(doc_pending: PendingBound | None = DEFAULT_BOUND, *, engine_checks: bool = True) -> Registry:
    """The namespaces every relay and agent knows; unknown ones get the generic plug-in.
    ``doc_pending`` bounds the updates a document keeps waiting for dependencies (the relay
    passes its configured limits; None leaves them unbounded). ``engine_checks=False``: the doc
    namespace leaves the Yjs decode check to the relay's sandbox (``collab.sandbox``) instead of
    running the engine in-process."""
    reg = Registry(GenericNamespace())
    for ns in (DocNamespace(doc_pending, engine_checks=engine_checks), LedgerNamespace(), AuctionNamespace(),
               VouchNamespace(), TaskNamespace(), AgentNamespace(), DmNamespace(), RelayLogNamespace(),
               LeaseNamespace()):
        reg.register(ns)
    return reg


__all__ = [
    "Admission",
    "AgentNamespace",
    "AuctionNamespace",
    "DmNamespace",
    "DocNamespace",
    "DocState",
    "GenericNamespace",
    "LeaseNamespace",
    "LedgerNamespace",
    "Namespace",
    "PendingBound",
    "Registry",
    "RelayLogNamespace",
    "TaskNamespace",
    "VouchNamespace",
    "default_registry",
]
