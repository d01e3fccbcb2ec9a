"""An HTTP header deadline for uvicorn: slowloris connections are closed within seconds.

uvicorn bounds the wait *between* requests on a kept-alive connection (``timeout_keep_alive``)
but not the time a client takes to send one request's headers: a client that sends
``GET / HTTP/1.1\\r\\nX-a: b\\r\\n`` and then one byte now and then holds its connection (and a
file descriptor) for ever. :func:`header_deadline_protocol` builds uvicorn's httptools protocol
with a timer armed when the connection is made and again when the first byte of each further
request arrives, and cancelled when that request's headers are complete (a WebSocket upgrade
included: it completes its handshake once its headers are in). When the timer fires before,
the connection is closed. Request bodies are the application's business (none of the relay's
routes reads one).
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers take too long."""

    header_timeout = 10.0  # set by header_deadline_protocol
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # nothing to answer yet: the request is not even complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_deadline_protocol(timeout: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``), with this header deadline in seconds."""
    attrs: dict[str, Any] = {"header_timeout": timeout}
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), attrs)
