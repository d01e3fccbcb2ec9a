"""A relay's two URLs from either: the WebSocket endpoint (``ws(s)://host/prefix/ws``) that
:class:`collab.client.Client` connects to, and the HTTP base (``http(s)://host/prefix``) that
the HTTP API (docs/protocol.md section 15) hangs off. Agents may be given either form."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .errors import InvalidEvent


def ws_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` -> ``ws(s)://host[:port][/prefix]/ws``; ws URLs as given."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https"):
        raise InvalidEvent(f"relay URL must be http(s):// or ws(s)://, not {url!r}")
    scheme = "ws" if parts.scheme == "http" else "wss"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", parts.query, ""))


def http_base(url: str) -> str:
    """The relay's HTTP base URL: ``ws(s)://host/prefix/ws`` -> ``http(s)://host/prefix``."""
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        path = parts.path.rstrip("/")
        path = path.removesuffix("/ws")
        return urlunsplit(("http" if parts.scheme == "ws" else "https", parts.netloc, path, "", ""))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidEvent(f"relay URL must be http(s):// or ws(s)://, not {url!r}")
    return url.rstrip("/")


__all__ = ["http_base", "ws_url"]
