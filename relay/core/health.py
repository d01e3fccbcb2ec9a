"""Component health: what anonymous callers of ``GET /health`` may see, and what only operators see.

Each component (``storage``, ``bus``, ``federation``) reports a detail dict; the public view keeps
only numbers, booleans and the fixed names of backends, never storage paths, peer URLs or
exception text. Those stay in the operator's channels: every change of a component between up
and down is logged with its full detail, and ``/metrics`` carries ``colony_component_up``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: the fixed names a health report uses for the relay's components
COMPONENTS = ("storage", "bus", "federation")

#: string fields that name a fixed kind of backend (safe to show); every other string is dropped
_SAFE_STRINGS = frozenset({"backend", "bus"})


def public_view(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a component's detail anyone may see: numbers, booleans and backend names."""
    return {k: v for k, v in detail.items()
            if isinstance(v, (bool, int, float)) or (k in _SAFE_STRINGS and isinstance(v, str))}


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str                  # one of COMPONENTS
    up: bool
    detail: Mapping[str, Any]  # operator-only: may hold paths, URLs and error text


class HealthWatch:
    """The last known state of each component; logs each change with its detail."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}

    def observe(self, components: list[ComponentHealth]) -> None:
        for c in components:
            was = self.up.get(c.name)
            self.up[c.name] = c.up
            if was == c.up:
                continue
            if not c.up:
                log.warning("component %s is down: %s", c.name, dict(c.detail))
            elif was is not None:
                log.info("component %s is up again", c.name)


def federation_view(fed: Any) -> tuple[ComponentHealth, dict[str, Any]]:
    """The federation's health (every link connected = up) and its public view: member keys,
    per-link ``connected``, the alarm count; peer URLs and link errors only in the detail."""
    detail: dict[str, Any] = fed.health()
    links = detail.get("links", {})
    public = {
        "members": [{"key": m["key"]} for m in detail.get("members", [])],
        "links": {k: {"connected": bool(v.get("connected"))} for k, v in links.items()},
        "alarms": detail.get("alarms", 0),
    }
    up = all(v.get("connected") for v in links.values())
    return ComponentHealth("federation", up, detail), public
