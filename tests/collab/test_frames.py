"""collab/frames.py: parsing untrusted frame text and building replies."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab import frames
from collab.errors import MalformedFrame


def test_encode_is_compact_utf8_json() -> None:
    text = frames.encode({"t": "ok", "feed": "doc/é", "seq": 3})
    assert text == '{"t":"ok","feed":"doc/é","seq":3}'


def test_a_message_splits_into_frames_on_newlines() -> None:
    assert frames.split('{"t":"ping"}') == ['{"t":"ping"}']
    assert frames.split('{"t":"ping"}\n \n{"t":"ping","rid":1}\n') == ['{"t":"ping"}', '{"t":"ping","rid":1}']
    assert frames.split(b'{"t":"ping"}\r\n\t') == ['{"t":"ping"}\r']
    with pytest.raises(MalformedFrame):
        frames.split(b"\xff\xfe")


def test_parse_accepts_client_frames_and_says_what_is_wrong() -> None:
    assert frames.parse('{"t":"sub","feed":"doc/a","since":0,"rid":"r1"}')["feed"] == "doc/a"
    for text, needle in (("{", "not valid JSON"), ("[1]", "JSON object"), ('{"t":"rec"}', "unknown frame type"),
                         ('{"x":1}', "unknown frame type"), ('{"t":"ping","t":"pub"}', "not valid JSON"),
                         ('{"t":"ping","rid":1.5}', "not valid JSON")):
        with pytest.raises(MalformedFrame, match=needle):
            frames.parse(text)
    assert frames.parse('{"t":"rec"}', frames.RELAY_FRAMES)["t"] == "rec"
    assert frames.parse('{"t":"future"}', None)["t"] == "future"


@pytest.mark.parametrize(("rid", "ok"), [
    ("x" * 64, True), ("x" * 65, False), (2**53 - 1, True), (-(2**53 - 1), True), (True, False), ([1], False),
    ("\ud800", False),
])
def test_rid_rules(rid: object, ok: bool) -> None:
    text = json.dumps({"t": "ping", "rid": rid})
    if ok:
        assert frames.parse(text)["rid"] == rid
    else:
        with pytest.raises(MalformedFrame):
            frames.parse(text)


def test_error_frames_drop_what_cannot_be_sent() -> None:
    assert frames.error("invalid", "bad", rid=None, feed="doc/a") == {
        "t": "error", "code": "invalid", "message": "bad", "feed": "doc/a"}
    assert "id" not in frames.error("invalid", "bad", id="\udc00")
    assert frames.with_rid({"t": "pong"}, 7) == {"t": "pong", "rid": 7}
    assert frames.with_rid({"t": "pong"}, None) == {"t": "pong"}


FRAME = st.fixed_dictionaries({"t": st.sampled_from(sorted(frames.CLIENT_FRAMES))},
                              optional={"rid": st.one_of(st.text(max_size=64), st.integers(-(2**53 - 1), 2**53 - 1)),
                                        "feed": st.text(max_size=20)})


@given(st.lists(FRAME, min_size=1, max_size=5))
def test_any_batch_of_frames_survives_encode_join_split_parse(batch: list[dict[str, object]]) -> None:
    message = "\n".join(frames.encode(f) for f in batch)
    assert [frames.parse(t) for t in frames.split(message)] == batch
