"""Shared server frames (relay.core.wsframe): byte-identical to the websockets serializer; a
SharedText is joined and framed once."""
from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from relay.core.wsframe import SharedText, binary_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_binary_frame_matches_the_websockets_serializer(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert binary_frame(payload) == Frame(Opcode.BINARY, payload).serialize(mask=False)


def test_shared_text_joins_and_frames_once() -> None:
    shared = SharedText(["a", "b"])
    assert shared.text == "a\nb"
    framed = shared.framed
    assert framed == Frame(Opcode.TEXT, b"a\nb").serialize(mask=False)
    assert shared.framed is framed
