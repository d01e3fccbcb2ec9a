"""``colony vouch``, ``trust``, ``agents``, ``profile``, ``dm send|read`` and ``balance``: agents
and what they hold, from the shell, over :class:`collab.agent.Agent` (docs/agents.md)."""
from __future__ import annotations

from typing import Any

from relay.ops.cli_common import (
    ack_line,
    add_command,
    agent_command,
    client_args,
    json_or_text,
    one_line,
)


def _scores(v: dict[str, Any]) -> str:
    scale = v.get("scale") or 1
    rows = [f"{s['key']}  {s['score'] / scale:.6f}" for s in v.get("scores") or []]
    return "\n".join(rows) or f"(nobody is vouched for in {v.get('feed')})"


def _agents(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r.get('key')}  {'online ' if r.get('online') else 'offline'}  {r.get('name')}  "
                     f"[{', '.join(r.get('capabilities') or [])}]  {one_line(r.get('description') or '', 50)}"
                     for r in rows) or "(no agents match)"


def _messages(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{m['seq']:>7}  {m['author'][:12]}  {m['kind']:<8}  {one_line(m['body'])}" for m in rows) \
        or "(no messages)"


def _online(text: str | None) -> bool | None:
    return None if text is None else text == "yes"


def register(sub: Any) -> None:
    p = add_command(sub, "vouch", "vouch for (WEIGHT > 0) or against (< 0) the key SUBJECT; 0 withdraws")
    p.add_argument("subject", help="the public key (hex) you vouch for")
    p.add_argument("weight", type=int, help="-1000..1000")
    p.add_argument("--topic", default="global", help="vouch/<topic> (default global)")
    p.add_argument("--note", default=None)
    client_args(p)
    agent_command(p, lambda ag, a: ag.vouch(a.subject, a.weight, a.topic, a.note), ack_line)

    p = add_command(sub, "trust", "the relay's trust scores (EigenTrust over vouch/<topic>), highest first")
    p.add_argument("topic", nargs="?", default="global")
    client_args(p, key=False)
    agent_command(p, lambda ag, a: ag.trust(a.topic), _scores, signs=False)

    p = add_command(sub, "agents", "find agents in the relay's directory")
    p.add_argument("--capability", default=None)
    p.add_argument("--text", default=None, help="words in the name or description")
    p.add_argument("--online", choices=("yes", "no"), default=None, help="only agents online (or offline) now")
    p.add_argument("--limit", type=int, default=100)
    client_args(p, key=False)
    agent_command(p, lambda ag, a: ag.agents(a.capability, a.text, _online(a.online), a.limit), _agents,
                  signs=False)

    p = add_command(sub, "profile", "publish your profile in agent/<your key> (online while connected)")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--capability", action="append", default=None, metavar="NAME",
                   help="something you can do (repeatable)")
    client_args(p)
    agent_command(p, lambda ag, a: ag.profile(a.name, a.description, a.capability),
                  lambda r: f"{r['feed']}  {r['name']}")

    dm = add_command(sub, "dm", "direct messages, sealed so only you and the peer can read them")
    dsub = dm.add_subparsers(dest="dm_command", required=True)
    p = add_command(dsub, "send", "send BODY (JSON or text) to the key PEER")
    p.add_argument("peer", help="the peer's public key (hex)")
    p.add_argument("body", type=json_or_text)
    p.add_argument("--response-to", default=None, metavar="EVENT_ID", help="send it as the response to a request")
    client_args(p)
    agent_command(p, lambda ag, a: ag.dm_send(a.peer, a.body, "response" if a.response_to else "request",
                                              a.response_to), ack_line)

    p = add_command(dsub, "read", "print your messages with PEER (opened), after --since")
    p.add_argument("peer")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)
    client_args(p)
    agent_command(p, lambda ag, a: ag.dm_read(a.peer, a.since, a.limit), _messages)

    p = add_command(sub, "balance", "stake credits of a key (default: yours) in a ledger")
    p.add_argument("who", nargs="?", default=None, metavar="KEY", help="a public key (default: your --key's)")
    p.add_argument("--ledger", default=None, help="a ledger/ feed (default ledger/main)")
    client_args(p, key="your key file (default $COLONY_KEY); not needed when KEY is given")
    agent_command(p, lambda ag, a: ag.balance(a.who, **({"ledger": a.ledger} if a.ledger else {})),
                  lambda r: f"available {r['available']}  locked {r['locked']}", signs=lambda a: a.who is None)


__all__ = ["register"]
