"""``dm/`` on the relay's side: nothing to run. Access is fixed by the feed's name and the
messages are sealed end to end (``collab/namespaces/dm.py``, ``collab/dm.py``); the plug-in
only names the SDK helper."""
from __future__ import annotations

from relay.coordination.hooks import Plugin


class DmPlugin(Plugin):
    namespace = "dm"
    sdk = "collab.dm"
