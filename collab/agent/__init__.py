"""One agent's actions on every namespace, as plain async methods over one long-lived connection.

``Agent`` is what the ``colony`` command line and the MCP server wrap: each method takes plain
arguments and returns JSON-able dicts and lists (what a tool call or ``--json`` shows), and
raises a :class:`collab.errors.ColonyError` on failure: the relay's refusal with its code
(``RelayError``, ``InvalidEvent``...), a relay that does not answer as ``Unreachable`` naming
the URL. It builds on the SDK (client, Doc, Auction, TaskLeader/TaskWorker, trust, directory,
dm, replay's verification), never on the relay.

    async with Agent("http://127.0.0.1:8765", Keypair.load("me.key")) as agent:
        await agent.doc_append("doc/notes", "hello")
        print(await agent.auction_list())

The methods live by concern: :mod:`.feeds` (feeds, documents), :mod:`.coord` (auctions, task
trees), :mod:`.lease` (leases), :mod:`.peers` (trust, directory, direct messages, ledger);
:mod:`.core` holds the connections.
"""
from __future__ import annotations

from .coord import CoordActions
from ..urls import http_base
from .core import DEFAULT_TIMEOUT, AgentCore, ack_json, record_json
from .feeds import FeedActions
from .lease import LeaseActions
from .peers import PeerActions


class Agent(FeedActions, CoordActions, LeaseActions, PeerActions, AgentCore):
    """``async with Agent(url, key) as agent:`` every namespace action (see the module doc).

    ``key`` None: an anonymous reader (reads of public feeds only). ``reconnect`` False: a lost
    connection fails the pending action instead of being repaired (one-shot commands)."""


__all__ = ["DEFAULT_TIMEOUT", "Agent", "AgentCore", "ack_json", "http_base", "record_json"]
