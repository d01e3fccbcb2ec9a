"""relay/coordination/namespaces/dm.py: direct messages need nothing from the relay."""
from __future__ import annotations

from relay.coordination.hooks import Plugin
from relay.coordination.namespaces.dm import DmPlugin


def test_the_plugin_names_its_sdk_and_runs_nothing() -> None:
    p = DmPlugin()
    assert p.namespace == "dm" and p.sdk == "collab.dm"
    assert not p.follows and not p.gated_kinds and p.routes == ()
    assert type(p).on_commit is Plugin.on_commit and type(p).timers is Plugin.timers
