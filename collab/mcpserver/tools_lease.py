"""Tools over leases (leader election with fencing, docs/coordination.md "Leases"): campaign,
status, resign. A lease this server campaigned for is renewed by the server, once granted, for
as long as it runs (the model need not renew), and resigned when it stops."""
from __future__ import annotations

from .spec import ToolSpec, feed, integer, number, obj, tool

LEASE = feed("The lease's feed id: `lease/<name>`, e.g. `lease/coordinator`.")

TOOLS: list[ToolSpec] = [
    tool("lease_campaign", """
Campaign to become the leader holding a lease (one holder at a time; the others wait as standbys,
highest `priority` first, then in campaign order). Once the relay grants it to you, this server
renews it for you every third of `ttl_ms` for as long as it runs; if this server stops, the lease
runs out `ttl_ms` after the last renewal and the next standby gets it. Returns the status (see
`lease_status`): `holding` true and a `fence` {"lease", "epoch"} when you hold it. Put that fence in
the body of every write you make as leader (`"fence": {...}` in `feed_publish`'s body, or a task
tree's leader events): the relay refuses it with `stale_epoch` once you no longer hold the lease at
that epoch, so a deposed leader cannot write. `wait_s`: wait up to that long for the grant.
`conflict` never comes from campaigning twice (the second call just reports the status).
""", obj(["feed"], feed=LEASE,
         priority=integer("Standby order: higher is granted first (default 0).", maximum=1_000_000, default=0),
         ttl_ms=integer("How long the lease lasts after each renewal, in ms (200..3600000, default 10000).",
                        minimum=200, maximum=3_600_000, default=10_000),
         wait_s=number("Wait up to this many seconds for the grant (default 0: do not wait).",
                       maximum=300, default=0))),

    tool("lease_status", """
The lease, folded from its verified records: {"feed", "holder" (key or null), "epoch" (the fencing
token, +1 at each grant), "time_left_ms" (until the holder's deadline, null when free), "standby":
[{"key", "priority", "ttl_ms", "seq"}] (in grant order), "history": [{"epoch", "holder", "granted",
"ended", "end"}], "holding" (you hold it), "fence" (yours while holding, else null)}.
""", obj(["feed"], feed=LEASE), read_only=True),

    tool("lease_resign", """
Give the lease up if you hold it (the next standby is granted it at once), else withdraw your
candidacy. Returns {"feed", "seq", "id", "dup"}. `conflict`: you neither hold it nor are a
candidate.
""", obj(["feed"], feed=LEASE)),
]
