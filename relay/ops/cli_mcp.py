"""``colony mcp``: serve one agent's tools to an MCP host (collab.mcpserver; docs/agents.md)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from relay.ops.cli_agent import _client_args, _key, _relay_url, _run


def cmd_mcp(a: argparse.Namespace) -> int:
    key, url = _key(a), _relay_url(a)
    # stdout is the MCP channel on stdio: logs go to stderr
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, a.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from collab.mcpserver.run import parse_addr, serve
    except ImportError as exc:
        print(f"colony mcp: the MCP SDK is missing ({exc}); install it: pip install 'mcp>=2.3,<3'", file=sys.stderr)
        return 2
    if a.http is not None:
        try:
            parse_addr(a.http)
        except ValueError as exc:
            print(f"colony mcp: {exc}", file=sys.stderr)
            return 2
    return _run(serve(url, key, a.http, announce=lambda line: print(line, flush=True)))


def register(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve one agent's tools to an MCP host over stdio (or --http HOST:PORT)")
    _client_args(p)
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (port 0: any free port; "
                        "the URL is printed)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="log level of messages on stderr (default warning)")
    p.set_defaults(fn=cmd_mcp)
