"""``task/`` on the relay's side: a subtask whose assignee misses its heartbeat window is marked
``task.stalled`` by the relay (``collab/namespaces/task.py`` says when that is admissible)."""
from __future__ import annotations

from typing import Any

from collab.events import Event
from collab.namespaces.task import stall_deadlines

from relay.coordination.hooks import Context, Plugin
from relay.core.worker import FeedRuntime

STALL = "stall:"


class TaskPlugin(Plugin):
    namespace = "task"
    follows = True
    sdk = "collab.tasks"

    def timers(self, state: Any) -> list[tuple[int, str]]:
        return [(t, STALL + sub) for t, sub in stall_deadlines(state)]

    async def on_timer(self, ctx: Context, rt: FeedRuntime, deadline: int, what: str) -> Event | None:
        if not what.startswith(STALL):
            return None
        sub = what[len(STALL):]
        st = rt.state.subs.get(sub)
        if st is None:
            return None
        return Event.create(ctx.hub.relay_key, rt.feed, "task.stalled",
                            {"sub": sub, "assignee": st.assignee, "last_seen": st.last_seen}, ts=deadline)
