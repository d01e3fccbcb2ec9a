"""The ``colony`` command line: run a relay, manage keys, and talk to a relay as an agent.

The settings of ``colony serve`` (their table, parsing and resolution into a Config) live in
:mod:`relay.ops.cli_settings`; the agent commands in :mod:`relay.ops.cli_feeds` (publish, feeds,
read, doc), :mod:`relay.ops.cli_coord` (auction, task), :mod:`relay.ops.cli_lease` (lease),
:mod:`relay.ops.cli_peers` (vouch, trust, agents, profile, dm, balance) and
:mod:`relay.ops.cli_agent` (tail, replay, grant, export, import, compact, demo); their options
and exit codes in :mod:`relay.ops.cli_common`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from collab import __version__
from collab.keys import Keypair

from relay.core.config import Config
from relay.ops.cli_common import DEFAULT_RELAY, EPILOG, server_command
from relay.ops.cli_settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Setting,
    _config_of,
    add_serve_args,
    config_from,
    resolve_settings,
)

__all__ = ["DEFAULT_RELAY", "SETTINGS", "SETTINGS_BY_NAME", "ConfigError", "Setting", "add_serve_args", "build_parser",
           "config_from", "main", "resolve_settings"]



def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop ships with the install
        return asyncio.run(coro)


async def _serve(config: Config) -> int:
    from relay.app import create_app
    from relay.ops.runner import GracefulServer, bind_sockets, uvicorn_config
    from relay.server import Relay

    try:  # before the relay starts: a taken port is one line, not a startup and a traceback
        sockets = bind_sockets(config.host, config.port)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        print(f"colony: cannot listen on {config.host}:{config.port}: {reason}", file=sys.stderr, flush=True)
        return 1
    relay = Relay(config)
    server = GracefulServer(uvicorn_config(create_app(config, relay), config), relay)  # SIGTERM drains first

    async def announce() -> None:
        await server.ready.wait()
        if not server.started:
            return
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"colony relay listening on http://{host}:{port} (relay key {relay.hub.relay_key.public_hex})",
              flush=True)

    announcer = asyncio.get_running_loop().create_task(announce())
    await server.serve(sockets)
    announcer.cancel()
    return 0 if server.started else 1


def _configure_logging(level: str, fmt: str) -> None:
    try:
        from relay.ops import logging_json
    except ImportError:
        logging_json = None  # type: ignore[assignment]  # an optional module: None when it cannot load
    if logging_json is not None:
        logging_json.configure(level, fmt)
        return
    if fmt != "text":
        raise ConfigError(f"--log-format {fmt} is not supported by this installation (relay.ops.logging_json missing)")
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        values = resolve_settings(args)
        config = _config_of(values)
        _configure_logging(values["log_level"], values["log_format"])
    except ConfigError as exc:
        print(f"colony serve: {exc}", file=sys.stderr)
        return 2
    return _run(_serve(config))

def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"colony: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    kp = Keypair.generate()
    kp.save(out)
    print(kp.public_hex)
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        if not args.create:
            print(f"colony: {path} does not exist; pass --create to create it", file=sys.stderr)
            return 2
        Keypair.generate().save(path)
    try:
        kp = Keypair.load(path)
    except (OSError, ValueError) as exc:
        print(f"colony: cannot read key file {path}: {exc}", file=sys.stderr)
        return 2
    print(kp.public_hex)
    return 0


CommandFn = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colony", description="Colony: a relay for agents that work together",
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"colony {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run a relay (embedded SQLite storage, or a shared Redis)")
    add_serve_args(p)
    p.set_defaults(fn=server_command("serve", cmd_serve))

    p = sub.add_parser("keygen", help="create an Ed25519 agent key file (mode 0600)")
    p.add_argument("--out", required=True, help="where to write the key")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(fn=cmd_keygen)

    p = sub.add_parser("pubkey", help="print the public key (hex) of a key file, e.g. for --operator or --peer")
    p.add_argument("file", help="the key file (colony keygen, or a relay's --relay-key)")
    p.add_argument("--create", action="store_true", help="create the key file (mode 0600) if it does not exist")
    p.set_defaults(fn=cmd_pubkey)

    from relay.ops import cli_agent, cli_coord, cli_feeds, cli_lease, cli_mcp, cli_peers, cli_watch

    # agent commands (docs/agents.md)
    for module in (cli_feeds, cli_coord, cli_lease, cli_peers, cli_watch, cli_agent, cli_mcp):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fn: CommandFn = args.fn
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
