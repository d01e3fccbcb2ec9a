"""The Yjs sandbox's sans-I/O core: the messages between a supervisor and its child process,
and the :class:`Checker` the child runs on them.

The Yjs engine (pycrdt / yrs) can segfault, panic (``pyo3_runtime.PanicException``, a
``BaseException``) or spin on crafted updates. Untrusted updates are therefore first applied in a
child process (``collab.sandbox_child``, supervised by ``collab.sandbox_supervisor.Sandbox``) that
holds a copy of each feed's document and replays exactly what the relay will run in-process on an
update that passes: the decode check (``merge_updates(u, u)``), ``DocState.apply_update`` (apply,
``get_state``, the pending/integration diff), and at the end of a request an encode check
(:func:`encode_check`) and the merge of the passed updates (what the ``/yjs`` room sends).

The encode check encodes what each update added inside its own transaction, before yrs squashes
the new items into older blocks (after that, encoding them slices the block they joined: for a
writer appending text, its whole run): O(update). A request where something is or stays pending
falls back to the diff since its start, pending parts merged in; one with ``full`` set encodes
the whole document (the snapshot merge, ``DocState.state_update``: O(document)). The relay sets
``full`` on the batch before each snapshot and when it loads a feed; every input of the crash
corpus is caught by the cheap check. An update that would pass it and still poison the whole
document's encode makes the relay's next full encode raise ``EnginePanic`` in-process, and the
relay reloads the feed with full checks, which quarantines it (docs/design.md).

One request, one reply (docs/design.md, "The Yjs sandbox"):

* request: ``feed``, ``tag`` (the document the child must hold: the relay's ``DocState.tag``, a
  process-unique generation and a running digest of the updates folded into it),
  optionally ``state`` (the document as one update, then ``prelude``: updates that passed already,
  applied unchecked), ``updates`` to check in order, and the flags ``keep`` (False: a probe, the
  child forgets the document) and ``full`` (encode the whole document at the end);
* reply: ``miss`` (the child does not hold ``feed`` at ``tag``: send the state), ``split`` (the
  end-of-request merges failed: which update is to blame is not known; the supervisor checks
  them one at a time, a request of one update gets its verdict) or one verdict per
  update checked (``OK``, ``BAD``: refused by the engine with an error; ``PANIC``: the engine
  panicked). The child stops at the first update that fails and forgets the document (a failed
  apply may leave it half-changed), so a reply may hold fewer verdicts than updates; the supervisor
  sends the rest again with the state. After a reply the child holds the document at tag
  the tag the relay's state will have once it folds the prelude and the passed updates (the
  digest of each applied update is rolled in, ``collab.namespaces.doc.next_digest``).

Frames are a 4-byte big-endian length and a payload of lib0 varints / var-bytes (``collab.childpipe``).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from pycrdt import merge_updates

from .childpipe import FrameBuffer, frame
from .lib0 import Decoder, var_bytes, var_string, var_uint
from .namespaces.doc import DocState, EnginePanic, is_panic

log = logging.getLogger(__name__)

OK, BAD, PANIC, CRASH, TIMEOUT = 0, 1, 2, 3, 4
VERDICTS = {OK: "ok", BAD: "bad", PANIC: "panic", CRASH: "crash", TIMEOUT: "timeout"}
MAX_DOCS = 64
READY = b"ready"  # the child's first frame, once it has imported the engine


@dataclass(slots=True)
class Request:
    feed: str
    tag: tuple[int, int]
    updates: list[bytes]
    state: bytes | None = None
    prelude: list[bytes] = field(default_factory=list)
    keep: bool = True  # False: a probe; the child forgets the document afterwards
    full: bool = False  # also encode the whole document at the end (the snapshot merge): O(document)

    def encode(self) -> bytes:
        parts = [var_string(self.feed), var_uint(self.tag[0]), self.tag[1].to_bytes(8, "big")]
        if self.state is None:
            parts.append(b"\x00")
        else:
            parts += [b"\x01", var_bytes(self.state), var_uint(len(self.prelude))]
            parts += [var_bytes(u) for u in self.prelude]
        parts.append(var_uint(len(self.updates)))
        parts += [var_bytes(u) for u in self.updates]
        parts.append(bytes([(1 if self.keep else 0) | (2 if self.full else 0)]))
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Request:
        r = Decoder(payload)
        feed, gen = r.var_string(), r.var_uint()
        if r.pos + 8 > len(payload):
            raise ValueError("truncated sandbox request")
        tag = (gen, int.from_bytes(payload[r.pos:r.pos + 8], "big"))
        r.pos += 8
        state: bytes | None = None
        prelude: list[bytes] = []
        if r.var_uint():
            state = r.var_bytes()
            prelude = [r.var_bytes() for _ in range(r.var_uint())]
        updates = [r.var_bytes() for _ in range(r.var_uint())]
        flags = r.var_uint()
        r.expect_end("sandbox request")
        return cls(feed, tag, updates, state, prelude, bool(flags & 1), bool(flags & 2))


@dataclass(slots=True)
class Reply:
    miss: bool = False
    verdicts: list[int] = field(default_factory=list)
    reason: str = ""  # why the last verdict failed (engine message), if it did
    split: bool = False  # the end-of-request merges failed: check these updates one at a time

    def encode(self) -> bytes:
        if self.miss or self.split:
            return b"\x01" if self.miss else b"\x02"
        return b"\x00" + var_uint(len(self.verdicts)) + bytes(self.verdicts) + var_string(self.reason[:500])

    @classmethod
    def decode(cls, payload: bytes) -> Reply:
        if len(payload) > 2 and payload[0] == 0 and payload[1] == len(payload) - 3 and payload[-1] == 0:
            return cls(False, list(payload[2:-1]))  # the common reply: < 128 verdicts, no reason
        r = Decoder(payload)
        kind = r.var_uint()
        if kind:
            return cls(miss=kind == 1, split=kind == 2)
        n = r.var_uint()
        verdicts = list(payload[r.pos:r.pos + n])
        r.pos += n
        reason = r.var_string()
        r.expect_end("sandbox reply")
        return cls(False, verdicts, reason)


def check_update(state: DocState, update: bytes, encode: bool = False) -> bytes | None:
    """What the relay runs in-process on an update it accepts: the decode check, then the fold.
    ``encode``: also what the update added, encoded before yrs squashes it into older blocks
    (``DocState.apply_update``); None when that is not the whole of it (something was or stays
    pending: the caller encodes the diff since the request's start instead)."""
    merge_updates(update, update)  # DocNamespace's decode check (check_decodes), unwrapped
    if not encode:
        state.apply_update(update)
        return None
    calm = not state.pending.entries
    added = state.apply_update(update, encode=True)
    return added if calm and not state.pending.entries else None


def encode_check(state: DocState, since: bytes | None) -> None:
    """Encode what the relay may encode in-process: the whole document (``since`` None: the
    snapshot merge, O(document)) or only what changed since the state vector ``since``, with the
    pending parts (the fallback of a request that left something pending: it slices the blocks
    the new items joined, O(their length)). docs/design.md, "The Yjs sandbox"."""
    if since is None:
        state.state_update()
        return
    diff = state.doc.get_update(since)
    parts = state.pending.parts()
    if parts:
        merge_updates(diff, *parts)


class Checker:
    """The child's side: an LRU of documents (feed -> (tag, DocState)) and the checks."""

    def __init__(self, max_docs: int = MAX_DOCS) -> None:
        self.max_docs = max_docs
        self.docs: OrderedDict[str, tuple[tuple[int, int], DocState]] = OrderedDict()

    def handle(self, req: Request) -> Reply:
        if req.state is not None:
            st = DocState()
            if req.state:
                st.apply_update(req.state)
            st.gen, st.digest = req.tag  # the relay's object and digest; the prelude rolls on from here
            for u in req.prelude:
                st.apply_update(u)
        else:
            held = self.docs.get(req.feed)
            if held is None or held[0] != req.tag:
                return Reply(miss=True)
            st = held[1]
        if req.keep:
            self.docs.pop(req.feed, None)  # put back only if every check left it sound
        sv0 = st.sv  # what the encode check starts from (cheap mode): DocState keeps the state vector
        out = Reply()
        passed: list[bytes] = []
        cheap = not req.full  # each update's additions encoded as it is applied (O(update))
        for u in req.updates:
            try:
                if cheap and check_update(st, u, encode=True) is None:
                    cheap = False  # pending parts: the diff since sv0 at the end, as before
                elif not cheap:
                    check_update(st, u)
            except Exception as exc:  # the engine refused it (a verdict); the doc may be half-changed
                log.debug("the engine refused an update of %s", req.feed, exc_info=True)
                out.verdicts.append(BAD)
                out.reason = f"{type(exc).__name__}: {exc}"
                return out
            except BaseException as exc:
                if not is_panic(exc):
                    raise
                out.verdicts.append(PANIC)
                out.reason = f"panic: {exc}"
                return out
            out.verdicts.append(OK)
            passed.append(u)
        try:
            if not cheap or not passed:
                encode_check(st, None if req.full else sv0)
            if len(passed) > 1:
                merge_updates(*passed)  # what the /yjs room sends its clients for these records
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise
            if len(req.updates) != 1:  # which one? the supervisor checks them one at a time
                return Reply(split=True)
            panic = is_panic(exc) or isinstance(exc, EnginePanic)
            out.verdicts[-1] = PANIC if panic else BAD
            out.reason = f"panic: {exc.__cause__ or exc}" if panic else f"{type(exc).__name__}: {exc}"
            return out
        if not req.keep:
            return out
        self.docs[req.feed] = (st.tag, st)
        while len(self.docs) > self.max_docs:
            self.docs.popitem(last=False)
        return out


__all__ = ["BAD", "CRASH", "MAX_DOCS", "OK", "PANIC", "READY", "TIMEOUT", "VERDICTS", "Checker", "FrameBuffer",
           "Reply", "Request", "check_update", "encode_check", "frame", "is_panic"]
