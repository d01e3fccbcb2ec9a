"""``colony auction open|list|bid|status|deliver|accept|reject`` and ``colony task ...``: task
auctions and task trees from the shell, over :class:`collab.agent.Agent` (docs/agents.md)."""
from __future__ import annotations

from typing import Any

from relay.ops.cli_common import (
    ack_line,
    add_command,
    agent_command,
    client_args,
    json_or_text,
    json_value,
    one_line,
)


def _auction_row(x: dict[str, Any]) -> str:
    return (f"{x['feed']}  {x['status']}  reward {x['reward']}  min stake {x['min_stake']}  bids {x['bids']}  "
            f"{one_line(x['task'], 60)}")


def _auction_status(v: dict[str, Any]) -> str:
    lines = [f"{v['feed']}: {v['status']} (seq {v['seq']})", f"requester {v['requester']}",
             f"task {one_line(v['task'])}"]
    lines += [f"bid {b['key']} stake {b['stake']}" for b in v.get("bids") or []]
    if v.get("assignee"):
        lines.append(f"assignee {v['assignee']}")
    if v.get("result") is not None:
        lines.append(f"result {one_line(v['result'])}")
    return "\n".join(lines)


def _task_status(v: dict[str, Any]) -> str:
    p = v.get("progress") or {}
    head = f"{v['feed']}: {v['status']}  {one_line(v.get('title'))}  leader {v.get('leader')}  progress {one_line(p)}"
    lines = [head]
    for s in v.get("subtasks") or []:
        prog = s.get("progress") or {}
        lines.append(f"  {s['sub']}  {s['status']}{' (stalled)' if s.get('stalled') else ''}  {s['assignee'][:12]}  "
                     f"{prog.get('done', 0)}/{prog.get('total', 0)}  {one_line(s.get('title'), 50)}")
    return "\n".join(lines)


def _assigned(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['feed']}  {r['sub']}  {r['status']}  {one_line(r['title'], 60)}" for r in rows) \
        or "(nothing assigned to this key)"


def _resume(r: dict[str, Any]) -> str:
    if r["checkpoint_seq"] == 0:
        return f"# {r['feed']} {r['sub']}: no checkpoint, start fresh\nnull"
    return f"# {r['feed']} {r['sub']}: checkpoint at seq {r['checkpoint_seq']}\n{one_line(r['checkpoint'], 10_000)}"


def register(sub: Any) -> None:
    auction = add_command(sub, "auction", "task auctions (auction/ feeds): open, list, bid, status, deliver, decide")
    asub = auction.add_subparsers(dest="auction_command", required=True)

    p = add_command(asub, "open", "open an auction for TASK (JSON or text); the reward is escrowed from your balance")
    p.add_argument("feed", help="auction/<name>")
    p.add_argument("task", type=json_or_text, help="what to do (a JSON value, or plain text)")
    p.add_argument("--bid-window", type=int, default=10_000, metavar="MS", help="bidding time (default 10000 ms)")
    p.add_argument("--result-window", type=int, default=600_000, metavar="MS",
                   help="time the assignee has to deliver (default 600000 ms)")
    p.add_argument("--reward", type=int, default=0)
    p.add_argument("--min-stake", type=int, default=0)
    client_args(p)
    agent_command(p, lambda ag, a: ag.auction_open(a.feed, a.task, a.bid_window, a.result_window, a.reward,
                                                   a.min_stake), ack_line)

    p = add_command(asub, "list", "list auctions (default: open ones)")
    p.add_argument("prefix", nargs="?", default="auction/")
    p.add_argument("--status", default="open", help="open, awarded, completed, ... or 'any' (default open)")
    client_args(p, key="sign the reads with this key (optional)")
    agent_command(p, lambda ag, a: ag.auction_list(a.prefix, None if a.status == "any" else a.status),
                  lambda rows: "\n".join(map(_auction_row, rows)) or "(no auctions)", signs=False)

    p = add_command(asub, "bid", "bid STAKE (locked from your balance until the auction settles)")
    p.add_argument("feed")
    p.add_argument("stake", type=int)
    p.add_argument("--note", default=None)
    client_args(p)
    agent_command(p, lambda ag, a: ag.auction_bid(a.feed, a.stake, a.note), ack_line)

    p = add_command(asub, "status", "the auction's state, folded from its verified records")
    p.add_argument("feed")
    client_args(p, key="sign the subscription with this key (optional)")
    agent_command(p, lambda ag, a: ag.auction_status(a.feed), _auction_status, signs=False)

    p = add_command(asub, "deliver", "post the result (the assignee, before its result deadline)")
    p.add_argument("feed")
    p.add_argument("result", type=json_or_text, help="a JSON value, or plain text")
    client_args(p)
    agent_command(p, lambda ag, a: ag.auction_deliver(a.feed, a.result), ack_line)

    p = add_command(asub, "accept", "accept the delivered result (the requester): reward and stake are paid out")
    p.add_argument("feed")
    client_args(p)
    agent_command(p, lambda ag, a: ag.auction_accept(a.feed), ack_line)

    p = add_command(asub, "reject", "reject the result (the requester): the stake is slashed, the next bidder gets it")
    p.add_argument("feed")
    p.add_argument("reason", nargs="?", default="")
    client_args(p)
    agent_command(p, lambda ag, a: ag.auction_reject(a.feed, a.reason), ack_line)

    _register_task(sub)


def _register_task(sub: Any) -> None:
    task = add_command(sub, "task", "task trees (task/ feeds): a leader spawns subtasks, assignees report")
    tsub = task.add_subparsers(dest="task_command", required=True)

    p = add_command(tsub, "open", "open a task; your key becomes its leader")
    p.add_argument("feed", help="task/<name>")
    p.add_argument("title")
    p.add_argument("--input", type=json_value, default=None, metavar="JSON")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_open(a.feed, a.title, a.input), ack_line)

    p = add_command(tsub, "spawn", "assign subtask SUB to the key ASSIGNEE (the leader)")
    p.add_argument("feed")
    p.add_argument("sub")
    p.add_argument("assignee", help="the assignee's public key (hex)")
    p.add_argument("title")
    p.add_argument("--input", type=json_value, default=None, metavar="JSON")
    p.add_argument("--heartbeat", type=int, default=30_000, metavar="MS",
                   help="the subtask stalls when the assignee is silent this long (default 30000)")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_spawn(a.feed, a.sub, a.assignee, a.title, a.input, a.heartbeat),
                  ack_line)

    p = add_command(tsub, "progress", "report DONE of TOTAL on subtask SUB (the assignee; also a heartbeat)")
    p.add_argument("feed")
    p.add_argument("sub")
    p.add_argument("done", type=int)
    p.add_argument("total", type=int)
    p.add_argument("--note", default=None)
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_progress(a.feed, a.sub, a.done, a.total, a.note), ack_line)

    p = add_command(tsub, "checkpoint", "save STATE (JSON) of subtask SUB; a successor resumes from it")
    p.add_argument("feed")
    p.add_argument("sub")
    p.add_argument("state", type=json_value, metavar="JSON")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_checkpoint(a.feed, a.sub, a.state), ack_line)

    p = add_command(tsub, "done", "complete subtask SUB with an optional RESULT (JSON or text)")
    p.add_argument("feed")
    p.add_argument("sub")
    p.add_argument("result", nargs="?", type=json_or_text, default=None)
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_done(a.feed, a.sub, a.result), ack_line)

    p = add_command(tsub, "fail", "give up subtask SUB, saying why")
    p.add_argument("feed")
    p.add_argument("sub")
    p.add_argument("reason")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_fail(a.feed, a.sub, a.reason), ack_line)

    p = add_command(tsub, "finish", "close the task (the leader)")
    p.add_argument("feed")
    p.add_argument("--status", default="completed", choices=("completed", "failed", "cancelled"))
    p.add_argument("--result", type=json_or_text, default=None, metavar="JSON")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_finish(a.feed, a.status, a.result), ack_line)

    p = add_command(tsub, "status", "the task and its subtasks, folded from the verified records")
    p.add_argument("feed")
    client_args(p, key="sign the subscription with this key (optional)")
    agent_command(p, lambda ag, a: ag.task_status(a.feed), _task_status, signs=False)

    p = add_command(tsub, "assigned", "open subtasks assigned to your key")
    p.add_argument("prefix", nargs="?", default="task/")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_assigned(a.prefix), _assigned)

    p = add_command(tsub, "resume", "print the last checkpoint of subtask SUB (yours) to resume from")
    p.add_argument("feed")
    p.add_argument("sub")
    client_args(p)
    agent_command(p, lambda ag, a: ag.task_resume(a.feed, a.sub), _resume)


__all__ = ["register"]
