"""``colony watch PREFIX``: print an announcement of every new record of every feed whose id
starts with PREFIX (docs/protocol.md 9.4), as an agent's client hears them.

Exit status: 0 done (``--count`` announcements printed, or interrupted), 1 the relay refused
the watch (its code on stderr), 2 a usage error (a bad prefix or key), 3 the relay could not
be reached (its URL on stderr). The connection is made again after a loss, the watch with it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from typing import Any

from collab.errors import ColonyError, InvalidEvent, RelayError
from collab.keys import Keypair

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def line(ev: Any, as_json: bool) -> str:
    """One announcement as printed: wire JSON, or ``time  seq  kind  feed  head``."""
    if as_json:
        return json.dumps({"feed": ev.feed, "seq": ev.seq, "head": ev.head, "kind": ev.kind, "rtime": ev.rtime},
                          ensure_ascii=False)
    t = dt.datetime.fromtimestamp(ev.rtime / 1000, dt.UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]
    return f"{t}  {ev.seq:>7}  {ev.kind:<16} {ev.feed}  {ev.head[:16]}"


async def watch(url: str, key: Keypair | None, prefix: str, count: int | None, as_json: bool) -> int:
    from websockets.exceptions import InvalidHandshake, InvalidURI

    from collab.client import Client

    done = asyncio.get_running_loop().create_future()
    seen = 0

    def on_announce(ev: Any) -> None:
        nonlocal seen
        if done.done():
            return
        print(line(ev, as_json), flush=True)
        seen += 1
        if count is not None and seen >= count:
            done.set_result(None)

    try:
        async with Client(url, key) as client:
            await client.watch(prefix, on_announce)
            print(f"# watching {prefix!r} on {url}", file=sys.stderr, flush=True)
            await done
    except RelayError as exc:
        print(f"colony: the relay refused: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        print(f"colony: cannot reach the relay at {url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ColonyError as exc:
        print(f"colony: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_watch(a: argparse.Namespace) -> int:
    from collab.events import check_prefix
    from relay.ops.cli import _run
    from relay.ops.cli_agent import _relay_url

    try:
        check_prefix(a.prefix)
    except InvalidEvent as exc:
        print(f"colony watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if a.count is not None and a.count < 1:
        print("colony watch: --count must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    path = a.key or os.environ.get("COLONY_KEY")
    try:
        key = Keypair.load(path) if path else None
    except (OSError, ValueError) as exc:
        print(f"colony watch: cannot load key {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run(watch(_relay_url(a), key, a.prefix, a.count, a.json))


def register(sub: Any) -> None:
    from relay.ops.cli_agent import DEFAULT_RELAY

    p = sub.add_parser("watch", help="print every new record of the feeds whose id starts with PREFIX",
                       description="Print an announcement (feed, seq, head, kind, rtime) of every new record of "
                                   "every feed whose id starts with PREFIX that the key may read. Exit 0 done, "
                                   "1 refused by the relay, 2 usage, 3 relay unreachable.")
    p.add_argument("prefix", metavar="PREFIX", help="the start of the feed ids, e.g. auction/ (\"\": every feed)")
    p.add_argument("--relay", default=None, help=f"relay base URL (default $COLONY_RELAY or {DEFAULT_RELAY})")
    p.add_argument("--key", default=None, help="agent key file, to hear of the members and dm/ feeds it reads "
                   "(default $COLONY_KEY; none: anonymous, public feeds only)")
    p.add_argument("--json", action="store_true", help="one announcement per line as JSON")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N announcements")
    p.set_defaults(fn=cmd_watch)


__all__ = ["cmd_watch", "line", "register", "watch"]
