"""The coordination scenes of ``colony demo`` (docs/coordination.md), run beside the doc editing.

1. *Vouching*: the agents vouch for each other in ``vouch/global``.
2. *Auction*: the planner auctions a review; the best-ranked bidder wins and then fails to
   deliver, the relay expires it (its stake is slashed), the first standby takes over,
   delivers, and the planner accepts (stake back plus the reward).
3. *Task tree*: the planner splits a report into subtasks; one subagent checkpoints and then
   crashes (its connection dies, its heartbeats stop), the relay flags it ``stalled``, the
   planner's supervisor reassigns it, and another agent resumes from the checkpoint.

Every agent is a real client with its own key on a real WebSocket; the stake comes from an
operator key the demo starts the relay with. Each step is followed by a beat of ``pace`` seconds
(``colony demo --pace``: about a second for a person watching the viewer, a few hundredths in the
tests), and the relay's windows (bids, delivery, heartbeats) scale with it.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TypedDict

from collab.auctions import Auction, grant
from collab.client import Client
from collab.directory import register
from collab.keys import Keypair
from collab.tasks import TaskLeader, TaskWorker
from collab.trust import fetch_scores, vouch

AUCTION = "auction/review-design-note"
TASK = "task/quarterly-report"


class _Backoff(TypedDict):
    backoff_base: float
    backoff_max: float


FAST: _Backoff = {"backoff_base": 0.05, "backoff_max": 1.0}


@dataclass
class Cast:
    """The scripted agents' keys, and what happened (for the demo's summary)."""

    operator: Keypair = field(default_factory=Keypair.generate)
    planner: Keypair = field(default_factory=Keypair.generate)
    bidders: dict[str, Keypair] = field(default_factory=lambda: {n: Keypair.generate() for n in ("ana", "bo", "cy")})
    workers: dict[str, Keypair] = field(default_factory=lambda: {n: Keypair.generate() for n in ("dee", "eli")})
    log: list[str] = field(default_factory=list)
    pace: float = 0.0

    def say(self, line: str) -> None:
        self.log.append(line)
        print(f"  [demo] {line}", flush=True)

    async def step(self, line: str) -> None:
        """Say what happened, then give a watcher a beat to see it in the viewer."""
        self.say(line)
        await asyncio.sleep(self.pace)

    def names(self) -> dict[str, str]:
        """Public key -> the name each scene agent registers (all distinct)."""
        return {k.public_hex: n for n, k in {"planner": self.planner, **self.bidders, **self.workers}.items()}

    def names_line(self) -> str:
        return (f"planner, {', '.join(self.bidders)} (bidders), {', '.join(self.workers)} (workers);"
                " the operator grants the stake")


async def run_scenes(url: str, cast: Cast, pace: float = 1.0) -> bool:
    """All three scenes; True when each ended as scripted."""
    cast.pace = pace
    async with contextlib.AsyncExitStack() as stack:
        async def client(key: Keypair) -> Client:
            return await stack.enter_async_context(Client(url, key, **FAST))

        op = await client(cast.operator)
        planner = await client(cast.planner)
        await register(planner, "planner", "plans and hands out work", ["planning"])
        bidders = {n: await client(k) for n, k in cast.bidders.items()}
        workers = {n: await client(k) for n, k in cast.workers.items()}
        for name, c in {**bidders, **workers}.items():
            await register(c, name, "a scripted demo agent", ["review", "writing"])
        for k in (cast.planner, *cast.bidders.values()):
            await grant(op, k.public_hex, 100)
        await cast.step("operator granted 100 credits to the planner and the bidders")
        results = await asyncio.gather(_vouching(cast, planner, bidders, workers),
                                       _auction(cast, planner, bidders, pace),
                                       _task_tree(cast, url, planner, workers, pace), return_exceptions=True)
        ok = True
        for scene, res in zip(("vouching", "auction", "task tree"), results, strict=True):
            if isinstance(res, BaseException):
                cast.say(f"{scene} scene FAILED: {res!r}")
                ok = False
        scores = await fetch_scores(url)
        names = cast.names()
        top = sorted(((s, names.get(k, k[:8])) for k, s in scores.items()), reverse=True)[:3]
        cast.say("trust (ppb): " + ", ".join(f"{n} {s}" for s, n in top))
        return ok


async def _vouching(cast: Cast, planner: Client, bidders: dict[str, Client], workers: dict[str, Client]) -> None:
    pk = cast.planner.public_hex
    for name, c in {**bidders, **workers}.items():
        await vouch(c, pk, 800, note="good plans")
        await cast.step(f"{name} vouched 800 for the planner")
    for (who, c), (whom, key, weight) in (
            (("planner", planner), ("bo", cast.bidders["bo"], 600)),
            (("planner", planner), ("eli", cast.workers["eli"], 900)),
            (("ana", bidders["ana"]), ("cy", cast.bidders["cy"], 400)),
            (("dee", workers["dee"]), ("eli", cast.workers["eli"], 700))):
        await vouch(c, key.public_hex, weight)
        await cast.step(f"{who} vouched {weight} for {whom}")
    cast.say("agents vouched for each other in vouch/global")


async def _auction(cast: Cast, planner: Client, bidders: dict[str, Client], pace: float) -> None:
    async with Auction(planner, AUCTION) as req:
        await req.open({"title": "review the design note"}, bid_window_ms=int(6000 * pace) + 700,
                       result_window_ms=int(3000 * pace) + 700, min_stake=5, reward=15, standby=2)
        await cast.step(f"planner opened {AUCTION} (reward 15)")
        views = {}
        for name, stake in (("ana", 40), ("bo", 25), ("cy", 10)):
            views[name] = await Auction(bidders[name], AUCTION).__aenter__()
            await views[name].bid(stake)
            await cast.step(f"{name} bid {stake}")
        st = await req.wait_status("awarded", timeout=30)
        names = {k.public_hex: n for n, k in cast.bidders.items()}
        winner = names[st.winner]  # type: ignore[index]  # an "awarded" status names its winner
        await cast.step(f"relay awarded the review to {winner} (standby: "
                        f"{', '.join(names[k] for k in st.queue)}); {winner} never delivers")
        bo = cast.bidders["bo"].public_hex
        await views["bo"].wait_assigned(bo, timeout=60)
        await cast.step("relay expired ana (stake slashed); bo was promoted from the standby list")
        await views["bo"].deliver({"review": "LGTM with two comments"})
        await cast.step("bo delivered the review")
        await req.wait_for(lambda s: s.result is not None, 30)
        await req.accept()
        await req.wait_status("completed", timeout=30)
        cast.say("planner accepted bo's review: bo gets the reward, ana's slash stands")
        for v in views.values():
            await v.close()


async def _task_tree(cast: Cast, url: str, planner: Client, workers: dict[str, Client], pace: float) -> None:
    dee, eli = cast.workers["dee"].public_hex, cast.workers["eli"].public_hex
    async with TaskLeader(planner, TASK) as leader:
        await leader.open("quarterly report")
        await leader.spawn("numbers", eli, "collect the numbers", heartbeat_ms=30_000)
        await leader.spawn("prose", dee, "write the prose", heartbeat_ms=int(2000 * pace) + 700)
        leader.supervise(lambda sub: eli if sub.assignee == dee else None)
        await cast.step(f"planner opened {TASK}: numbers -> eli, prose -> dee")
        # dee works on its own connection, checkpoints, then crashes (the connection just dies)
        async with Client(url, cast.workers["dee"], **FAST) as crashing:
            w = TaskWorker(crashing, TASK, "prose")
            await w.start_work()
            for step in (1, 2):
                await w.progress(step, 4, f"section {step}")
                await w.checkpoint({"sections": step})
                await cast.step(f"dee wrote section {step} of 4 and checkpointed")
            await w.close_beat()
            cast.say("dee checkpointed 2 of 4 sections and crashed")
        numbers = TaskWorker(workers["eli"], TASK, "numbers")
        await numbers.start_work()
        await numbers.progress(1, 1)
        await numbers.done({"revenue": 42})
        await cast.step("eli collected the numbers: done")
        await leader.wait_for(lambda s: s.subs["prose"].assignee == eli, 60)
        await cast.step("relay flagged prose stalled; the planner reassigned it to eli")
        prose = TaskWorker(workers["eli"], TASK, "prose")
        resume = await prose.start_work()
        await cast.step(f"eli resumed prose from checkpoint {resume}")
        for step in range((resume or {}).get("sections", 0) + 1, 5):
            await prose.progress(step, 4, f"section {step}")
            await prose.checkpoint({"sections": step})
            await cast.step(f"eli wrote section {step} of 4 and checkpointed")
        await prose.done({"sections": 4})
        await leader.wait_all_done(30)
        await leader.finish("completed", {"report": "done"})
        await numbers.close()
        await prose.close()
        cast.say("task tree completed")
