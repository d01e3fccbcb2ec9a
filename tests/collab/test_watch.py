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


async def test_the_client_registry_matches_replies_and_resends() -> None:
    from collab.errors import RelayError
    from collab.protocol import ErrorReply
    from collab.watch import Watches

    sent: list[dict[str, object]] = []
    w = Watches(ClientProtocol())
    heard: list[str] = []
    a = w.add("auction/", lambda ev: heard.append("a:" + ev.feed), lambda f: sent.append(json.loads(f)))
    b = w.add("", lambda ev: heard.append("all:" + ev.feed), None)  # not connected: sent on connect
    assert [f["prefix"] for f in sent] == ["auction/"]
    w.on_reply(Watching("auction/", sent[0]["rid"]))
    assert a.done() and not b.done()
    w.connected(lambda f: sent.append(json.loads(f)))  # a new connection: both again
    assert [f["prefix"] for f in sent[1:]] == ["auction/", ""]
    assert w.on_error(ErrorReply("limit_exceeded", "too many", sent[2]["rid"]))
    with pytest.raises(RelayError):
        await b
    assert list(w.handlers) == ["auction/"]  # the refused one is forgotten
    w.on_announce(Announce("auction/x", 1, HEAD, "auction.open", 1))
    w.on_announce(Announce("doc/x", 1, HEAD, "doc.update", 1))
    assert heard == ["a:auction/x"]
    assert not w.on_error(ErrorReply("invalid", "", "other-rid"))
    assert w.remove("auction/", None) is None and not w.handlers
