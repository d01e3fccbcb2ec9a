"""The fuzz targets: one function per parser, bytes in, an AssertionError when a property breaks.

Each target takes arbitrary bytes (what a peer could send) and states its properties:

* never an exception outside the documented error hierarchy (``collab/errors.py``): the refusals
  a target lets through are listed in its ``REFUSALS`` entry, anything else escapes and is a bug;
* round trips where the format has one;
* never a crash and bounded time: the runners (hypothesis in tests/fuzz/test_targets.py, atheris in
  ``scripts/fuzz``) time each input.

The same functions serve the short seeded run in the suite and the long run (``scripts/fuzz``).
``yjs_sandbox`` checks updates through a :class:`YjsChecker` ("check these updates in order, one
verdict each"); the default one is pycrdt in a child process (tests/fuzz/pycrdt_runner.py).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from collab import canonical as canon
from collab import frames, lib0
from collab.capability import Capability
from collab.errors import ColonyError
from relay.core.limits import YjsLimits
from collab.namespaces.doc_pending import scan
from relay.endpoints import yjs_protocol as yp
from relay.endpoints.yjs_concat import concat


def frames_target(data: bytes) -> None:
    """A WebSocket message: split into frames, each parsed as a client frame and as any frame.
    Refusals: MalformedFrame (not UTF-8, not JSON, wrong shape). Round trip: a parsed frame
    encodes to text that parses back to the same frame."""
    try:
        texts = frames.split(data)
    except ColonyError:
        return
    for text in texts:
        for allowed in (frames.CLIENT_FRAMES, None):
            try:
                frame = frames.parse(text, allowed)
            except ColonyError:
                continue
            assert frames.parse(frames.encode(frame), allowed) == frame


def canonical_target(data: bytes) -> None:
    """Untrusted JSON: parsed with the canonical rules (a refusal is a CanonicalError, or a
    MalformedFrame as frames.parse reports it). Round trip: canonical(v) parses back to v, and
    is a fixed point (canonical(parse(canonical(v))) == canonical(v))."""
    try:
        value = _parse(data)
    except ColonyError:
        return
    try:
        enc = canon.canonical(value)
    except canon.CanonicalError:
        return
    back = canon.parse_json(enc)
    assert back == value
    assert canon.canonical(back) == enc


def _parse(data: bytes) -> object:
    """canonical.parse_json as its callers use it (frames.parse): any refusal is MalformedFrame."""
    try:
        return canon.parse_json(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, CanonicalError
        raise frames.MalformedFrame(str(exc)) from exc


def capability_target(data: bytes) -> None:
    """A capability token (text) and a capability object (JSON): decoded and verified, or
    refused with InvalidEvent / BadSignature. Round trip: an accepted one re-encodes to itself."""
    text = data.decode("utf-8", "replace")
    for attempt in (lambda: Capability.from_token(text), lambda: Capability.from_wire(_parse_or_none(data))):
        try:
            cap = attempt()
        except ColonyError:
            continue
        assert Capability.from_token(cap.token()) == cap


def _parse_or_none(data: bytes) -> object:
    try:
        return canon.parse_json(data)
    except (ValueError, RecursionError):
        return None


_PEER_LIMITS = YjsLimits()


def y_protocol_target(data: bytes) -> None:
    """One /yjs binary message through the connection's protocol state (YjsPeer.receive: never
    raises, a malformed message is a Close 4400 action), and the decoders on their own, with their
    round trips (a sync message re-encodes to the same bytes; an awareness update decodes the same
    after a re-encode; a state vector decodes the same whichever reader reads it).

    YjsPeer.receive checks updates with pycrdt in this process (merge_updates): this target only
    sends it messages whose updates do not crash pycrdt (``_engine_safe``)."""
    for writable in (True, False):
        if _engine_safe(data):
            peer = yp.YjsPeer(_PEER_LIMITS, 1 << 20, writable, 0.0)
            for action in peer.receive(data, 0.0):
                assert isinstance(action, yp.SyncRequest | yp.Write | yp.Denied | yp.AwarenessChange
                                  | yp.AwarenessQuery | yp.Dropped | yp.Close)
    try:
        msg = yp.parse_message(data)
    except yp.YProtocolError:
        msg = None
    if isinstance(msg, yp.SyncStep1):
        assert yp.sync_step1(msg.state_vector) == data or _overlong(data)
    elif isinstance(msg, yp.SyncStep2 | yp.SyncUpdate):
        enc = yp.sync_step2 if isinstance(msg, yp.SyncStep2) else yp.sync_update
        assert enc(msg.update) == data or _overlong(data)
    for decode in (yp.decode_awareness, yp.read_state_vector, yp.delete_set, yp.struct_groups):
        try:
            got = decode(data)
        except yp.YProtocolError:
            continue
        if decode is yp.decode_awareness:
            assert isinstance(got, list)
            assert yp.decode_awareness(yp.encode_awareness(got)) == got
            for e in got:
                with contextlib.suppress(yp.YProtocolError):
                    yp.parse_state(e.state)
    yp.is_empty_update(data)


def _overlong(data: bytes) -> bool:
    """A varuint may be spelled with extra 0x80 bytes (lib0 accepts them): no byte round trip."""
    return any(b & 0x80 for b in data[:4])


def _engine_safe(data: bytes) -> bool:
    """True unless ``data`` is a sync message whose update makes pycrdt's merge_updates crash:
    the process-killing inputs are the known ones of tests/data/yjs_crashes (deep Any nesting),
    screened out here by its shape; the PanicException ones are exactly what YjsPeer must survive."""
    return data.count(b"\x75\x01") < 1000 and data.count(b"\x76\x01") < 1000


def lib0_target(data: bytes) -> None:
    """lib0: a varuint, var-bytes, var-string read from any bytes; round trips of what was read;
    the fast state-vector reader agrees with the Decoder."""
    d = lib0.Decoder(data)
    try:
        n = d.var_uint()
        assert lib0.Decoder(lib0.var_uint(n)).var_uint() == n
        b = lib0.Decoder(data, d.pos).var_bytes()
        assert lib0.Decoder(lib0.var_bytes(b)).var_bytes() == b
    except ValueError:
        pass
    fast: dict[int, int] | str
    slow: dict[int, int] | str
    try:
        fast = lib0.read_state_vector(data)
    except ValueError as exc:
        fast = f"error {exc}"
    try:
        r = lib0.Decoder(data)
        slow = {}
        for _ in range(r.var_uint()):
            client = r.var_uint()
            slow[client] = r.var_uint()
        r.expect_end("a state vector")
    except ValueError as exc:
        slow = f"error {exc}"
    if isinstance(fast, dict) or isinstance(slow, dict):
        assert fast == slow


class YjsChecker(Protocol):
    """The Yjs sandbox as the harness sees it: check ``updates`` in order (each after the ones
    before it, on one document); one verdict per update checked (``ok``, ``bad``: refused with
    an error, ``panic``, ``crash``, ``timeout``); checking stops at the first that is not ``ok``."""

    def check(self, updates: list[bytes]) -> list[str]: ...


class SandboxChecker:
    """The YjsChecker the relay runs: ``collab.sandbox_supervisor.Sandbox`` (supervised child
    processes), driven from synchronous code on an event loop of its own. Each check is a probe
    on an empty document (the children keep nothing of it); the verdicts stop at the first
    update that is not ``ok``, as the harness expects."""

    def __init__(self, timeout: float = 5.0) -> None:
        from collab.sandbox_supervisor import Sandbox, SandboxSettings

        self.loop = asyncio.new_event_loop()
        self.sandbox = Sandbox(SandboxSettings(timeout=timeout, update_timeout=min(2.0, timeout)))

    def check(self, updates: list[bytes]) -> list[str]:
        from collab.sandbox import VERDICTS

        verdicts = self.loop.run_until_complete(
            self.sandbox.check("doc/fuzz", (0, 0), updates, lambda: b"", keep=False))
        out = []
        for v in verdicts:
            out.append(VERDICTS.get(v.code, "bad"))
            if not v.ok:
                break
        return out

    def close(self) -> None:
        self.loop.run_until_complete(self.sandbox.close())
        self.loop.close()


def split_updates(data: bytes) -> list[bytes]:
    """Fuzzer bytes as a list of updates: varuint count then var-bytes each; else one update."""
    with contextlib.suppress(ValueError):
        r = lib0.Decoder(data)
        n = r.var_uint()
        if 0 < n <= 8:
            out = [r.var_bytes() for _ in range(n)]
            r.expect_end("updates")
            return out
    return [data]


GOOD_UPDATE = bytes.fromhex("010196f0fef9decec20900040101740568656c6c6f00")  # Text "t" = "hello"


def make_sandbox_target(checker: YjsChecker) -> Callable[[bytes], None]:
    def yjs_sandbox_target(data: bytes) -> None:
        """Updates checked by the sandbox: the caller never sees an exception or a crash, gets one
        verdict per update up to the first failure, and the sandbox still answers afterwards."""
        updates = split_updates(data)
        verdicts = checker.check(updates)
        assert 1 <= len(verdicts) <= len(updates)
        assert set(verdicts) <= {"ok", "bad", "panic", "crash", "timeout"}
        assert all(v == "ok" for v in verdicts[:-1])
        assert len(verdicts) == len(updates) or verdicts[-1] != "ok"
        if verdicts[-1] in ("panic", "crash", "timeout"):
            assert checker.check([GOOD_UPDATE]) == ["ok"]
    return yjs_sandbox_target


def yjs_concat_target(data: bytes) -> None:
    """A /yjs writer's queued edits joined without the engine (relay.endpoints.yjs_concat): never
    raises; a join is one struct group from the first edit's clock to the last one's end, holding
    all their structs, as the doc admission reads it."""
    updates = split_updates(data)
    joined = concat(updates)
    if joined is None:
        return
    parts = [scan(u) for u in updates]  # each was read by concat: no ValueError here
    whole = scan(joined)
    groups = [g for p in parts for g in p.groups]
    assert not whole.cut and len(whole.groups) == (1 if groups else 0)
    if groups:
        g = whole.groups[0]
        assert (g.client, g.start, g.end) == (groups[0].client, groups[0].start, groups[-1].end)
    for client, end in whole.deletes.items():  # ranges of length 0 are dropped: the end may be lower
        assert 0 < end <= max(p.deletes.get(client, 0) for p in parts)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames_target,
    "canonical": canonical_target,
    "capability": capability_target,
    "y_protocol": y_protocol_target,
    "lib0": lib0_target,
    "yjs_concat": yjs_concat_target,
}
