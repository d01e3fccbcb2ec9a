"""Canonical JSON: the exact bytes that get signed and hashed.

The value domain is JSON without floats: null, true/false, integers in the interoperable
range -(2**53-1) .. 2**53-1, strings of valid Unicode, arrays and objects with string
keys. Encoding: UTF-8, no insignificant whitespace, object members sorted by the UTF-16
code units of their keys (RFC 8785 order), strings escaped as RFC 8785 says (only ``"``,
``\\``, and control characters below U+0020; ``\\b \\f \\n \\r \\t`` short forms, others as
``\\u00xx`` lowercase). Floats are refused because their text form is where canonical
encodings diverge between languages.
"""
from __future__ import annotations

import json
from typing import Any

# defined in collab.errors (the one hierarchy); callers may import it from here too
from .errors import CanonicalError as CanonicalError

MAX_SAFE_INT = 2**53 - 1
MAX_DEPTH = 32

# the C string encoder JSONEncoder(ensure_ascii=False) uses for a str, without its Python wrapper:
# escapes exactly ``"``, ``\\`` and the characters below U+0020 (RFC 8785's rule)
_encode_str = json.encoder.encode_basestring


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _check_str(s: str) -> None:
    if s.isascii():
        return
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogate
        raise CanonicalError("string is not valid Unicode") from exc


def _enc(value: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalError("nesting too deep")
    cls = type(value)
    if cls is str:  # the common cases first, by exact type
        if not value.isascii():
            _check_str(value)
        out.append(_encode_str(value))
    elif cls is dict:
        _enc_dict(value, out, depth)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise CanonicalError("integer out of the safe range")
        out.append(str(int(value)))
    elif isinstance(value, str):
        _check_str(value)
        out.append(_encode_str(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _enc(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        _enc_dict(value, out, depth)
    elif isinstance(value, float):
        raise CanonicalError("floats are not allowed; use integers or strings")
    else:
        raise CanonicalError(f"type {type(value).__name__} is not JSON")


def _enc_dict(value: dict[Any, Any], out: list[str], depth: int) -> None:
    out.append("{")
    keys = list(value)
    for k in keys:
        if not isinstance(k, str):
            raise CanonicalError("object keys must be strings")
    if all(k.isascii() for k in keys):
        keys.sort()
    else:
        for k in keys:
            _check_str(k)
        keys.sort(key=_utf16_key)
    for i, k in enumerate(keys):
        if i:
            out.append(",")
        out.append(_encode_str(k))
        out.append(":")
        _enc(value[k], out, depth + 1)
    out.append("}")


def canonical(value: Any, depth: int = 0) -> bytes:
    """Return the canonical UTF-8 encoding of ``value`` or raise :class:`CanonicalError`.
    ``depth``: how deep ``value`` sits in the document being encoded (a member of a top-level
    object written out by hand is at depth 1); the nesting bound counts from the top."""
    out: list[str] = []
    _enc(value, out, depth)
    return "".join(out).encode("utf-8")


def parse_json(data: str | bytes) -> Any:
    """Parse untrusted JSON, refusing floats, NaN/Infinity and duplicate keys."""

    def no_float(s: str) -> Any:
        raise CanonicalError("floats are not allowed")

    def no_const(s: str) -> Any:
        raise CanonicalError(f"{s} is not JSON")

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            raise CanonicalError("duplicate object key")
        return d

    return json.loads(data, parse_float=no_float, parse_constant=no_const, object_pairs_hook=no_dupes)
