"""Running the MCP server on a transport: stdio (what an MCP host starts as a subprocess) or
streamable HTTP on ``host:port`` (port 0: any free port; the URL is announced on stdout).

One process serves one agent identity: the key it is started with signs everything its tools do,
over one long-lived authenticated connection to the relay (:class:`collab.agent.Agent`).
"""
from __future__ import annotations

import socket
from collections.abc import Callable

from ..keys import Keypair
from .server import ColonyMcp

HTTP_PATH = "/mcp"


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6, ``:PORT`` for 127.0.0.1) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8800, or port 0 for any free port), not {addr!r}")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    return host, int(port)


async def serve_stdio(app: ColonyMcp) -> None:
    """Serve one MCP session on this process's stdin/stdout until the host closes stdin."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await app.server.run(read_stream, write_stream, app.server.create_initialization_options())


async def serve_http(app: ColonyMcp, addr: str, announce: Callable[[str], None]) -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until the process is told to stop."""
    import uvicorn

    host, port = parse_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    asgi = app.server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on"))
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    announce(f"colony mcp listening on http://{shown}:{bound}{HTTP_PATH}")
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


async def serve(url: str, key: Keypair, http: str | None = None, *,
                announce: Callable[[str], None] = print) -> int:
    """Connect as ``key`` to the relay at ``url`` and serve MCP (stdio, or streamable HTTP at ``http``)."""
    from ..agent import Agent

    if http is not None:
        parse_addr(http)  # refuse a bad address before connecting
    async with Agent(url, key) as agent:
        app = ColonyMcp(agent, url=url, key=key.public_hex)
        try:
            if http is None:
                await serve_stdio(app)
            else:
                await serve_http(app, http, lambda line: announce(line + f" (agent key {key.public_hex})"))
        finally:
            await app.aclose()
    return 0
