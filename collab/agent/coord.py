"""Coordination actions of :class:`collab.agent.Agent`: task auctions and task trees, over the
SDK's :class:`collab.auctions.Auction`, :class:`collab.tasks.TaskLeader` and
:class:`collab.tasks.TaskWorker`. Status reads fold the feed locally from verified records
(the relay's word is not needed); listings ask the relay's views over HTTP."""
from __future__ import annotations

from typing import Any

from ..auctions import Auction
from ..errors import InvalidEvent, Unauthorized
from ..events import check_feed, namespace_of
from ..namespaces.task import TERMINAL
from ..tasks import TaskLeader, TaskWorker
from .core import AgentCore, _bound, ack_json


def _feed_of(namespace: str, feed: str) -> str:
    if namespace_of(check_feed(feed)) != namespace:
        raise InvalidEvent(f"expected a {namespace}/ feed, not {feed!r}")
    return feed


class CoordActions(AgentCore):
    # -- auctions ----------------------------------------------------------------------------
    async def auction_open(self, feed: str, task: Any, bid_window_ms: int, result_window_ms: int,
                           reward: int = 0, min_stake: int = 0) -> dict[str, Any]:
        """Open an auction for ``task``; the relay escrows ``reward`` from this key's balance."""
        a = Auction(self.client, _feed_of("auction", feed))
        return ack_json(await a.open(task, bid_window_ms=bid_window_ms, result_window_ms=result_window_ms,
                                     reward=reward, min_stake=min_stake), feed)

    async def auction_list(self, prefix: str = "auction/", status: str | None = "open",
                           limit: int = 100) -> list[dict[str, Any]]:
        """Auctions whose feed starts with ``prefix`` and whose status is ``status`` (None or "":
        any): ``{feed, status, requester, task, reward, min_stake, bid_deadline, bids, assignee}``."""
        _bound("limit", limit, 1, 1000)
        if not prefix.startswith("auction/"):
            raise InvalidEvent("an auction prefix starts with auction/")
        feeds = (await self.get_json("/feeds", {"prefix": prefix, "limit": limit})).get("feeds", [])
        out: list[dict[str, Any]] = []
        for row in feeds:
            info = await self.get_json(f"/feeds/{row['feed']}", missing={})
            view = info.get("state") or {}
            if status and view.get("status") != status:
                continue
            params = view.get("params") or {}
            out.append({"feed": row["feed"], "status": view.get("status"), "requester": view.get("requester"),
                        "task": view.get("task"), "reward": params.get("reward"), "min_stake": params.get("min_stake"),
                        "bid_deadline": (view.get("deadlines") or {}).get("bid"),
                        "bids": len(view.get("bids") or []), "assignee": view.get("assignee")})
        return out

    async def auction_bid(self, feed: str, stake: int, note: str | None = None) -> dict[str, Any]:
        """Bid ``stake`` (locked from this key's balance); refused ``late``, ``conflict`` (a
        second bid) or ``insufficient_funds``."""
        return ack_json(await Auction(self.client, _feed_of("auction", feed)).bid(stake, note), feed)

    async def auction_status(self, feed: str) -> dict[str, Any]:
        """The auction's state folded from its verified records (status, bids, ranking, winner,
        assignee, result, history)."""
        async with self.lock(_feed_of("auction", feed)), Auction(self.client, feed) as a:
            view: dict[str, Any] = a.ns.view(a.state)
            view["seq"] = a.seq
            return view

    async def auction_deliver(self, feed: str, result: Any) -> dict[str, Any]:
        """Post the result (only the assignee, before its result deadline)."""
        return ack_json(await Auction(self.client, _feed_of("auction", feed)).deliver(result), feed)

    async def auction_accept(self, feed: str) -> dict[str, Any]:
        """The requester accepts the delivered result (the reward and stake are paid out)."""
        return ack_json(await Auction(self.client, _feed_of("auction", feed)).accept(), feed)

    async def auction_reject(self, feed: str, reason: str = "") -> dict[str, Any]:
        """The requester rejects the result (the assignee's stake is slashed, the next one gets it)."""
        return ack_json(await Auction(self.client, _feed_of("auction", feed)).reject(reason), feed)

    # -- task trees --------------------------------------------------------------------------
    async def task_open(self, feed: str, title: str, input: Any = None) -> dict[str, Any]:
        """Open a task (this key becomes its leader)."""
        return ack_json(await TaskLeader(self.client, _feed_of("task", feed)).open(title, input), feed)

    async def task_spawn(self, feed: str, sub: str, assignee: str, title: str, input: Any = None,
                         heartbeat_ms: int = 30_000) -> dict[str, Any]:
        """The leader assigns subtask ``sub`` to ``assignee`` (a key)."""
        leader = TaskLeader(self.client, _feed_of("task", feed))
        return ack_json(await leader.spawn(sub, assignee, title, input=input, heartbeat_ms=heartbeat_ms), feed)

    async def task_progress(self, feed: str, sub: str, done: int, total: int,
                            note: str | None = None) -> dict[str, Any]:
        """The assignee reports progress (also a heartbeat)."""
        return ack_json(await TaskWorker(self.client, _feed_of("task", feed), sub).progress(done, total, note), feed)

    async def task_checkpoint(self, feed: str, sub: str, state: Any) -> dict[str, Any]:
        """The assignee saves ``state``; whoever takes the subtask over resumes from it."""
        return ack_json(await TaskWorker(self.client, _feed_of("task", feed), sub).checkpoint(state), feed)

    async def task_done(self, feed: str, sub: str, result: Any = None) -> dict[str, Any]:
        """Complete the subtask (its heartbeat, if ``task_resume`` started one, stops)."""
        return ack_json(await self._worker(feed, sub).done(result), feed)

    async def task_fail(self, feed: str, sub: str, reason: str) -> dict[str, Any]:
        """Give the subtask up (its heartbeat stops)."""
        return ack_json(await self._worker(feed, sub).failed(reason), feed)

    def _worker(self, feed: str, sub: str) -> TaskWorker:
        return self._workers.pop((feed, sub), None) or TaskWorker(self.client, _feed_of("task", feed), sub)

    async def task_finish(self, feed: str, status: str = "completed", result: Any = None) -> dict[str, Any]:
        """The leader closes the task (``completed``, ``failed`` or ``cancelled``)."""
        return ack_json(await TaskLeader(self.client, _feed_of("task", feed)).finish(status, result), feed)

    async def task_status(self, feed: str) -> dict[str, Any]:
        """The task folded from its verified records: leader, status, subtasks, progress."""
        async with self.lock(_feed_of("task", feed)), TaskLeader(self.client, feed) as t:
            view: dict[str, Any] = t.ns.view(t.state)
            view["feed"] = feed
            return view

    async def task_assigned(self, prefix: str = "task/", limit: int = 100) -> list[dict[str, Any]]:
        """Open subtasks assigned to this key, over the task feeds starting with ``prefix`` (the
        relay's views): ``{feed, sub, title, status, input, heartbeat_ms, checkpoint, stalled}``."""
        me = self.me
        _bound("limit", limit, 1, 1000)
        if not prefix.startswith("task/"):
            raise InvalidEvent("a task prefix starts with task/")
        feeds = (await self.get_json("/feeds", {"prefix": prefix, "limit": limit})).get("feeds", [])
        out: list[dict[str, Any]] = []
        for row in feeds:
            view = (await self.get_json(f"/feeds/{row['feed']}", missing={})).get("state") or {}
            if view.get("status") in TERMINAL:
                continue
            out.extend({"feed": row["feed"], "sub": s.get("sub"), "title": s.get("title"), "status": s.get("status"),
                        "input": s.get("input"), "heartbeat_ms": s.get("heartbeat_ms"),
                        "checkpoint": s.get("checkpoint"), "stalled": s.get("stalled")}
                       for s in view.get("subtasks") or []
                       if s.get("assignee") == me and s.get("status") not in TERMINAL)
        return out

    async def task_resume(self, feed: str, sub: str) -> dict[str, Any]:
        """Where to resume subtask ``sub`` from: ``{feed, sub, assignee, status, title, input,
        checkpoint, checkpoint_seq}`` (``checkpoint`` null and seq 0: start fresh), folded from
        the verified records. Refused (``unauthorized``) when this key does not hold it. From
        then on this Agent heartbeats the subtask (at a third of its window) until ``task_done``,
        ``task_fail``, a refusal (reassigned, closed) or the Agent closes."""
        me = self.me
        async with self.lock(_feed_of("task", feed)), TaskWorker(self.client, feed, sub) as w:
            await w.wait_synced(self.timeout)
            x = w.state.subs.get(sub)
        if x is None:
            raise InvalidEvent(f"{feed} has no subtask {sub!r}")
        if x.assignee != me:
            raise Unauthorized(f"{feed}/{sub} is assigned to {x.assignee}, not to this key")
        if x.status not in TERMINAL and (feed, sub) not in self._workers:
            worker = self._workers[(feed, sub)] = TaskWorker(self.client, feed, sub)
            worker.beat(x.heartbeat_ms)  # held while this Agent lives: the relay does not flag it stalled
        return {"feed": feed, "sub": sub, "assignee": x.assignee, "status": x.status, "title": x.title,
                "input": x.input, "checkpoint": x.checkpoint if x.checkpoint_seq else None,
                "checkpoint_seq": x.checkpoint_seq}
