"""The signature verifier's child process: ``python -m relay.core.verifier_child``.

Reads request frames on stdin and answers each with one reply frame on stdout (a frame: a
4-byte big-endian length, then the payload), after a first frame ``ready``. A request's first
byte says what it is:

* ``V``: a batch of signatures to check, each ``public key (32 bytes) | signature (64) |
  message length (4, big-endian) | message``; the reply holds one byte per signature, 1 when
  :func:`collab.keys.verify` accepts it (the strict rules of docs/protocol.md 5.3), else 0;
* ``K``: the relay's 32-byte seed follows (the parent's first request; it never travels on the
  command line); the reply is ``k``;
* ``S``: receipt bytes to sign with that key, each ``length (4) | bytes``; the reply is the
  64-byte signatures, concatenated in order.

The parent (``relay.core.verifier``) is the only peer, and anything this process fails on ends
it (the parent then does the batch itself).
"""
from __future__ import annotations

import sys

from collab import childpipe
from collab.childpipe import LEN
from collab.keys import Keypair, verify

READY = b"ready"


def check_batch(payload: bytes) -> bytes:
    """One byte per signature of the request ``payload``: 1 valid, 0 not."""
    out = bytearray()
    pos, end = 0, len(payload)
    while pos < end:
        public, sig = payload[pos:pos + 32], payload[pos + 32:pos + 96]
        (n,) = LEN.unpack_from(payload, pos + 96)
        msg = payload[pos + 100:pos + 100 + n]
        pos += 100 + n
        out.append(1 if verify(public, msg, sig) else 0)
    return bytes(out)


def sign_batch(key: Keypair, payload: bytes) -> bytes:
    """The signatures of the receipts in an ``S`` request's ``payload`` (after its first byte)."""
    out = []
    pos, end = 0, len(payload)
    while pos < end:
        (n,) = LEN.unpack_from(payload, pos)
        out.append(key.sign(payload[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return b"".join(out)


def handle(request: bytes, key: Keypair | None) -> tuple[bytes, Keypair | None]:
    """The reply to one request, and the key from then on."""
    op, body = request[:1], request[1:]
    if op == b"V":
        return check_batch(body), key
    if op == b"S" and key is not None:
        return sign_batch(key, body), key
    if op == b"K":
        return b"k", Keypair.from_seed(body)
    raise ValueError(f"unknown request {op!r}")


def serve(stdin: int, stdout: int) -> None:
    key: Keypair | None = None

    def answer(payload: bytes) -> bytes:
        nonlocal key
        reply, key = handle(payload, key)
        return reply

    childpipe.serve(stdin, stdout, answer, READY)


if __name__ == "__main__":
    serve(sys.stdin.fileno(), sys.stdout.fileno())
