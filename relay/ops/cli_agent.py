"""Agent-side ``colony`` commands: ``tail``, ``replay``, ``grant``, ``demo``; and the store commands ``export``,
``import``, ``compact``. (``doc``, ``publish`` and the namespace commands: relay/ops/cli_feeds.py and its siblings.)

They talk to a relay like any agent does (``collab.client``), so they double as examples.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from collab.errors import ColonyError
from collab.keys import Keypair

from relay.ops.cli_common import DEFAULT_RELAY, EPILOG, load_key, relay_url, run, server_command


def _relay_url(args: argparse.Namespace) -> str:
    return relay_url(args)


def _key(args: argparse.Namespace) -> Keypair:
    return load_key(args)


def _run(coro: Any, url: str | None = None) -> int:
    """Run a command. One that talks to the relay at ``url`` exits with the codes of
    relay.ops.cli_common (1 refused, 3 unreachable); a store command (no url) exits 1 on failure."""
    if url is not None:
        return run(coro, url)
    from relay.ops.cli import _run as run_loop

    try:
        return run_loop(coro)
    except (ColonyError, OSError) as exc:
        print(f"colony: {exc}", file=sys.stderr)
        return 1


# -- tail ------------------------------------------------------------------------------------
def _summary(body: Any) -> str:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


async def _tail(url: str, feed: str, since: int | None, count: int | None, as_json: bool) -> int:
    import httpx

    from collab.client import Client

    if since is None:  # live only: start at the current head
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{url.rstrip('/')}/feeds/{feed}")
            since = r.json()["seq"] if r.status_code == 200 else 0
    done = asyncio.get_running_loop().create_future()
    seen = 0

    def on_record(rec: Any) -> None:
        nonlocal seen
        if as_json:
            print(json.dumps(rec.to_wire(), ensure_ascii=False), flush=True)
        else:
            t = dt.datetime.fromtimestamp(rec.rtime / 1000, dt.UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]
            print(f"{rec.seq:>7}  {t}  {rec.event.author[:12]}  {rec.event.kind:<14} {_summary(rec.event.body)}",
                  flush=True)
        seen += 1
        if count is not None and seen >= count and not done.done():
            done.set_result(None)

    async with Client(url, None) as client:
        await client.subscribe(feed, since, on_record=on_record, on_snapshot=lambda s: None)
        await done
    return 0


# -- replay ----------------------------------------------------------------------------------
async def _replay(url: str, feed: str, at: int | None, verify: bool, as_json: bool, key: Keypair | None = None) -> int:
    from collab.replay import fetch_log, replay, vet_log
    from collab.sandbox_supervisor import Sandbox

    # base: a compacted feed's snapshot (verified by replay); key: read a private feed as its reader
    base, raw = await fetch_log(url, feed, key=key)
    async with Sandbox() as sandbox:  # doc updates the Yjs engine fails on are reported, not folded
        quarantine = await vet_log(sandbox, feed, raw, base)
    result = replay(raw, at=at, feed=feed, base=base, quarantine=quarantine)
    view = result.view()
    if as_json:
        print(json.dumps({"feed": feed, "seq": result.seq, "head": result.head, "verified": result.verified,
                          "anomalies": [a.__dict__ if hasattr(a, "__dict__")
                                        else {"seq": a.seq, "kind": a.kind, "detail": a.detail}
                                        for a in result.anomalies],
                          "state": view}, ensure_ascii=False, indent=2))
    else:
        if isinstance(view, dict) and isinstance(view.get("text"), str):
            print(view["text"])
        elif view is not None:
            print(json.dumps(view, ensure_ascii=False, indent=2))
        status = "verified" if result.verified else "VERIFICATION FAILED"
        print(f"# {feed} at seq {result.seq} of {len(raw)}, head {result.head[:16]}: {status}", file=sys.stderr)
        for a in result.anomalies:
            print(f"#   seq {a.seq}: {a.kind}: {a.detail}", file=sys.stderr)
    return 1 if verify and not result.verified else 0


# -- grant -----------------------------------------------------------------------------------
async def _grant(url: str, key: Keypair, feed: str, write: bool, ttl: float) -> int:
    """Print a capability token for ``feed`` signed by its owner (see docs/protocol.md, section 20)."""
    import httpx

    from collab.capability import Capability
    from collab.client import Client
    from collab.events import check_feed, namespace_of, now_ms
    from collab.httpauth import authorization

    check_feed(feed)
    if namespace_of(feed) != "doc":
        print(f"colony: capabilities are for doc/ feeds (the Yjs endpoint serves them), not {feed}", file=sys.stderr)
        return 2
    ttl_ms = int(ttl * 1000)
    if not 0 < ttl_ms <= 10 * 365 * 86_400_000:
        print("colony: --ttl must be a positive number of seconds (at most ten years)", file=sys.stderr)
        return 2
    base = url.rstrip("/")
    path = f"/feeds/{feed}"
    async with httpx.AsyncClient(timeout=10) as http:
        relay_key = (await http.get(f"{base}/relay")).json()["key"]

        def signed() -> dict[str, str]:  # the owner of a members doc is shown only to its readers
            return {"authorization": authorization(key, relay_key, "GET", path, now_ms())}

        r = await http.get(base + path, headers=signed())
        if r.status_code == 404:
            # no records yet: nobody owns it, and the relay honours only the owner's capabilities.
            # Claim it: a feed.policy as seq 1 makes this key the owner.
            async with Client(url, key, reconnect=False) as client:
                await client.publish(feed, "feed.policy", {"policy": "signed"})
            print(f"# {feed} had no records: created it (policy signed), owned by this key", file=sys.stderr)
            r = await http.get(base + path, headers=signed())
        if r.status_code != 200:
            print(f"colony: cannot read {feed} from the relay: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)
            return 1
        owner = r.json().get("owner")
    if owner is None:
        print(f"colony: {feed} is members-only and this key ({key.public_hex}) may not read it, so it is not its "
              "owner: the relay honours only the owner's capabilities", file=sys.stderr)
        return 1
    if owner != key.public_hex:
        print(f"colony: {feed} is owned by {owner}, not by this key ({key.public_hex}): the relay honours only "
              "the owner's capabilities", file=sys.stderr)
        return 1
    cap = Capability.issue(key, feed, write=write, ttl_ms=ttl_ms)
    until = dt.datetime.fromtimestamp(cap.exp / 1000, dt.UTC).isoformat(timespec="seconds")
    ws = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    print(f"# {'+'.join(cap.rights)} on {feed} until {until} (bearer: anyone holding it has these rights)\n"
          f"# Yjs: new WebsocketProvider('{ws}/yjs', '{feed.split('/', 1)[1]}', ydoc, {{ params: {{ token }} }})",
          file=sys.stderr)
    print(cap.token())
    return 0


# -- export / import (backup and restore; relay/ops/backup.py, docs/operations.md) ----------------
def _open_store(a: argparse.Namespace) -> Any:
    if a.redis:
        from relay.storage.redis import RedisStorage

        return RedisStorage(a.redis, prefix=a.redis_prefix)
    if not a.data:
        raise SystemExit("colony: pass --data DIR (SQLite) or --redis URL (with --redis-prefix)")
    from relay.storage.sqlite import SqliteStorage

    return SqliteStorage(a.data)


async def _export(a: argparse.Namespace) -> int:
    from relay.ops.backup import BackupError, write_export

    if bool(a.feeds) == bool(a.all):
        print("colony: name the feeds to export, or pass --all", file=sys.stderr)
        return 2
    relay = None
    key_file = Path(a.relay_key) if a.relay_key else (Path(a.data) / "relay.key" if a.data else None)
    if key_file is not None and key_file.exists():
        relay = Keypair.load(key_file).public_hex
    out = Path(a.out)
    tmp = out.with_name(out.name + ".partial")
    try:
        async with _open_store(a) as storage:
            with open(tmp, "w", encoding="utf-8") as fp:  # noqa: ASYNC230 - a one-shot command: nothing else runs
                count = await write_export(storage, None if a.all else a.feeds, fp, relay)
                fp.flush()
                os.fsync(fp.fileno())
    except (BackupError, RuntimeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        print(f"colony: export failed: {exc}", file=sys.stderr)
        return 1
    os.replace(tmp, out)
    print(f"exported {count} records to {out}", file=sys.stderr)
    return 0


async def _import(a: argparse.Namespace) -> int:
    from relay.ops.backup import BackupError, verify_and_import

    try:
        with open(a.file, encoding="utf-8") as fp:  # noqa: ASYNC230 - a one-shot command: nothing else runs
            async with _open_store(a) as storage:
                result = await verify_and_import(storage, fp)
    except (BackupError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        print(f"colony: import refused, nothing written: {exc}", file=sys.stderr)
        return 1
    for feed, n in sorted(result.feeds.items()):
        print(f"{feed}: {n} records imported" + (f" ({result.skipped[feed]} already present)"
                                                  if result.skipped[feed] else ""))
    return 0


async def _compact(a: argparse.Namespace) -> int:
    from relay.ops.compact import CompactError, compact

    if bool(a.feeds) == bool(a.all):
        print("colony: name the feeds to compact, or pass --all", file=sys.stderr)
        return 2
    key_file = Path(a.relay_key) if a.relay_key else (Path(a.data) / "relay.key" if a.data else None)
    if key_file is None or not key_file.exists():
        print("colony: compact seals the base with the relay key: pass --relay-key FILE", file=sys.stderr)
        return 2
    try:
        async with _open_store(a) as storage:
            results = await compact(storage, Keypair.load(key_file), None if a.all else a.feeds, a.keep)
    except (CompactError, RuntimeError, OSError, ValueError) as exc:
        print(f"colony: compact refused: {exc}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.feed}: head {r.head}, base at {r.base}, {r.deleted} records deleted")
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="the relay's data directory (SQLite; the relay must be stopped)")
    p.add_argument("--redis", default=None, metavar="URL", help="a Redis backend instead of --data")
    p.add_argument("--redis-prefix", default="colony", help="key prefix in Redis (default colony)")


# -- wiring ----------------------------------------------------------------------------------
def _client_args(p: argparse.ArgumentParser, key: bool = True) -> None:
    p.add_argument("--relay", default=None, help=f"relay base URL (default $COLONY_RELAY or {DEFAULT_RELAY})")
    if key:
        p.add_argument("--key", default=None, help="agent key file (default $COLONY_KEY)")


def register(sub: Any) -> None:
    p = sub.add_parser("tail", epilog=EPILOG, help="print a feed's records live as they are sequenced")
    p.add_argument("feed")
    p.add_argument("--since", type=int, default=None, help="start after this seq (default: the current head)")
    p.add_argument("--count", type=int, default=None, help="exit after this many records")
    p.add_argument("--json", action="store_true", help="one record per line as wire JSON")
    _client_args(p, key=False)
    p.set_defaults(fn=lambda a: _run(_tail(_relay_url(a), a.feed, a.since, a.count, a.json), _relay_url(a)))

    p = sub.add_parser("replay", epilog=EPILOG, help="rebuild a feed locally from its log; --verify checks everything")
    p.add_argument("feed")
    p.add_argument("--at", type=int, default=None, help="stop at this seq")
    p.add_argument("--verify", action="store_true", help="exit non-zero if any signature, link or rule fails")
    p.add_argument("--json", action="store_true")
    _client_args(p, key=False)
    p.add_argument("--key", default=None,
                   help="read as this agent key (a members or dm/ feed it may read; default: anonymous)")
    p.set_defaults(fn=lambda a: _run(_replay(_relay_url(a), a.feed, a.at, a.verify, a.json,
                                             _key(a) if a.key else None), _relay_url(a)))

    p = sub.add_parser("grant", epilog=EPILOG,
                       help="print a capability token that lets Yjs clients read (and --write) a doc")
    p.add_argument("feed", help="a doc/ feed you own (one without records is created, owned by your key)")
    p.add_argument("--write", action="store_true", help="grant write as well as read (default: read only)")
    p.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS", help="validity (default 3600)")
    _client_args(p)
    p.set_defaults(fn=lambda a: _run(_grant(_relay_url(a), _key(a), a.feed, a.write, a.ttl), _relay_url(a)))

    p = sub.add_parser("export", help="back up feeds from a relay's store to a JSON Lines file")
    p.add_argument("feeds", nargs="*", metavar="FEED")
    p.add_argument("--all", action="store_true", help="every feed in the store")
    p.add_argument("--out", required=True, help="the export file to write")
    p.add_argument("--relay-key", default=None, help="relay key file, to name the relay in the header "
                   "(default <data>/relay.key)")
    _store_args(p)
    p.set_defaults(fn=server_command("export", lambda a: _run(_export(a))))

    p = sub.add_parser("import", help="verify an export file completely, then restore it into a store")
    p.add_argument("file")
    _store_args(p)
    p.set_defaults(fn=server_command("import", lambda a: _run(_import(a))))

    p = sub.add_parser("compact", help="retention: fold old records of doc/ feeds into a signed base snapshot")
    p.add_argument("feeds", nargs="*", metavar="FEED")
    p.add_argument("--all", action="store_true", help="every doc/ feed in the store")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="records to keep after the base")
    p.add_argument("--relay-key", default=None, help="relay key file that signs the base (default <data>/relay.key)")
    _store_args(p)
    p.set_defaults(fn=server_command("compact", lambda a: _run(_compact(a))))

    p = sub.add_parser("demo", help="a relay with scripted agents co-editing a document")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--data", default=None, help="data directory (default: a fresh temporary one)")
    p.add_argument("--agents", type=int, default=5,
                   help="doc agents: outliner, writer, co-writer, reviewer, editor, then extra writers")
    p.add_argument("--duration", type=float, default=None,
                   help="stop this many seconds after the start, or when the script ends if later "
                        "(default: keep serving after the script until Ctrl-C; with --relay: end with it)")
    p.add_argument("--pace", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between an agent's steps (1 for a person watching; the tests use 0.05)")
    p.add_argument("--relay", action="append", default=None, metavar="URL",
                   help="run only the scripted agents against this running relay (repeatable: the doc "
                        "agents spread over the relays; the coordination scenes use the first); needs "
                        "--operator-key")
    p.add_argument("--operator-key", default=None, metavar="FILE",
                   help="the key that grants the scenes' stake; with --relay the relays must have been "
                        "started with --operator $(colony pubkey FILE)")
    p.add_argument("--show-url", action="append", default=None, metavar="URL",
                   help="with --relay: the URL a person opens for each --relay, in the same order (e.g. the "
                        "host's published ports when the relays run in containers); the banner prints these")

    def demo(a: argparse.Namespace) -> int:
        from relay.ops.demo import run_agents, run_demo

        try:
            operator = Keypair.load(a.operator_key) if a.operator_key else None
        except (OSError, ValueError) as exc:
            print(f"colony demo: cannot read --operator-key: {exc}", file=sys.stderr)
            return 2
        if a.relay:
            if operator is None:
                print("colony demo: --relay needs --operator-key FILE, a key the relays accept as --operator",
                      file=sys.stderr)
                return 2
            if a.show_url and len(a.show_url) != len(a.relay):
                print("colony demo: give one --show-url per --relay, in the same order", file=sys.stderr)
                return 2
            return _run(run_agents(a.relay, operator, a.agents, a.duration, a.pace, a.show_url))
        return _run(run_demo(a.host, a.port, Path(a.data) if a.data else None, a.agents, a.duration, a.pace,
                             operator))

    p.set_defaults(fn=server_command("demo", demo))
