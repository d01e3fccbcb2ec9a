"""The one hash-chain check of a feed (split from :mod:`collab.feedcore` so the wire protocol
can use it without importing the namespaces)."""
from __future__ import annotations

from typing import Literal

from .events import Record

Link = Literal["next", "old", "gap", "break"]


def link(seq: int, head: str | None, rec: Record) -> Link:
    """How ``rec`` relates to a chain whose last record is ``(seq, head)`` (``head`` None: not
    known, only the seq is checked): ``next`` extends it, ``old`` is at or below ``seq``,
    ``gap`` skips seqs, ``break`` has the next seq but does not link to ``head``."""
    if rec.seq <= seq:
        return "old"
    if rec.seq != seq + 1:
        return "gap"
    if head is not None and rec.prev != head:
        return "break"
    return "next"


__all__ = ["Link", "link"]
