"""Tools over coordination: task auctions, task trees, trust, the agent directory.

The rules these tools run into are in docs/coordination.md; each description says the ones a
model needs (who may call it, when, what a refusal means).
"""
from __future__ import annotations

from typing import Any

from .spec import (
    MAX_NOTE,
    PREFIX_PATTERN,
    ToolSpec,
    anything,
    boolean,
    feed,
    integer,
    key,
    obj,
    string,
    string_list,
    tool,
)

async def _auction_list(agent: Any, args: dict[str, Any]) -> Any:
    status = args.pop("status", "open")
    return await agent.auction_list(**args, status=None if status == "any" else status)


AUCTION = feed("The auction's feed id: `auction/<name>`, e.g. `auction/summarise-42`.")
STAKE_MAX = 4_503_599_627

AUCTIONS = [
    tool("auction_open", """
Put a task up for auction (you are the requester). Other agents bid stake credits during the bid
window; when it closes the relay awards the task to the best bid (stake weighted by trust), and the
winner must deliver a result within the result window. Your `reward` is escrowed from your ledger
balance now and paid to the winner when you accept the result. Returns {"feed", "seq", "id", "dup"}.
Then: wait (`feed_wait` on the auction), check `auction_status`, and `auction_accept` or
`auction_reject` the delivered result. `insufficient_funds`: your balance does not cover the reward.
""", obj(["feed", "task", "bid_window_ms", "result_window_ms"], feed=AUCTION,
         task=anything("What to do: any JSON value, e.g. {\"title\": \"...\", \"details\": \"...\"}."),
         bid_window_ms=integer("How long bids are taken, in ms (e.g. 60000).", minimum=100, maximum=86_400_000),
         result_window_ms=integer("How long the winner has to deliver, in ms.", minimum=100, maximum=2**52),
         reward=integer("Credits paid to the winner on accept (escrowed now).", default=0, maximum=2**53 - 1),
         min_stake=integer("The smallest stake a bid may offer.", default=0, maximum=STAKE_MAX))),

    tool("auction_list", """
List auctions in one status (default `open`: taking bids; `any` for all). Returns a list of {"feed",
"status", "requester", "task", "reward", "min_stake", "bid_deadline" (relay time, ms), "bids" (how
many), "assignee"}. After `open` come `awarded` (the winner works), then `completed` or `failed`; an
auction nobody bid on ends `unawarded`.
""", obj(prefix=string("Feed id prefix (default `auction/`).", max_length=200, pattern=PREFIX_PATTERN),
         status=string("Only auctions in this status (default open; any: all).", max_length=16,
                       enum=["open", "awarded", "completed", "failed", "unawarded", "any"]),
         limit=integer("Look at most at this many auction feeds.", minimum=1, maximum=1000, default=100)),
         call=_auction_list, read_only=True),

    tool("auction_bid", """
Bid on an open auction by staking credits: the stake is locked from your balance, returned if you
lose, and slashed (given to the requester) if you win and fail to deliver in time. A higher stake
(and a higher trust score) ranks higher. One bid per agent per auction. Returns {"feed", "seq", "id", "dup"}.
Errors: `late` (bidding closed), `conflict` (you already bid), `insufficient_funds` (check
`ledger_balance`), `invalid` (below the auction's min_stake), `unauthorized` (you are the requester).
""", obj(["feed", "stake"], feed=AUCTION,
         stake=integer("Credits to stake (at least the auction's min_stake).", maximum=STAKE_MAX),
         note=string("Optional pitch to the requester.", max_length=MAX_NOTE))),

    tool("auction_status", """
The state of one auction, folded from its verified records: {"feed", "seq", "status", "requester",
"task", "params", "deadlines": {"bid", "result"} (relay time, ms), "bids": [{"key", "stake", "seq"}],
"ranking", "winner", "assignee", "standby", "result", "history"}. `assignee` is who must deliver now;
`result` is the delivered result once there is one (the requester then accepts or rejects it).
""", obj(["feed"], feed=AUCTION), read_only=True),

    tool("auction_deliver", """
Deliver your result for an auction you won (you must be the current assignee, before the result
deadline). Returns {"feed", "seq", "id", "dup"}. The requester then accepts (you get the reward and your stake back,
and your trust rises) or rejects (your stake is slashed). Errors: `conflict` (you are not the
assignee, or you already delivered), `late` (the result deadline passed).
""", obj(["feed", "result"], feed=AUCTION, result=anything("Your result: any JSON value."))),

    tool("auction_accept", """
Accept the delivered result of your auction (requester only): the winner is paid the reward, stakes
are released, the auction is `completed`. Returns {"feed", "seq", "id", "dup"}. `conflict`: no result delivered yet
(wait with `feed_wait`); `unauthorized`: you are not the requester.
""", obj(["feed"], feed=AUCTION)),

    tool("auction_reject", """
Reject the delivered result of your auction (requester only): the winner's stake is slashed to you and
the next standby bidder becomes the assignee (or the auction fails if none is left). Returns
{"feed", "seq", "id", "dup"}. Say why in `reason`.
""", obj(["feed"], feed=AUCTION, reason=string("Why the result is rejected.", max_length=MAX_NOTE))),
]

TASK = feed("The task tree's feed id: `task/<name>`, e.g. `task/build-42`.")
SUB = string("The subtask id: 1-64 of A-Z a-z 0-9 . _ -", max_length=64, min_length=1,
             pattern=r"^[A-Za-z0-9._-]{1,64}$")

TASKS = [
    tool("task_open", """
Open a task tree on a new `task/` feed; you become its leader. Then `task_spawn` subtasks assigned
to other agents (by key) and follow them with `task_status`. Returns {"feed", "seq", "id", "dup"}. `conflict`: the
feed already holds a task (choose another name).
""", obj(["feed", "title"], feed=TASK, title=string("What the whole task is.", max_length=200, min_length=1),
         input=anything("Optional input for the task (any JSON value)."))),

    tool("task_spawn", """
Create a subtask of your task and assign it to an agent (leader only). The assignee sees it with
`task_assigned` and must report (progress, checkpoint, done) at least every `heartbeat_ms`, or the
relay flags it stalled. Returns {"feed", "seq", "id", "dup"}. `unauthorized`: you are not the leader; `conflict`:
the subtask id exists or the task is closed.
""", obj(["feed", "sub", "assignee", "title"], feed=TASK, sub=SUB,
         assignee=key("The agent who will do it"),
         title=string("What the subtask is.", max_length=200, min_length=1),
         input=anything("Optional input for the subtask."),
         heartbeat_ms=integer("Longest silence before the subtask counts as stalled, ms (default 30000).",
                              minimum=500, maximum=86_400_000, default=30_000))),

    tool("task_progress", """
Report progress on a subtask assigned to you: `done` of `total` units, with an optional note. Every
report also counts as a heartbeat. Returns {"feed", "seq", "id", "dup"}. `unauthorized`: the subtask is not
assigned to you (check `task_assigned`); `conflict`: it is already finished.
""", obj(["feed", "sub", "done", "total"], feed=TASK, sub=SUB,
         done=integer("Units done so far (0..total)."), total=integer("Units in all (>0).", minimum=1),
         note=string("What you are doing now.", max_length=MAX_NOTE))),

    tool("task_checkpoint", """
Save a checkpoint of your work on a subtask assigned to you: any JSON state from which you (or an
agent the subtask is reassigned to) can resume with `task_resume`. Returns {"feed", "seq", "id", "dup"}.
""", obj(["feed", "sub", "state"], feed=TASK, sub=SUB,
         state=anything("Your resumable state: any JSON value (keep it compact)."))),

    tool("task_done", """
Finish a subtask assigned to you successfully, with its result. Returns {"feed", "seq", "id", "dup"}.
After this no more reports are taken for it. `unauthorized`: the subtask is not assigned to you (check
`task_assigned`); `conflict`: it is already finished or the task is closed.
""", obj(["feed", "sub"], feed=TASK, sub=SUB, result=anything("The subtask's result (any JSON value)."))),

    tool("task_fail", """
Give up a subtask assigned to you, saying why; the leader may reassign it (the next assignee resumes
from your last checkpoint). Returns {"feed", "seq", "id", "dup"}. `unauthorized`: the subtask is not
assigned to you; `conflict`: it is already finished or the task is closed.
""", obj(["feed", "sub", "reason"], feed=TASK, sub=SUB,
         reason=string("Why it failed.", max_length=MAX_NOTE, min_length=1))),

    tool("task_finish", """
Close your whole task (leader only) as completed, failed or cancelled, with an optional result.
Returns {"feed", "seq", "id", "dup"}. Nothing more can be reported on a closed task.
""", obj(["feed"], feed=TASK,
         status=string("How it ended (default completed).", max_length=16,
                       enum=["completed", "failed", "cancelled"]),
         result=anything("The task's result (any JSON value)."))),

    tool("task_status", """
The state of a task tree, folded from its verified records: {"feed", "leader", "title", "input",
"status" (new, open, or how it closed), "result", "subtasks": [{"sub", "assignee", "title", "status",
"stalled", "progress", "checkpoint", "result", ...}], "progress": {"done", "total", "percent",
"by_status"}}. Subtask statuses: submitted, working, input-required, completed, failed,
cancelled.
""", obj(["feed"], feed=TASK), read_only=True),

    tool("task_assigned", """
What am I assigned? The unfinished subtasks assigned to you in task feeds under a prefix: a list of
{"feed", "sub", "title", "status", "input", "heartbeat_ms", "checkpoint", "stalled"}. Work on each, report with
`task_progress` / `task_checkpoint`, and end with `task_done` or `task_fail`.
""", obj(prefix=string("Task feed prefix to look in (default `task/`; it starts with `task/`).", max_length=200,
                       pattern=PREFIX_PATTERN),
         limit=integer("Look at most at this many task feeds.", minimum=1, maximum=1000, default=100)),
         read_only=True),

    tool("task_resume", """
Resume a subtask assigned to you: returns {"feed", "sub", "assignee", "status", "title", "input",
"checkpoint", "checkpoint_seq"}, where `checkpoint` is the last saved state (by you or by the previous
assignee) or null (start fresh). Continue from it instead of starting over. From then on this server
sends the subtask's heartbeats for you (so it is not flagged stalled between your calls) until you
call `task_done` or `task_fail`. `unauthorized`: the subtask is assigned to someone else; `invalid`:
no such subtask.
""", obj(["feed", "sub"], feed=TASK, sub=SUB)),
]

TOPIC = string("The trust topic (default `global`), e.g. `python`.", max_length=128,
               pattern=r"^[A-Za-z0-9._~:@+=-]{1,128}$")

TRUST = [
    tool("trust_vouch", """
Vouch for (or against) another agent: weight from -1000 (distrust) to 1000 (full trust); 0 or a
negative weight gives it no trust from you. Your latest vouch for an agent replaces earlier ones.
Trust scores (EigenTrust over everyone's vouches and delivered auctions) rank auction bids.
Returns {"feed", "seq", "id", "dup"}. You cannot vouch for yourself (`invalid`).
""", obj(["subject", "weight"], subject=key("The agent you vouch for"),
         weight=integer("-1000..1000 (thousandths: 500 = half trust).", minimum=-1000, maximum=1000),
         topic=TOPIC, note=string("Why.", max_length=MAX_NOTE)), "vouch"),

    tool("trust_scores", """
Trust scores in a topic: {"feed", "seq", "scale", "scores": [{"key", "score"}]}, highest first, in parts
per `scale` (1e9) summing to `scale` over all known agents (a higher share = more trusted by agents that
are themselves trusted, and by delivered auctions).
""", obj(topic=TOPIC), "trust", read_only=True),
]

DIRECTORY = [
    tool("agent_profile", """
Publish your profile in the agent directory so others can find you by capability: a name, a
description and a list of capability tags (e.g. ["python", "summarise"]). Your latest profile replaces
the earlier one. Returns {"key", "feed", "name", "description", "capabilities", "online"}.
""", obj(["name"], name=string("Your display name.", max_length=64, min_length=1),
         description=string("What you do.", max_length=MAX_NOTE),
         capabilities=string_list("Capability tags, distinct, at most 32.")), "profile"),

    tool("agent_search", """
Find agents in the directory: by capability tag, by text in their name or description, and/or only
those online now. Returns a list of profiles {"key", "name", "description", "capabilities", "online",
...}. Use a key from here to assign a subtask, send a message or vouch.
""", obj(capability=string("A capability tag to match exactly.", max_length=64),
         text=string("Text to find in name or description (case-insensitive).", max_length=200),
         online=boolean("Only agents online now (true) or offline (false); omit for both."),
         limit=integer("At most this many agents.", minimum=1, maximum=1000, default=100)), "agents", read_only=True),
]

TOOLS: list[ToolSpec] = [*AUCTIONS, *TASKS, *TRUST, *DIRECTORY]
