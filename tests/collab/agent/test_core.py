"""collab/agent/core.py: the Agent's connections: the HTTP base of a relay URL, and a relay that does not answer
raising Unreachable with its URL."""
from __future__ import annotations

import socket

import pytest

from collab.agent import Agent, http_base
from collab.errors import InvalidEvent, Unreachable
from collab.keys import Keypair


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nobody listens there


def test_http_base_of_every_url_form() -> None:
    assert http_base("ws://h:1/ws") == "http://h:1"
    assert http_base("wss://h/pre/ws") == "https://h/pre"
    assert http_base("http://h:1/") == "http://h:1"
    with pytest.raises(InvalidEvent):
        http_base("ftp://h")


async def test_unreachable_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(Unreachable) as err:
        async with Agent(url, Keypair.generate()):
            pass
    assert err.value.url == url and url in str(err.value) and err.value.code == "unreachable"
