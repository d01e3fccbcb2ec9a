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


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    try:
        VerifyKey(public).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False
