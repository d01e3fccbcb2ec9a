"""``colony publish``, ``feeds``, ``read`` and ``doc append|insert|replace|cat``: feeds and
documents from the shell, over :class:`collab.agent.Agent` (docs/agents.md, "Command line")."""
from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from collab.errors import RelayError

from relay.ops.cli_common import (
    ack_line,
    add_command,
    agent_command,
    client_args,
    json_value,
    one_line,
)


def roots_json(data: bytes) -> dict[str, Any]:
    """Every root of a Yjs document as JSON. Root types are not self-describing in a Yjs
    update, so each root is read on a scratch copy as Map, Text, Array, then XML, and the
    first view that shows content wins."""
    from pycrdt import Array, Doc, Map, Text, XmlFragment

    probe: Doc[Any] = Doc()
    probe.apply_update(data)
    out: dict[str, Any] = {}
    for name in sorted(probe.keys()):
        value: Any = None
        for typ in (Map, Text, Array, XmlFragment):
            scratch: Doc[Any] = Doc()
            scratch.apply_update(data)
            root = scratch.get(name, type=typ)
            if typ is Map and len(root):
                value = root.to_py()
            elif typ is Text and str(root):
                value = str(root)
            elif typ is Array and len(root):
                value = root.to_py()
            elif typ is XmlFragment:
                value = str(root)
            if value not in (None, "", [], {}):
                break
        out[name] = value
    return out


def record_line(r: dict[str, Any]) -> str:
    t = dt.datetime.fromtimestamp(r["rtime"] / 1000, dt.UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]
    return f"{r['seq']:>7}  {t}  {r['author'][:12]}  {r['kind']:<14} {one_line(r['body'])}"


def _lines(rows: list[Any], fmt: Any, empty: str) -> str:
    return "\n".join(fmt(r) for r in rows) if rows else empty


# -- actions -------------------------------------------------------------------------------
async def _publish(agent: Any, a: argparse.Namespace) -> Any:
    return await agent.publish(a.feed, a.kind, a.body)


async def _feeds(agent: Any, a: argparse.Namespace) -> Any:
    return await agent.list_feeds(a.prefix, a.limit)


async def _read(agent: Any, a: argparse.Namespace) -> Any:
    return await agent.read_feed(a.feed, a.since, a.limit)


async def _doc_cat(agent: Any, a: argparse.Namespace) -> dict[str, Any]:
    """The merged document: ``{feed, seq, head, text, roots}``; a feed without records is refused."""
    from pycrdt import Text

    ydoc, seq, head = await agent.doc_state(a.feed)
    if seq == 0:
        raise RelayError("not_found", f"{a.feed} has no records: there is no document to print")
    return {"feed": a.feed, "seq": seq, "head": head, "text": str(ydoc.get("text", type=Text)),
            "roots": roots_json(ydoc.get_update())}


# -- wiring --------------------------------------------------------------------------------
def register(sub: Any) -> None:
    p = add_command(sub, "publish", "sign and publish one event: colony publish FEED KIND JSON")
    p.add_argument("feed")
    p.add_argument("kind", help="the event kind, e.g. msg or note.add (namespaces define theirs)")
    p.add_argument("body", type=json_value, metavar="JSON", help="the body, a JSON value (quote strings: '\"hi\"')")
    client_args(p)
    agent_command(p, _publish, ack_line)

    p = add_command(sub, "feeds", "list feeds with records (private ones your --key may not read are hidden)")
    p.add_argument("prefix", nargs="?", default="", help="only feeds whose id starts with this (e.g. doc/)")
    p.add_argument("--limit", type=int, default=100)
    client_args(p, key="sign the listing with this key (optional; default $COLONY_KEY)")
    agent_command(p, _feeds, lambda rows: _lines(rows, lambda f: f"{f['feed']}  seq {f['seq']}  "
                                                  f"subscribers {f['subscribers']}", "(no feeds)"), signs=False)

    p = add_command(sub, "read", "print a feed's records after --since, verified (signatures, receipts, chain)")
    p.add_argument("feed")
    p.add_argument("--since", type=int, default=0, help="start after this seq (default 0: from the start)")
    p.add_argument("--limit", type=int, default=100, help="at most this many records (1..1000)")
    client_args(p, key="read as this key (a members or dm/ feed it may read; default $COLONY_KEY)")
    agent_command(p, _read, lambda rows: _lines(rows, record_line, "(no records)"), signs=False)

    doc = add_command(sub, "doc", "read and edit collaborative documents (the root Y.Text 'text')")
    dsub = doc.add_subparsers(dest="doc_command", required=True)

    p = add_command(dsub, "append", "append TEXT to the document's text as one signed Yjs edit (prints the seq)")
    p.add_argument("feed")
    p.add_argument("text")
    client_args(p)
    agent_command(p, lambda ag, a: ag.doc_append(a.feed, a.text), lambda r: str(r["seq"]))

    p = add_command(dsub, "insert", "insert TEXT before character INDEX (0: the start) as one signed edit")
    p.add_argument("feed")
    p.add_argument("index", type=int)
    p.add_argument("text")
    client_args(p)
    agent_command(p, lambda ag, a: ag.doc_insert(a.feed, a.index, a.text), lambda r: str(r["seq"]))

    p = add_command(dsub, "replace", "replace the one occurrence of OLD by NEW (refused if OLD is absent or "
                    "not unique)")
    p.add_argument("feed")
    p.add_argument("old")
    p.add_argument("new")
    client_args(p)
    agent_command(p, lambda ag, a: ag.doc_replace(a.feed, a.old, a.new), lambda r: str(r["seq"]))

    p = add_command(dsub, "cat", "print the merged text; --json: {feed, seq, head, text, roots: every root}; "
                    "a feed with no records is refused (exit 1)")
    p.add_argument("feed")
    client_args(p, key="read as this key (optional; default $COLONY_KEY)")
    agent_command(p, _doc_cat, lambda r: r["text"], signs=False)
