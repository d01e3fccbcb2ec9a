"""collab/urls.py: a relay's WebSocket URL and HTTP base from either form."""
from __future__ import annotations

import pytest

from collab.errors import InvalidEvent
from collab.urls import http_base, ws_url


@pytest.mark.parametrize(("given", "ws", "http"), [
    ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/ws", "http://127.0.0.1:8765"),
    ("https://relay.example/colony/", "wss://relay.example/colony/ws", "https://relay.example/colony"),
    ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765/ws", "http://127.0.0.1:8765"),
    ("wss://relay.example/colony/ws", "wss://relay.example/colony/ws", "https://relay.example/colony"),
])
def test_either_form_gives_both_urls(given: str, ws: str, http: str) -> None:
    assert ws_url(given) == ws
    assert http_base(given) == http
    assert http_base(ws_url(given)) == http  # round trip


@pytest.mark.parametrize("bad", ["ftp://relay.example", "relay.example:8765", "", "http://"])
def test_other_schemes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEvent, match="http"):
        http_base(bad)
    if bad != "http://":
        with pytest.raises(InvalidEvent, match="http"):
            ws_url(bad)
