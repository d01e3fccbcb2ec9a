"""The ``colony`` command line: run a relay, manage keys, and talk to a relay as an agent."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from collab.events import HEX64_RE
from collab.keys import Keypair

from .config import Config
from .limits import Limits

DEFAULT_RELAY = "http://127.0.0.1:8765"


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop ships with the install
        return asyncio.run(coro)


def _limits_from(args: argparse.Namespace) -> Limits:
    kw = {name: getattr(args, name) for name in Limits.names() if getattr(args, name, None) is not None}
    return Limits(**kw)


def config_from(args: argparse.Namespace) -> Config:
    return Config(data_dir=Path(args.data), host=args.host, port=args.port, limits=_limits_from(args),
                  synchronous=args.synchronous, redis_url=args.redis or None, redis_prefix=args.redis_prefix,
                  relay_key_file=Path(args.relay_key) if args.relay_key else None, ws_deflate=args.ws_deflate,
                  sync_interval=args.sync_interval, presence_ttl=args.presence_ttl,
                  operators=tuple(args.operator), trust_pretrusted=tuple(args.trust_pretrusted),
                  trust_half_life=args.trust_half_life, public_url=args.public_url, peers=tuple(args.peer),
                  replicate=tuple(args.replicate) if args.replicate else ("vouch/",), pins=tuple(args.pin))


async def _serve(config: Config) -> int:
    import uvicorn

    from .app import create_app
    from .runner import uvicorn_config
    from .server import Relay

    relay = Relay(config)
    server = uvicorn.Server(uvicorn_config(create_app(config, relay), config))

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"colony relay listening on http://{host}:{port} (relay key {relay.hub.relay_key.public_hex})",
              flush=True)

    announcer = asyncio.get_running_loop().create_task(announce())
    await server.serve()
    announcer.cancel()
    return 0 if server.started else 1


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run(_serve(config_from(args)))


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"colony: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    kp = Keypair.generate()
    kp.save(out)
    print(kp.public_hex)
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _key_hex(text: str) -> str:
    if not HEX64_RE.match(text):
        raise argparse.ArgumentTypeError(f"a key is 64 lowercase hex characters, not {text!r}")
    return text


def _peer(text: str) -> str:
    from .federation.routing import Member

    try:
        Member.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _pin(text: str) -> str:
    from .federation.routing import parse_pin

    try:
        parse_pin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("COLONY_HOST", "127.0.0.1"), help="interface to listen on")
    p.add_argument("--port", type=int, default=int(os.environ.get("COLONY_PORT", "8765")),
                   help="TCP port (0 picks a free one)")
    p.add_argument("--data", default=os.environ.get("COLONY_DATA", "./colony-data"),
                   help="data directory: SQLite log, snapshots, relay key")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "EXTRA"],
                   help="SQLite durability; FULL fsyncs every group commit")
    p.add_argument("--redis", default=os.environ.get("COLONY_REDIS"), metavar="URL",
                   help="share this Redis (redis://HOST:PORT/DB, or a cluster node) with other relay "
                        "processes instead of the embedded SQLite store (env COLONY_REDIS)")
    p.add_argument("--relay-key", default=os.environ.get("COLONY_RELAY_KEY"), metavar="FILE",
                   help="the relay's Ed25519 identity (created if missing; default <data>/relay.key). "
                        "Processes serving one site from one Redis should share it")
    p.add_argument("--redis-prefix", default=os.environ.get("COLONY_REDIS_PREFIX", "colony"),
                   help="key prefix in Redis (one per site sharing a Redis server)")
    base = Config()
    p.add_argument("--sync-interval", type=_positive, default=base.sync_interval, metavar="SECONDS",
                   help="with --redis: how often each loaded feed compares its head with Redis and catches "
                        f"up on records a lost pub/sub message hid (default {base.sync_interval:g})")
    p.add_argument("--presence-ttl", type=_positive, default=base.presence_ttl, metavar="SECONDS",
                   help="with --redis: a process's participant entries expire this long after its last "
                        "refresh (every TTL/3), so the clients of a crashed process leave the participant "
                        f"lists of the others (default {base.presence_ttl:g})")
    p.add_argument("--ws-deflate", action="store_true", default=os.environ.get("COLONY_WS_DEFLATE") == "1",
                   help="accept WebSocket permessage-deflate (off by default: per-subscriber compression "
                        "of small records costs more CPU than it saves on fast links)")
    env_keys = lambda name: [k for k in os.environ.get(name, "").replace(",", " ").split() if k]  # noqa: E731
    p.add_argument("--operator", action="append", type=_key_hex, default=env_keys("COLONY_OPERATORS"),
                   metavar="KEY", help="a key that may grant stake credits in ledger/ feeds (repeatable; "
                                       "env COLONY_OPERATORS, comma-separated)")
    p.add_argument("--trust-pretrusted", action="append", type=_key_hex, default=env_keys("COLONY_TRUST_PRETRUSTED"),
                   metavar="KEY", help="an EigenTrust pre-trusted key (repeatable; the relay key always is)")
    p.add_argument("--trust-half-life", type=_positive, default=base.trust_half_life, metavar="SECONDS",
                   help=f"a vouch's weight halves this often (default {base.trust_half_life:g})")
    p.add_argument("--public-url", default=os.environ.get("COLONY_PUBLIC_URL"), metavar="URL",
                   help="federation: how peers reach this relay (default http://HOST:PORT)")
    p.add_argument("--peer", action="append", type=_peer, default=[_peer(x) for x in env_keys("COLONY_PEERS")],
                   metavar="URL#KEY", help="federation: another member relay, its base URL and relay key "
                                           "(repeatable; env COLONY_PEERS, comma-separated); see docs/federation.md")
    p.add_argument("--replicate", action="append", default=None, metavar="PREFIX",
                   help="federation: feeds with this prefix are mirrored by every member (repeatable; "
                        "default vouch/)")
    p.add_argument("--pin", action="append", type=_pin, default=[], metavar="PATTERN=KEY",
                   help="federation: the home relay of feeds matching PATTERN (fnmatch; repeatable)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    defaults = Limits()
    for name in Limits.names():
        default = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=type(default), default=None,
                       help=f"limit (default {default})")


CommandFn = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colony", description="Colony: a relay for agents that work together")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run a relay (embedded SQLite storage, or a shared Redis)")
    add_serve_args(p)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("keygen", help="create an Ed25519 agent key file (mode 0600)")
    p.add_argument("--out", required=True, help="where to write the key")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(fn=cmd_keygen)

    try:
        from . import cli_agent
    except ImportError:
        cli_agent = None  # type: ignore[assignment]
    if cli_agent is not None:
        cli_agent.register(sub)
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
