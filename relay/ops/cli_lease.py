"""``colony lease campaign|status|resign|watch``: leader election from the shell, over
:class:`collab.agent.Agent` (docs/agents.md, docs/coordination.md "Leases")."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from relay.ops.cli_common import ack_line, add_command, agent_command, client_args


def _status(v: dict[str, Any]) -> str:
    head = (f"{v['feed']}: " + (f"held by {v['holder']} epoch {v['epoch']}, {v['time_left_ms']} ms left"
                                if v.get("holder") else f"free (last epoch {v['epoch']})"))
    lines = [head + ("  (you)" if v.get("holding") else "")]
    lines += [f"  standby {c['key']} priority {c['priority']} ttl {c['ttl_ms']} ms" for c in v.get("standby") or []]
    lines += [f"  epoch {h['epoch']} {h['holder'][:16]} {h['end'] or 'holding'}" for h in v.get("history") or []]
    return "\n".join(lines)


async def _campaign(ag: Any, a: argparse.Namespace) -> dict[str, Any]:
    st: dict[str, Any] = await ag.lease_campaign(a.feed, a.priority, a.ttl_ms, 0.0 if a.hold else a.wait, a.hold)
    if not a.hold:
        return st
    # renewing in the background until the lease is lost or the command is interrupted
    st = await ag.lease_hold(a.feed, lambda epoch: print(f"granted {a.feed} epoch {epoch}", flush=True))
    print(f"lost {a.feed}", flush=True)
    return st


def _watch(ag: Any, a: argparse.Namespace) -> Any:
    from collab.agent.lease import lease_line

    return ag.lease_watch(a.feed, lambda rec: print(lease_line(rec), flush=True), a.count, a.renewals,
                          lambda seq: print(f"# following {a.feed} after seq {seq}", file=sys.stderr, flush=True))


def register(sub: Any) -> None:
    lease = add_command(sub, "lease", "leader election (lease/ feeds): campaign, status, resign, watch")
    lsub = lease.add_subparsers(dest="lease_command", required=True)

    p = add_command(lsub, "campaign", "join the candidates of a lease (the candidacy stays after the command); "
                                      "--hold keeps the lease (renewing) until interrupted or lost")
    p.add_argument("feed")
    p.add_argument("--priority", type=int, default=0, help="higher is granted first (default 0)")
    p.add_argument("--ttl-ms", type=int, default=10_000, metavar="MS",
                   help="the lease ends this long after the last renewal (200..3600000, default 10000)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for the grant")
    p.add_argument("--hold", action="store_true",
                   help="wait for the grant, print 'granted FEED epoch N', renew every TTL/3 until the lease is "
                        "lost (prints 'lost ...') or the command is interrupted (it then resigns)")
    client_args(p)
    agent_command(p, _campaign, _status)

    p = add_command(lsub, "status", "holder, epoch, time left, standby queue and history, from the verified records")
    p.add_argument("feed")
    client_args(p, key="sign the subscription with this key (optional; shows whether you hold it)")
    agent_command(p, lambda ag, a: ag.lease_status(a.feed), _status, signs=False)

    p = add_command(lsub, "resign", "resign the lease if you hold it, else withdraw your candidacy")
    p.add_argument("feed")
    client_args(p)
    agent_command(p, lambda ag, a: ag.lease_resign(a.feed), ack_line)

    p = add_command(lsub, "watch", "print the lease's records as they happen (campaign, granted, expired, resign, ...)")
    p.add_argument("feed")
    p.add_argument("--count", type=int, default=None, help="exit after this many records")
    p.add_argument("--renewals", action="store_true", help="print renewals too")
    client_args(p, key="sign the subscription with this key (optional)")
    agent_command(p, _watch, _status, signs=False)


__all__ = ["register"]
