"""``ed25519.json``: Ed25519 signatures a Colony verifier MUST refuse (docs/protocol.md 5.3).

Imported by ``generate.py``; like it, written from the spec alone (no ``collab``). It carries a
small pure-Python Ed25519 (RFC 8032 section 6 arithmetic) to build signatures that a *lenient*
verifier accepts: one that decodes points modulo p (a y >= p, or x = 0 with the sign bit set, is
taken as the point it reduces to), takes S modulo L and checks the cofactored equation
[8][S]B = [8]R + [8][k]A. Each case records ``lenient_accepts`` (always true for the refused
cases: they are exactly what a lenient verifier lets through) and ``expected`` (``refuse`` or
``accept``) under the strict rules of the spec.
"""
from __future__ import annotations

import hashlib
from typing import Any

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def _add(a: Point, b: Point) -> Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa, bb = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    cc, dd = 2 * t1 * t2 * D % P, 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % P, g * h % P, f * g % P, e * h % P


def mul(s: int, pt: Point) -> Point:
    q = IDENTITY
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def neg(pt: Point) -> Point:
    x, y, z, t = pt
    return (P - x) % P, y, z, (P - t) % P


def equal(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def decode_lenient(s: bytes) -> Point | None:
    """A point from 32 bytes, reducing y modulo p and allowing x = 0 with the sign bit set."""
    v = int.from_bytes(s, "little")
    y, sign = (v & ((1 << 255) - 1)) % P, v >> 255
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x & 1 != sign:
        x = (P - x) % P
    return x, y, 1, x * y % P


def encode(pt: Point) -> bytes:
    zi = pow(pt[2], P - 2, P)
    x, y = pt[0] * zi % P, pt[1] * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_BY = 4 * pow(5, P - 2, P) % P
B = decode_lenient(_BY.to_bytes(32, "little"))
assert B is not None


def challenge(r: bytes, a: bytes, msg: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + msg).digest(), "little") % L


def lenient_verify(a: bytes, msg: bytes, sig: bytes) -> bool:
    pa, pr = decode_lenient(a), decode_lenient(sig[:32])
    if pa is None or pr is None:
        return False
    s = int.from_bytes(sig[32:], "little") % L
    k = challenge(sig[:32], a, msg)
    return equal(mul(8, mul(s, B)), mul(8, _add(pr, mul(k, pa))))


def secret_scalar(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


# Small-order points (their canonical encodings): the identity, the point of order 2, and one of
# order 8 (libsodium's blocklist holds them all).
ID_ENC = (1).to_bytes(32, "little")
ORDER2_ENC = (P - 1).to_bytes(32, "little")
ORDER8_ENC = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
ID_NONCANONICAL_Y = (P + 1).to_bytes(32, "little")        # y = p + 1, which reduces to 1
ID_NEGATIVE_ZERO = ((1 << 255) | 1).to_bytes(32, "little")  # y = 1, x = 0 with the sign bit set

SigningBytes = Any  # (feed, kind, author, ts, ctx, body) -> bytes, from generate.py


def gen_ed25519(signing_bytes: SigningBytes, alice_seed: str, ts0: int) -> dict[str, Any]:
    a, prefix = secret_scalar(bytes.fromhex(alice_seed))
    alice = encode(mul(a, B))
    cases: list[dict[str, Any]] = []

    def message(author: bytes, ts: int) -> tuple[dict[str, Any], bytes]:
        ev = {"feed": "chat/lobby", "kind": "chat.msg", "author": author.hex(), "ts": ts, "ctx": 0,
              "body": {"text": "strict"}}
        return ev, signing_bytes(ev["feed"], ev["kind"], ev["author"], ev["ts"], ev["ctx"], ev["body"])

    def add(name: str, note: str, author: bytes, sign: Any, expected: str = "refuse",
            any_message: bool = False, want: Any = None) -> None:
        ts = ts0
        while True:  # the first ts whose challenge k suits the case (``want``), if it has a wish
            ev, msg = message(author, ts)
            sig = sign(msg, author)
            if want is None or want(challenge(sig[:32], author, msg)):
                break
            ts += 1
        lenient = lenient_verify(author, msg, sig)
        assert lenient, name  # every case, refused or not, passes the lenient verifier
        ev = dict(ev, sig=sig.hex(), id=hashlib.sha256(msg).hexdigest())
        cases.append({"name": name, "note": note, "public": author.hex(), "message_hex": msg.hex(),
                      "signature": sig.hex(), "expected": expected, "lenient_accepts": lenient,
                      "any_message": any_message, "event": ev})

    def honest(r_scalar: int) -> Any:
        """R = [r]B encoded canonically, S = r + k a (a signature by alice with nonce r)."""
        def sign(msg: bytes, author: bytes) -> bytes:
            r_enc = encode(mul(r_scalar, B))
            s = (r_scalar + challenge(r_enc, author, msg) * a) % L
            return r_enc + s.to_bytes(32, "little")
        return sign

    def fixed_r(r_enc: bytes, s_extra: int = 0) -> Any:
        """R given as bytes whose point is the identity; S = k a (+ s_extra)."""
        def sign(msg: bytes, author: bytes) -> bytes:
            return r_enc + ((challenge(r_enc, author, msg) * a) % L + s_extra).to_bytes(32, "little")
        return sign

    def rfc8032(extra_l: int) -> Any:
        def sign(msg: bytes, author: bytes) -> bytes:
            r = int.from_bytes(hashlib.sha512(prefix + msg).digest(), "little") % L
            r_enc = encode(mul(r, B))
            s = (r + challenge(r_enc, author, msg) * a) % L + extra_l * L
            return r_enc + s.to_bytes(32, "little")
        return sign

    def zero_sig(msg: bytes, author: bytes) -> bytes:
        return ID_ENC + bytes(32)

    add("valid", "an honest RFC 8032 signature by alice (RFC 8032 TEST 1 key): MUST be accepted", alice,
        rfc8032(0), expected="accept")
    add("key_identity", "public key = the identity point (small order); R = identity, S = 0 verifies for every "
        "message under a lenient verifier", ID_ENC, zero_sig, any_message=True)
    add("key_order_2", "public key of order 2 (y = p - 1); R = identity, S = 0", ORDER2_ENC, zero_sig,
        any_message=True)
    add("key_order_8", "public key of order 8; R = identity, S = 0", ORDER8_ENC, zero_sig, any_message=True)
    add("key_noncanonical_y", "public key with y = p + 1 >= p (a non-canonical encoding of the identity); "
        "R = identity, S = 0", ID_NONCANONICAL_Y, zero_sig, any_message=True)
    add("key_negative_zero", "public key with x = 0 and the sign bit set (a non-canonical encoding of the "
        "identity); R = identity, S = 0", ID_NEGATIVE_ZERO, zero_sig, any_message=True)
    mixed = encode(_add(mul(a, B), decode_lenient(ORDER8_ENC)))  # type: ignore[arg-type]
    add("key_mixed_order", "public key = alice's point + a point of order 8; R = [r]B, S = r + k a with k not "
        "a multiple of 8: holds only under the cofactored equation, fails the cofactorless one the spec "
        "requires", mixed, honest(12345), want=lambda k: k % 8 != 0)
    add("r_identity", "alice's key; R = the identity point (small order), S = k a: [S]B - [k]A encodes to R",
        alice, fixed_r(ID_ENC))
    add("r_order_8", "alice's key; R of order 8, S = k a (holds under the cofactored equation)", alice,
        fixed_r(ORDER8_ENC))
    add("r_noncanonical_y", "alice's key; R with y = p + 1 >= p (non-canonical identity), S = k a", alice,
        fixed_r(ID_NONCANONICAL_Y))
    add("r_negative_zero", "alice's key; R with x = 0 and the sign bit set (non-canonical identity), S = k a",
        alice, fixed_r(ID_NEGATIVE_ZERO))
    add("s_plus_l", "the valid signature with S + L in place of S (S >= L, not reduced)", alice, rfc8032(1))
    add("s_plus_15l", "the valid signature with S + 15 L (S >= L, the top bits of S set)", alice, rfc8032(15))
    return {
        "description": "Ed25519 verification is strict (docs/protocol.md 5.3). Each case: public key (hex), "
                       "message (the signing bytes of event), signature (hex) and expected: 'refuse' means "
                       "the verifier MUST refuse it (an event carrying it gets bad_signature; with "
                       "any_message, the signature verifies under a lenient verifier for every message, so a "
                       "hello with it must get bad_signature too), 'accept' means it MUST verify. "
                       "lenient_accepts: a verifier that reduces y mod p and S mod L and checks the "
                       "cofactored equation accepts it. event: the wire event (id = SHA-256 of message).",
        "generated_by": "tests/vectors/generate.py",
        "L": str(L),
        "cases": cases,
    }
