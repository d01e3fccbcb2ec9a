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
import sys
from typing import Any

from collab.errors import InvalidEvent, Unreachable
from collab.keys import Keypair

from relay.ops.cli_common import add_command, client_args, optional_key, relay_url, run, usage


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
    except (InvalidHandshake, InvalidURI) as exc:  # OSError and the relay's refusals: cli_common.fail
        raise Unreachable(url, str(exc)) from exc
    return 0


def cmd_watch(a: argparse.Namespace) -> int:
    from collab.events import check_prefix

    try:
        check_prefix(a.prefix)
    except InvalidEvent as exc:
        usage(f"watch: {exc}")
    if a.count is not None and a.count < 1:
        usage("watch: --count must be at least 1")
    url = relay_url(a)
    return run(watch(url, optional_key(a), a.prefix, a.count, a.json), url)


def register(sub: Any) -> None:
    p = add_command(sub, "watch", "print an announcement (feed, seq, head, kind, rtime) of every new record of "
                                  "every feed whose id starts with PREFIX that the key may read")
    p.add_argument("prefix", metavar="PREFIX", help="the start of the feed ids, e.g. auction/ (\"\": every feed)")
    client_args(p, key="agent key file, to hear of the members and dm/ feeds it reads (default $COLONY_KEY; "
                       "none: anonymous, public feeds only)", as_json=False, timeout=False)
    p.add_argument("--json", action="store_true", help="one announcement per line as JSON")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N announcements")
    p.set_defaults(fn=cmd_watch)


__all__ = ["cmd_watch", "line", "register", "watch"]
