"""Colony relay: verifies, sequences, stores and fans out signed events."""
from __future__ import annotations

from collab import __version__

__all__ = ["__version__"]
