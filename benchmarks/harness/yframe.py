"""The framing of the y-protocol clients: plain y-websocket (``@y/websocket-server``,
pycrdt-websocket; a message is the y-protocol message itself) or Hocuspocus's.

Hocuspocus (``@hocuspocus/server``, the framing of ``HocuspocusProvider``) multiplexes documents
over one socket: every message starts with the document's name (a lib0 ``varString``: varUint
length + UTF-8), then a varUint message type (0 sync, 1 awareness, 2 auth, 4 sync reply, 8 sync
status, ...), then, for sync messages, the y-protocol sync message (step 1, step 2 or update)
exactly as y-websocket frames it. A connection first sends an auth message for the document
(``2, 0 = token, varString token``); the server answers ``2, 2 = authenticated`` and only then
handles the document's other messages (queued meanwhile). It acknowledges each update to its
sender with a sync-status message (8) and broadcasts it to every connection of the document,
the sender included (the benchmark's "ack", as with the other servers).

So a client here prepends :func:`address` to what it sends and looks at the bytes after it in
what it receives: ``msg[p] in (0, 4)`` is a sync message with ``msg[p + 1]`` its step (0 step 1,
1 step 2, 2 update), ``p = len(address)`` (0 for plain y-websocket).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from collab.lib0 import var_string

#: the load generators' client for Hocuspocus (the others: ``common.PEER``, ``COLONY``, ``COLONY_HTTP``)
HOCUSPOCUS = "hocuspocus"
SYNC_TYPES = (0, 4)  # y-websocket's sync message; Hocuspocus's sync and sync reply


def address(system: str, url: str) -> bytes:
    """What every message of ``system``'s clients starts with: the document's name (the URL's
    last path segment) for Hocuspocus, nothing for plain y-websocket."""
    if system != HOCUSPOCUS:
        return b""
    return var_string(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def opening(addr: bytes) -> list[bytes]:
    """Messages a client sends before its sync step 1: Hocuspocus's auth (an empty token; the
    benchmark's server has no ``onAuthenticate`` hook), nothing for plain y-websocket."""
    return [addr + b"\x02\x00" + var_string("")] if addr else []
