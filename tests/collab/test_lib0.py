"""collab.lib0: the one varint codec (lib0's unsigned LEB128, var_bytes, var_string)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab.lib0 import (
    MAX_VAR_UINT,
    Decoder,
    read_state_vector,
    var_bytes,
    var_string,
    var_uint,
)


@pytest.mark.parametrize(("n", "enc"), [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2**14, b"\x80\x80\x01"), (2**53 - 1, b"\xff\xff\xff\xff\xff\xff\xff\x0f"),
])
def test_var_uint_known_encodings(n: int, enc: bytes) -> None:
    assert var_uint(n) == enc
    r = Decoder(enc)
    assert r.var_uint() == n and r.at_end()


@pytest.mark.parametrize("n", [-1, 2**53, 2**64])
def test_var_uint_out_of_range_refused(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        var_uint(n)


@pytest.mark.parametrize(("data", "why"), [
    (b"", "truncated"), (b"\x80", "truncated"), (b"\xff\xff", "truncated"),
    (b"\xff" * 8 + b"\x01", "longer than 53 bits"),          # a 9th byte
    (b"\xff" * 7 + b"\x7f", "larger than 2\\*\\*53 - 1"),    # 8 bytes, 56 bits set
    (b"\x80\x80\x80\x80\x80\x80\x80\x10", "larger than"),     # exactly 2**53
])
def test_var_uint_strict_decoding(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Decoder(data).var_uint()


def test_var_uint_overlong_zero_within_8_bytes_is_accepted() -> None:
    # lib0 does not insist on the shortest form; neither do we (within 8 bytes)
    assert Decoder(b"\x80\x00").var_uint() == 0


def test_var_bytes_and_strings() -> None:
    buf = var_bytes(b"\x00\x01") + var_string("héllo") + var_string("")
    r = Decoder(buf)
    assert r.var_bytes() == b"\x00\x01"
    assert r.var_string() == "héllo"
    assert r.var_string() == ""
    r.expect_end("the test")


def test_decoding_errors() -> None:
    with pytest.raises(ValueError, match="3 bytes announced, 1 left"):
        Decoder(b"\x03a").var_bytes()
    with pytest.raises(ValueError, match="not UTF-8"):
        Decoder(b"\x01\xff").var_string()
    r = Decoder(b"\x00\x00")
    r.var_uint()
    with pytest.raises(ValueError, match="1 trailing bytes after x"):
        r.expect_end("x")


def test_decoder_error_class_is_chosen_by_subclass() -> None:
    class Mine(ValueError):
        pass

    class MyDecoder(Decoder):
        __slots__ = ()
        error = Mine

    with pytest.raises(Mine):
        MyDecoder(b"\x80").var_uint()
    with pytest.raises(Mine):
        read_state_vector(b"\x01\x01", MyDecoder)


def test_state_vector_of_pycrdt() -> None:
    d = Doc()
    d.get("text", type=Text).insert(0, "abc")
    assert read_state_vector(d.get_state()) == {d.client_id: 3}
    with pytest.raises(ValueError, match="trailing"):
        read_state_vector(d.get_state() + b"\x00")


@given(st.integers(0, MAX_VAR_UINT))
def test_var_uint_round_trip(n: int) -> None:
    enc = var_uint(n)
    assert 1 <= len(enc) <= 8
    r = Decoder(enc)
    assert r.var_uint() == n and r.at_end()


@given(st.lists(st.one_of(st.integers(0, MAX_VAR_UINT), st.binary(max_size=300), st.text(max_size=100))))
def test_mixed_sequence_round_trip(items: list[int | bytes | str]) -> None:
    buf = b"".join(var_uint(x) if isinstance(x, int) else var_bytes(x) if isinstance(x, bytes) else var_string(x)
                   for x in items)
    r = Decoder(buf)
    for x in items:
        got = r.var_uint() if isinstance(x, int) else r.var_bytes() if isinstance(x, bytes) else r.var_string()
        assert got == x
    assert r.at_end()


@given(st.binary(max_size=12))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    r = Decoder(data)
    try:
        n = r.var_uint()
    except ValueError:
        return
    assert 0 <= n <= MAX_VAR_UINT and r.pos <= 8


def _state_vector_by_decoder(sv: bytes) -> dict[int, int]:
    """The reference reading: method calls on a Decoder (read_state_vector is a tight loop)."""
    r = Decoder(sv)
    out: dict[int, int] = {}
    for _ in range(r.var_uint()):
        client = r.var_uint()
        out[client] = r.var_uint()
    r.expect_end("a state vector")
    return out


@given(st.one_of(
    st.binary(max_size=40),
    st.dictionaries(st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1), max_size=6).map(
        lambda d: var_uint(len(d)) + b"".join(var_uint(k) + var_uint(v) for k, v in d.items())),
))
def test_state_vector_fast_path_agrees_with_the_decoder(sv: bytes) -> None:
    """Same value, or the same refusal (a ValueError), on any bytes."""
    try:
        want: dict[int, int] | str = _state_vector_by_decoder(sv)
    except ValueError as exc:
        want = type(exc).__name__
    try:
        got: dict[int, int] | str = read_state_vector(sv)
    except ValueError as exc:
        got = type(exc).__name__
    assert got == want
