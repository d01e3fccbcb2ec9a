"""Namespace plug-ins: pure state machines over a feed's log.

A namespace owns the meaning of the events in feeds ``<name>/...``. The relay calls
``validate`` before sequencing and ``apply`` after; replaying the same log through the same
functions gives the same state anywhere (relay, agent, auditor).
"""
from __future__ import annotations

from .base import Admission, Namespace, Registry, default_registry
from .doc import DocNamespace, DocState
from .generic import GenericNamespace

__all__ = ["Admission", "Namespace", "Registry", "default_registry", "DocNamespace", "DocState", "GenericNamespace"]
