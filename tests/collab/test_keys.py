"""collab/keys.py: Ed25519 identities, their key files (0600, one hex line) and verification."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from collab.keys import Keypair, verify


def test_sign_and_verify() -> None:
    k = Keypair.generate()
    sig = k.sign(b"message")
    assert len(sig) == 64 and len(k.public) == 32 and k.public_hex == k.public.hex()
    assert verify(k.public, b"message", sig)
    assert not verify(k.public, b"messagE", sig)
    assert not verify(Keypair.generate().public, b"message", sig)
    assert not verify(b"short", b"message", sig)  # a malformed key is a failed check, not a crash


def test_a_seed_determines_the_key() -> None:
    seed = bytes(range(32))
    a, b = Keypair.from_seed(seed), Keypair.from_seed(seed)
    assert a.public_hex == b.public_hex and a.seed == seed
    assert a.sign(b"x") == b.sign(b"x")  # Ed25519 is deterministic
    assert bytes(a.box_private_key()) == bytes(b.box_private_key())
    with pytest.raises(ValueError, match="an Ed25519 seed is 32 bytes"):
        Keypair.from_seed(b"too short")


def test_a_key_file_is_one_hex_line_readable_by_its_owner_only(tmp_path: Path) -> None:
    k = Keypair.generate()
    path = k.save(tmp_path / "sub" / "agent.key")
    assert path.read_text() == k.seed.hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob("*.tmp"))
    assert Keypair.load(path).public_hex == k.public_hex


def test_load_refuses_what_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("not hex\n")
    with pytest.raises(ValueError, match="not a Colony key file"):
        Keypair.load(tmp_path / "bad.key")
    (tmp_path / "short.key").write_text("abcd\n")
    with pytest.raises(ValueError, match="an Ed25519 seed is 32 bytes"):  # hex, but 2 bytes
        Keypair.load(tmp_path / "short.key")


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = Keypair.load_or_create(path)
    assert path.exists()
    assert Keypair.load_or_create(path).public_hex == first.public_hex
