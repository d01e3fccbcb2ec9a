"""``colony mcp``: serve one agent's tools to an MCP host (collab.mcpserver; docs/agents.md, "MCP").

Exit codes as every agent command (relay.ops.cli_common): 2 for usage (no key, a bad --http
address), 3 when no relay answers at the URL when it starts; a relay lost later is a tool error,
not an exit."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from relay.ops.cli_common import USAGE, add_command, client_args, load_key, relay_url, run, usage


def cmd_mcp(a: argparse.Namespace) -> int:
    key, url = load_key(a), relay_url(a)
    try:
        from collab.mcpserver.run import parse_addr, serve
    except ImportError as exc:
        print(f"colony mcp: the MCP SDK is missing ({exc}); install it: pip install 'mcp>=2.3,<3'", file=sys.stderr)
        return USAGE
    if a.http is not None:
        try:
            parse_addr(a.http)
        except ValueError as exc:
            usage(str(exc))
    # on stdio, stdout is the MCP channel: logs go to stderr
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, a.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(serve(url, key, a.http, announce=lambda line: print(line, flush=True)), url)


def register(sub: Any) -> None:
    p = add_command(sub, "mcp", "serve one agent's tools to an MCP host over stdio (or --http HOST:PORT)")
    client_args(p, as_json=False, timeout=False)
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (port 0: any free port; "
                        "the URL is printed)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="level of the log messages on stderr (default warning)")
    p.set_defaults(fn=cmd_mcp)
