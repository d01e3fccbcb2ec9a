"""``doc/`` feeds: collaborative documents whose events carry Yjs v1 updates.

Kind ``doc.update``, body ``{"update": <base64 Yjs v1 update>}``. An update is refused with
``invalid`` unless it decodes as a Yjs v1 update, so a malformed update never reaches the log
and never poisons the merged document. The state is a pycrdt ``Doc``; its snapshot is the
full state as one Yjs update.
"""
from __future__ import annotations

import logging
from typing import Any

from pycrdt import Doc, merge_updates

from ..errors import InvalidEvent
from ..events import Event, Record, unb64
from .base import Namespace

log = logging.getLogger(__name__)

TEXT_ROOT = "text"


class DocState:
    """The merged document of one feed."""

    __slots__ = ("doc", "applied")

    def __init__(self) -> None:
        self.doc = Doc()
        self.applied = 0

    def state_update(self) -> bytes:
        return self.doc.get_update()

    def text(self, root: str = TEXT_ROOT) -> str:
        from pycrdt import Text

        return str(self.doc.get(root, type=Text))


def decode_update(body: Any) -> bytes:
    """Return the update bytes of a ``doc.update`` body, or raise InvalidEvent."""
    if not isinstance(body, dict) or set(body) != {"update"}:
        raise InvalidEvent("doc.update body must be {update: <base64 Yjs v1 update>}")
    update = unb64(body["update"])
    if not update:
        raise InvalidEvent("empty Yjs update")
    try:
        merge_updates(update, update)
    except Exception as exc:  # pycrdt raises ValueError; be strict about anything else too
        raise InvalidEvent("update is not a decodable Yjs v1 update") from exc
    return update


class DocNamespace(Namespace[DocState]):
    name = "doc"
    kinds = frozenset(("doc.update",))
    immutable_state = False  # a pycrdt Doc; updates validate on their own (they only need to decode)

    def initial(self, feed: str) -> DocState:
        return DocState()

    def validate(self, state: DocState, event: Event) -> None:
        if event.kind != "doc.update":
            raise InvalidEvent("doc feeds accept kind doc.update only")
        decode_update(event.body)

    def apply(self, state: DocState, record: Record) -> DocState:
        ev = record.event
        if ev.kind == "doc.update":
            try:
                state.doc.apply_update(unb64(ev.body["update"]))
            except Exception:  # validated before sequencing; keep folding deterministically
                log.warning("doc update at %s#%d did not apply", ev.feed, record.seq)
        state.applied = record.seq
        return state

    def dump(self, state: DocState) -> bytes:
        return state.state_update()

    def load(self, feed: str, data: bytes) -> DocState:
        st = DocState()
        st.doc.apply_update(data)
        return st

    def view(self, state: DocState) -> Any:
        return {"text": state.text()}
