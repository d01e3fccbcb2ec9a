"""``doc/`` feeds: collaborative documents whose events carry Yjs v1 updates.

Kind ``doc.update``, body ``{"update": <base64 Yjs v1 update>}``. An update is refused with
``invalid`` unless it decodes as a Yjs v1 update, so a malformed update never reaches the log
and never poisons the merged document. The state is a pycrdt ``Doc``; its snapshot is the
full state as one Yjs update.

Records may carry updates out of causal order (a client retries one edit after a later one
was sequenced), so the Doc can hold *pending* parts (structs or deletions whose dependencies
are later in the log). ``Doc.get_update()`` leaves those out, so the state keeps the updates
that are not fully integrated yet and the snapshot merges them in: loading a snapshot and
folding the rest of the log must give exactly the state of folding the whole log.

Pending parts are bounded per document (``collab/namespaces/doc_pending.py``): an update that
may leave some is refused with ``too_large`` before it is sealed once the document's pending
updates would pass :class:`PendingBound` (bytes and count; the relay advertises them as
``max_doc_pending_bytes`` and ``max_doc_pending_updates``), so checking costs O(update) per
record however much is pending. Folding (``collab/namespaces/doc_waiting.py``) looks again at a
pending part only when the state vector passes a clock it waits for; parts that wait for one
another are merged (at most the pending bound's bytes per record).
"""
from __future__ import annotations

import itertools
import json
import logging
from hashlib import blake2b
from typing import Any

from pycrdt import Doc, merge_updates

from ..errors import ColonyError, InvalidEvent
from ..events import Event, Record, unb64
from ..lib0 import Decoder
from .base import Admission, Namespace
from .doc_pending import Admission as PendingAdmission
from .doc_pending import DEFAULT_BOUND, PendingBound
from .doc_waiting import Pending

log = logging.getLogger(__name__)

TEXT_ROOT = "text"
_GENERATIONS = itertools.count(1)


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfacing from pycrdt (``pyo3_runtime.PanicException``, a
    BaseException that ``except Exception`` does not catch)."""
    t = type(exc)
    return t.__name__ == "PanicException" and t.__module__ == "pyo3_runtime"


class EnginePanic(ColonyError):
    """The Yjs engine panicked on a document this process holds (an encode of a document that
    an update poisoned past the sandbox's per-request check; docs/design.md, "The Yjs sandbox").
    The relay reloads the feed, vetting every stored update in full, which quarantines the culprit."""


class DocState:
    """The merged document of one feed, and what its updates left pending
    (:class:`collab.namespaces.doc_pending.Pending`)."""

    __slots__ = ("applied", "digest", "doc", "gen", "pending", "quarantined", "sv")

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()  # roots of any shared type (agents write Text, Map, ...)
        self.applied = 0
        self.sv = self.doc.get_state()  # the document's state vector, as of the last update
        self.pending = Pending()  # applied updates the Doc could not fully integrate yet
        self.gen = next(_GENERATIONS)  # with ``digest``: the tag the Yjs sandbox knows this state by
        self.digest = 0  # a running digest of the updates applied to this object (next_digest)
        self.quarantined: list[int] = []  # seqs of records left out of the fold (collab.sandbox)

    @property
    def tag(self) -> tuple[int, int]:
        """This object and exactly the updates applied to it, in order (the sandbox's document key)."""
        return self.gen, self.digest

    def apply_update(self, update: bytes, encode: bool = False) -> bytes | None:
        """Fold ``update``. ``encode`` (the Yjs sandbox's encode check, ``collab.sandbox``): also
        encode what it added, inside its transaction, before yrs squashes the new items into the
        blocks before them (after that, encoding them means slicing those blocks: O(their
        length), e.g. a writer's whole run of appended text); returned, or None when yrs needed
        the update applied again (the caller then encodes the diff since the state vector before)."""
        self.digest = next_digest(self.digest, update)
        before = self.sv
        added: bytes | None = None
        if encode:
            with self.doc.transaction():
                self.doc.apply_update(update)
                added = self.doc.get_update(before)
        else:
            self.doc.apply_update(update)
        sv = self.doc.get_state()
        if sv != before:
            # Only a moved state vector can integrate something pending (that is a function of
            # the state vector alone), and only entries whose awaited clock it passed are looked at.
            sv = self.pending.advanced(self.doc, sv)
        again = self.pending.add(update, sv)
        if again is not None:  # nothing missing, yet not integrated: yrs needs it again
            added = None
            self.doc.apply_update(again)
            now = self.doc.get_state()
            if now != sv:
                sv = self.pending.advanced(self.doc, now)
        self.sv = sv
        return added

    def state_update(self) -> bytes:
        """The whole document as one update (the snapshot); :class:`EnginePanic` if yrs panics."""
        return self.diff(None)

    def diff(self, state_vector: bytes | None) -> bytes:
        """What the document has beyond ``state_vector`` (None: everything), pending parts merged
        in; ValueError if the state vector does not decode, :class:`EnginePanic` if yrs panics."""
        try:
            update = self.doc.get_update() if state_vector is None else self.doc.get_update(state_vector)
            parts = self.pending.parts()
            return merge_updates(update, *parts) if parts else update
        except BaseException as exc:
            if not is_panic(exc):
                raise
            raise EnginePanic("the Yjs engine panicked encoding this document") from exc

    def text(self, root: str = TEXT_ROOT) -> str:
        from pycrdt import Text

        return str(self.doc.get(root, type=Text))


def next_digest(digest: int, update: bytes) -> int:
    """The running digest of a DocState after one more update (64 bits of BLAKE2b)."""
    h = blake2b(update, digest_size=8, key=digest.to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


def decode_update(body: Any) -> bytes:
    """Return the update bytes of a ``doc.update`` body, or raise InvalidEvent.

    The body may also carry ``cap``, the write capability the event was written under; the
    core's access check (``collab.access``) validates it before the namespace is asked."""
    if not isinstance(body, dict) or set(body) - {"cap"} != {"update"}:
        raise InvalidEvent("doc.update body must be {update: <base64 Yjs v1 update>, cap?: <capability>}")
    update = unb64(body["update"])
    if not update:
        raise InvalidEvent("empty Yjs update")
    if is_empty_update(update):
        raise InvalidEvent("empty Yjs update (no structs, no deletions)")
    return update


def is_empty_update(update: bytes) -> bool:
    """Whether the Yjs v1 ``update`` holds no struct and deletes nothing (docs/protocol.md 16.1):
    each of its struct groups declares 0 structs and each range of its delete set has length 0
    (``00 00``, the empty update, is the shortest). Bytes after the delete set are not looked at
    (the Yjs decoder ignores them). An update that does not decode that far is not empty: the
    engine check refuses it. Pure Python, O(len(update)): every loop step reads at least a byte."""
    r = Decoder(update)
    try:
        for _ in range(r.var_uint()):  # struct groups: structs, client, clock
            if r.var_uint():
                return False
            r.var_uint()
            r.var_uint()
        for _ in range(r.var_uint()):  # delete set: client, ranges of (clock, length)
            r.var_uint()
            for _ in range(r.var_uint()):
                r.var_uint()
                if r.var_uint():
                    return False
    except ValueError:
        return False
    return True


def check_decodes(update: bytes) -> None:
    """Raise InvalidEvent unless the engine decodes ``update``. This runs yrs on the bytes: the
    relay runs it only inside the Yjs sandbox (``collab.sandbox``), a client on what it makes."""
    try:
        merge_updates(update, update)
    except Exception as exc:  # pycrdt raises ValueError; be strict about anything else too
        raise InvalidEvent("update is not a decodable Yjs v1 update") from exc
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise InvalidEvent("update panics the Yjs engine") from exc


class DocNamespace(Namespace[DocState]):
    name = "doc"
    kinds = frozenset(("doc.update",))
    immutable_state = False  # a pycrdt Doc; updates validate on their own (they only need to decode)

    def __init__(self, pending: PendingBound | None = DEFAULT_BOUND, *, engine_checks: bool = True) -> None:
        self.bound = pending  # None: pending updates are not bounded (a replayer trusts the log)
        # engine_checks: ``validate`` runs the decode check in-process (a client, a replayer).
        # The relay passes False: its Yjs sandbox (collab.sandbox) runs that check, and every
        # other yrs operation on the update, in a child process before anything folds it here.
        self.engine_checks = engine_checks

    def initial(self, feed: str) -> DocState:
        return DocState()

    def validate(self, state: DocState, event: Event, adm: Admission) -> None:
        if event.kind != "doc.update":
            raise InvalidEvent("doc feeds accept kind doc.update only")
        update = decode_update(event.body)
        if self.engine_checks:
            check_decodes(update)
        if self.bound is not None:  # Python only (a scan of the update): no engine call on it here
            PendingAdmission.of(adm.scratch).check(update, state.sv, state.pending, self.bound)

    def apply(self, state: DocState, record: Record) -> DocState:
        ev = record.event
        if ev.kind == "doc.update":
            try:
                state.apply_update(unb64(ev.body["update"]))
            except Exception:  # validated before sequencing; keep folding deterministically
                log.warning("doc update at %s#%d did not apply", ev.feed, record.seq, exc_info=True)
            except BaseException as exc:  # a Rust panic: the record is left out; go on folding
                if not is_panic(exc):
                    raise
                state.quarantined.append(record.seq)
                log.warning("doc update at %s#%d panics the Yjs engine; left out", ev.feed, record.seq,
                            exc_info=True)
        state.applied = record.seq
        return state

    def dump(self, state: DocState) -> bytes:
        return state.state_update()

    def load(self, feed: str, data: bytes) -> DocState:
        st = DocState()
        st.apply_update(data)
        return st

    def view(self, state: DocState) -> Any:
        if state.quarantined:  # readers are told which records the fold left out
            return {"text": state.text(), "quarantined": list(state.quarantined)}
        return {"text": state.text()}


def quarantined_seqs(meta: str | None) -> list[int]:
    """The seqs of quarantined records a snapshot's meta lists (docs/reliability.md)."""
    try:
        got = json.loads(meta or "{}").get("quarantined", [])
    except (ValueError, AttributeError):
        return []
    return [int(x) for x in got if isinstance(x, int)]

