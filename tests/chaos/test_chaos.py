"""Faults at random, nothing lost (issue 13 item 9): the suite's 60-second seed of the chaos
engine (tests/chaos/engine.py; ``scripts/chaos --minutes N`` runs it longer). A three-process
Redis site (AOF) and a federated relay carry doc edits, auctions with stake, vouches, task trees
and DMs while relay processes are SIGKILLed and restarted, Redis is restarted and paused, relays
are paused and links are cut; afterwards every acked event is stored at its seq, every chain
verifies, every watcher saw every seq exactly once in order, the ledger conserves its supply,
and every process and the federated relay agree on heads and trust scores."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.engine import run
from tests.chaos.faults import KINDS

SEED = 9  # fixed: a failure here re-runs with scripts/chaos --minutes 1 --seed 9


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_sixty_seconds_of_random_faults_lose_nothing(tmp_path: Path) -> None:
    out = await run(SEED, 60, tmp_path)
    print(out.report())
    assert not out.violations, out.report()
    assert out.figures["events lost"] == 0
    assert sum(out.faults.counts.values()) >= 10, "the seed injects faults all along the minute"
    assert set(out.faults.counts) == set(KINDS), "every kind of fault comes first, once each"
    assert out.figures["events acked"] > 100, "the workload ran through the faults"
