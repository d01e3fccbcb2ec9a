"""Task trees from the leader's and the workers' side (docs/coordination.md, "Task trees").

A leader spawns subtasks on ``task/<id>`` (a leader may lead through a lease, collab.lease: its
events then carry the lease's fence, and a standby granted the lease takes the tree over); a
worker reports heartbeats, progress and checkpoints; the relay flags a subtask ``stalled``
when its heartbeat window passes. The leader's :meth:`TaskLeader.supervise` escalates each
stall: it reassigns the subtask to another agent, who resumes from the last checkpoint
(:meth:`TaskWorker.start` returns it), or puts it up for auction and reassigns it to the winner.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .auctions import Auction
from .errors import ColonyError
from .feedview import FeedView
from .namespaces.task import TERMINAL, SubState, TaskNamespace, TaskState, progress

if TYPE_CHECKING:
    from .client import Client
    from .lease import Lease
    from .protocol import Ack

log = logging.getLogger(__name__)

#: ``choose(sub_state) -> key | None``: who takes over a stalled subtask (None: leave it)
Chooser = Callable[[SubState], str | Awaitable[str | None] | None]


class TaskLeader(FeedView[TaskState]):
    """The leader's handle on ``task/<id>``: spawn, watch progress, escalate stalls, close."""

    def __init__(self, client: Client, feed: str, lease: Lease | None = None) -> None:
        super().__init__(client, feed, TaskNamespace())
        self.lease = lease  # led through a lease: every leader event carries its fence
        self._supervisor: asyncio.Task[None] | None = None
        self.escalations: list[tuple[str, str, str]] = []  # (sub, from key, to key)

    async def __aenter__(self) -> TaskLeader:
        await self.start()
        await self.wait_synced(30)
        return self

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await super().close()

    async def _lead(self, kind: str, body: dict[str, Any]) -> Ack:
        if self.lease is not None:
            body = self.lease.fenced(body)
        return await self.client.publish(self.feed, kind, body)

    async def open(self, title: str, input: Any = None) -> Ack:
        body: dict[str, Any] = {"title": title}
        if self.lease is not None:
            body["lease"] = self.lease.feed
        if input is not None:
            body["input"] = input
        return await self._lead("task.open", body)

    async def spawn(self, sub: str, assignee: str, title: str, *, input: Any = None, heartbeat_ms: int = 30_000,
                    parent: str | None = None) -> Ack:
        body: dict[str, Any] = {"sub": sub, "assignee": assignee, "title": title, "heartbeat_ms": heartbeat_ms}
        if input is not None:
            body["input"] = input
        if parent is not None:
            body["parent"] = parent
        return await self._lead("task.spawn", body)

    async def reassign(self, sub: str, assignee: str, auction: str | None = None) -> Ack:
        body: dict[str, Any] = {"sub": sub, "assignee": assignee}
        if auction is not None:
            body["auction"] = auction
        return await self._lead("task.reassign", body)

    async def reply(self, sub: str, answer: Any) -> Ack:
        return await self._lead("task.reply", {"sub": sub, "answer": answer})

    async def cancel(self, sub: str) -> Ack:
        return await self._lead("task.cancel", {"sub": sub})

    async def finish(self, status: str = "completed", result: Any = None) -> Ack:
        body: dict[str, Any] = {"status": status}
        if result is not None:
            body["result"] = result
        return await self._lead("task.close", body)

    def progress(self) -> dict[str, Any]:
        """Aggregate progress over the subtasks (counts per status, done/total, percent)."""
        return progress(self.state)

    async def wait_all_done(self, timeout: float | None = 60.0) -> TaskState:
        """Until every subtask is terminal (completed, failed or cancelled)."""
        return await self.wait_for(lambda s: s.subs and all(x.status in TERMINAL for x in s.subs.values()),
                                   timeout)

    # -- escalation --------------------------------------------------------------------------
    def supervise(self, choose: Chooser) -> None:
        """Escalate every stalled subtask: reassign it to ``choose(sub)`` (skipped if None)."""
        if self._supervisor is not None:
            raise RuntimeError("this leader is already supervising")
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(choose),
                                                                  name=f"supervise:{self.feed}")

    async def _supervise(self, choose: Chooser) -> None:
        handled: set[tuple[str, int]] = set()
        while True:
            state = await self.wait_for(
                lambda s: any(x.stalled and (x.sub, x.last_seen) not in handled for x in s.subs.values()), None)
            for x in list(state.subs.values()):
                if not x.stalled or (x.sub, x.last_seen) in handled:
                    continue
                handled.add((x.sub, x.last_seen))
                try:
                    to = choose(x)
                    if inspect.isawaitable(to):
                        to = await to
                    if to:
                        entry = (x.sub, x.assignee, to)
                        self.escalations.append(entry)  # before the record can arrive
                        try:
                            await self.reassign(x.sub, to)
                        except BaseException:
                            self.escalations.remove(entry)
                            raise
                except Exception:
                    log.exception("escalating %s/%s failed", self.feed, x.sub)

    async def auction_subtask(self, sub: str, auction_feed: str, *, bid_window_ms: int, result_window_ms: int,
                              min_stake: int = 0, reward: int = 0, timeout: float = 60.0) -> str | None:
        """Put a subtask up for auction and reassign it to the winner (None: nobody bid)."""
        x = self.state.subs[sub]
        async with Auction(self.client, auction_feed) as a:
            await a.open({"task": self.feed, "sub": sub, "title": x.title, "checkpoint_seq": x.checkpoint_seq},
                         bid_window_ms=bid_window_ms, result_window_ms=result_window_ms,
                         min_stake=min_stake, reward=reward)
            st = await a.wait_status("awarded", "unawarded", timeout=timeout)
        if st.assignee is None:
            return None
        await self.reassign(sub, st.assignee, auction=auction_feed)
        self.escalations.append((sub, x.assignee, st.assignee))
        return st.assignee


class TaskWorker(FeedView[TaskState]):
    """An assignee's handle on one subtask: resume, heartbeat, report, finish."""

    def __init__(self, client: Client, feed: str, sub: str) -> None:
        super().__init__(client, feed, TaskNamespace())
        self.sub = sub
        self._beat: asyncio.Task[None] | None = None

    async def start_work(self, timeout: float = 30.0) -> Any:
        """Follow the feed until this key holds the subtask; return the checkpoint to resume
        from (None when starting fresh) and start heartbeating at a third of the window."""
        if self._sub is None:
            await self.start()
        me = self.client.key.public_hex if self.client.key else None
        st = await self.wait_for(lambda s: self.sub in s.subs and s.subs[self.sub].assignee == me, timeout)
        x = st.subs[self.sub]
        self.beat(x.heartbeat_ms)
        return x.checkpoint if x.checkpoint_seq else None

    def beat(self, heartbeat_ms: int) -> None:
        """Heartbeat at a third of the subtask's window until done, failed, refused or closed
        (``start_work`` starts it; an agent that resumed otherwise may start it itself)."""
        if self._beat is None:
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat(max(0.1, heartbeat_ms / 3000)))

    async def _heartbeat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)  # the heartbeat cadence itself, not a wait for an event
            try:
                await self.client.publish(self.feed, "task.heartbeat", {"sub": self.sub})
            except ColonyError as exc:  # reassigned or finished (refused), or the client gave up: stop beating
                log.info("heartbeat of %s/%s stopped: %s", self.feed, self.sub, exc)
                return
            except Exception:  # not an answer of the relay: a bug, logged with its traceback; stop beating
                log.exception("heartbeat of %s/%s failed", self.feed, self.sub)
                return

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        await super().close()

    async def progress(self, done: int, total: int, note: str | None = None) -> Ack:
        body: dict[str, Any] = {"sub": self.sub, "done": done, "total": total}
        if note:
            body["note"] = note
        return await self.client.publish(self.feed, "task.progress", body)

    async def checkpoint(self, state: Any) -> Ack:
        return await self.client.publish(self.feed, "task.checkpoint", {"sub": self.sub, "state": state})

    async def ask(self, question: str, timeout: float | None = 60.0) -> Any:
        """Move to input-required and wait for the leader's answer."""
        await self.client.publish(self.feed, "task.input", {"sub": self.sub, "question": question})
        st = await self.wait_for(lambda s: s.subs[self.sub].status != "input-required", timeout)
        return st.subs[self.sub].answer

    async def done(self, result: Any = None) -> Ack:
        body: dict[str, Any] = {"sub": self.sub}
        if result is not None:
            body["result"] = result
        ack = await self.client.publish(self.feed, "task.done", body)
        await self.close_beat()
        return ack

    async def failed(self, reason: str) -> Ack:
        ack = await self.client.publish(self.feed, "task.failed", {"sub": self.sub, "reason": reason})
        await self.close_beat()
        return ack

    async def close_beat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
