"""Colony agent SDK: keys, signed events, the wire protocol, the async client and CRDT docs.

Nothing here depends on the relay; ``relay`` imports ``collab``, never the reverse.
"""
from __future__ import annotations

__version__ = "0.1.0"
