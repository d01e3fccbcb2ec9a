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
"""
from __future__ import annotations

import itertools
import json
import logging
from hashlib import blake2b
from typing import Any

from pycrdt import Doc, get_update, merge_updates

from ..errors import InvalidEvent
from ..events import Event, Record, unb64
from ..lib0 import Decoder, read_state_vector
from .base import Admission, Namespace

log = logging.getLogger(__name__)

TEXT_ROOT = "text"
MAX_PENDING = 32
_GENERATIONS = itertools.count(1)


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfacing from pycrdt (``pyo3_runtime.PanicException``, a
    BaseException that ``except Exception`` does not catch)."""
    t = type(exc)
    return t.__name__ == "PanicException" and t.__module__ == "pyo3_runtime"


class DocState:
    """The merged document of one feed."""

    __slots__ = ("applied", "digest", "doc", "gen", "pending", "quarantined")

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()  # roots of any shared type (agents write Text, Map, ...)
        self.applied = 0
        self.pending: list[bytes] = []  # applied updates the Doc could not fully integrate yet
        self.gen = next(_GENERATIONS)  # with ``digest``: the tag the Yjs sandbox knows this state by
        self.digest = 0  # a running digest of the updates applied to this object (next_digest)
        self.quarantined: list[int] = []  # seqs of records left out of the fold (collab.sandbox)

    @property
    def tag(self) -> tuple[int, int]:
        """This object and exactly the updates applied to it, in order (the sandbox's document key)."""
        return self.gen, self.digest

    def apply_update(self, update: bytes) -> None:
        self.digest = next_digest(self.digest, update)
        before = self.doc.get_state()
        self.doc.apply_update(update)
        sv = self.doc.get_state()
        if sv == before:
            # Nothing integrated, so nothing pending can have become integrated either (that
            # is a function of the state vector alone): only the new update needs checking.
            # This keeps a stream of updates with missing dependencies from re-diffing the
            # whole pending list on every record.
            if not _integrated(update, sv):
                self.pending.append(update)
        else:
            self.pending.append(update)
            self.pending = [u for u in self.pending if not _integrated(u, sv)]
        if len(self.pending) > MAX_PENDING:  # updates that never integrate (dangling): keep one blob
            self.pending = [merge_updates(*self.pending)]

    def state_update(self) -> bytes:
        full = self.doc.get_update()  # integrated content only
        return merge_updates(full, *self.pending) if self.pending else full

    def text(self, root: str = TEXT_ROOT) -> str:
        from pycrdt import Text

        return str(self.doc.get(root, type=Text))


def next_digest(digest: int, update: bytes) -> int:
    """The running digest of a DocState after one more update (64 bits of BLAKE2b)."""
    h = blake2b(update, digest_size=8, key=digest.to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


def _delete_ends(update: bytes) -> dict[int, int]:
    """client -> end clock of the last deleted range, for an update that holds no structs."""
    r = Decoder(update)
    if r.var_uint():
        raise ValueError("update still holds structs")
    out = {}
    for _ in range(r.var_uint()):
        client = r.var_uint()
        end = 0
        for _ in range(r.var_uint()):
            clock = r.var_uint()
            end = max(end, clock + r.var_uint())
        out[client] = end
    return out


def _integrated(update: bytes, sv: bytes) -> bool:
    """Whether a Doc whose state vector is ``sv`` holds every struct and deletion of ``update``.

    Yjs integrates a struct only once everything before it is there (else it stays pending,
    outside the state vector), and applies a deletion once the deleted ids are below the state
    vector (retrying pending deletions on every later update). The diff of ``update`` against
    ``sv`` keeps the structs beyond ``sv`` and every deletion.
    """
    try:
        rest = get_update(update, sv)
        if Decoder(rest).var_uint():  # struct groups
            return False
        have = read_state_vector(sv)
        return all(have.get(c, 0) >= end for c, end in _delete_ends(rest).items())
    except Exception:  # cannot tell: keep it (merging an integrated update again changes nothing)
        log.debug("cannot tell whether an update is integrated; keeping it", exc_info=True)
        return False


def decode_update(body: Any) -> bytes:
    """Return the update bytes of a ``doc.update`` body, or raise InvalidEvent.

    The body may also carry ``cap``, the write capability the event was written under; the
    core's access check (``collab.access``) validates it before the namespace is asked."""
    if not isinstance(body, dict) or set(body) - {"cap"} != {"update"}:
        raise InvalidEvent("doc.update body must be {update: <base64 Yjs v1 update>, cap?: <capability>}")
    update = unb64(body["update"])
    if not update:
        raise InvalidEvent("empty Yjs update")
    return update


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

    def __init__(self, *, engine_checks: bool = True) -> None:
        # engine_checks: ``validate`` runs the decode check in-process (a client, a replayer).
        # The relay passes False: its Yjs sandbox (collab.sandbox) runs that check, and every
        # other yrs operation on the update, in a child process before anything folds it here.
        self.engine_checks = engine_checks

    def initial(self, feed: str) -> DocState:
        return DocState()

    def validate(self, state: DocState, event: Event, adm: Admission) -> None:
        if event.kind != "doc.update":
            raise InvalidEvent("doc feeds accept kind doc.update only")
        check_decodes(decode_update(event.body)) if self.engine_checks else decode_update(event.body)

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

