"""Ed25519 identities: generate, save with mode 0600, load.

A key file holds the 32-byte seed as lowercase hex on one line (nothing else), so it is
easy to inspect and to read from any language. Public keys travel as 64 lowercase hex chars.
"""
from __future__ import annotations

import os
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey


class Keypair:
    """An Ed25519 signing key with its public half in the wire form (hex)."""

    __slots__ = ("_sk", "public", "public_hex")

    def __init__(self, signing_key: SigningKey) -> None:
        self._sk = signing_key
        self.public = bytes(signing_key.verify_key)
        self.public_hex = self.public.hex()

    @classmethod
    def generate(cls) -> Keypair:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature

    def box_private_key(self) -> PrivateKey:
        """The X25519 private key derived from this Ed25519 key (``crypto_sign_ed25519_sk_to_
        curve25519``), for NaCl boxes to this key's peers (direct messages)."""
        return self._sk.to_curve25519_private_key()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the seed to ``path`` readable by the owner only (0600), atomically."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (self.seed.hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keypair:
        text = Path(path).read_text().strip()
        try:
            seed = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not a Colony key file (expected 64 hex chars)") from exc
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Keypair:
        p = Path(path)
        if p.exists():
            return cls.load(p)
        kp = cls.generate()
        kp.save(p)
        return kp


# Strict Ed25519 (docs/protocol.md 5.3). libsodium's crypto_sign_verify_detached already refuses
# all of this (tests/vectors/ed25519.json); the checks are repeated here in a few integer
# comparisons so that the rule does not depend on how the installed libsodium was built.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
# The y coordinates of the 8 points of small order (the sign bit of x does not matter): the
# identity (1), order 2 (p - 1), order 4 (0), order 8 (two values); p and p + 1 are
# non-canonical encodings of 0 and 1.
_SMALL_ORDER_Y = frozenset((0, 1, _P - 1, _P, _P + 1,
                            0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
                            0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7))
_Y_MASK = (1 << 255) - 1


def strict_encodings(public: bytes, signature: bytes) -> bool:
    """The encoding rules of strict verification: ``S`` < L, the public key canonical (y < p) and
    neither the key nor ``R`` a point of small order. (That ``R`` is canonical follows from the
    verification equation, which compares ``R``'s bytes with a canonical encoding.)"""
    if len(public) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    y_key = int.from_bytes(public, "little") & _Y_MASK
    y_r = int.from_bytes(signature[:32], "little") & _Y_MASK
    return y_key < _P and y_key not in _SMALL_ORDER_Y and y_r not in _SMALL_ORDER_Y


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s Ed25519 signature of ``message`` under the strict
    rules of docs/protocol.md 5.3 (cofactorless equation, canonical ``S``, no small-order key or
    ``R``, canonical key)."""
    if not strict_encodings(public, signature):
        return False
    try:
        VerifyKey(public).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False
