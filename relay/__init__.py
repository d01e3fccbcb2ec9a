"""Colony relay: verifies, sequences, stores and fans out signed events."""
from __future__ import annotations
