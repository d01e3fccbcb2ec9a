"""Storage backends behind one interface (:class:`relay.storage.base.Storage`)."""
from __future__ import annotations

from relay.storage.base import FeedHead, Storage, StoredSnapshot

__all__ = ["FeedHead", "Storage", "StoredSnapshot"]
