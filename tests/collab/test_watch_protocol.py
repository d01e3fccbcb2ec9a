"""The sans-I/O side of watching (docs/protocol.md 9.4): frames built and parsed, no relay."""
from __future__ import annotations

import json

import pytest

from collab.errors import InvalidEvent, MalformedFrame
from collab.protocol import Announce, ClientProtocol, Unwatched, Watching

HEAD = "ab" * 32


def test_watch_frames_and_replies() -> None:
    p = ClientProtocol()
    assert json.loads(p.watch("auction/", rid="w1")) == {"t": "watch", "prefix": "auction/", "rid": "w1"}
    assert json.loads(p.unwatch("")) == {"t": "unwatch", "prefix": ""}
    with pytest.raises(InvalidEvent):
        p.watch("Auction/")
    assert p.receive('{"t":"watching","prefix":"auction/","rid":"w1"}') == [Watching("auction/", "w1")]
    assert p.receive('{"t":"unwatched","prefix":"auction/"}') == [Unwatched("auction/", None)]


def test_announce_is_parsed_and_checked() -> None:
    frame = {"t": "announce", "feed": "auction/t-1", "seq": 1, "head": HEAD, "kind": "auction.open", "rtime": 5}
    assert p_receive(frame) == [Announce("auction/t-1", 1, HEAD, "auction.open", 5)]
    for bad in ({"feed": "Auction/x"}, {"seq": 0}, {"seq": True}, {"head": "xy"}, {"kind": "Bad"},
                {"rtime": -1}, {"feed": None}):
        with pytest.raises(MalformedFrame):
            p_receive({**frame, **bad})


def p_receive(frame: dict[str, object]) -> list[object]:
    return list(ClientProtocol().receive(json.dumps(frame)))
