"""relay/ops/demo_coord.py: the demo's coordination scenes (vouching, an auction with stakes, a
task tree) run to their scripted ends against a real relay whose operator is the cast's."""
from __future__ import annotations

from pathlib import Path

import pytest

from collab.errors import RelayError
from collab.keys import Keypair
from relay.ops.demo_coord import Cast, run_scenes
from relay.ops.runner import serving
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(120)


async def test_every_scene_ends_as_scripted(tmp_path: Path) -> None:
    cast = Cast()
    async with serving(make_config(tmp_path, operators=(cast.operator.public_hex,))) as running:
        assert await run_scenes(running.url, cast, pace=0.05)
    assert not any("FAILED" in line for line in cast.log)
    assert cast.log[0].startswith("operator granted 100 credits")
    assert cast.log[-1].startswith("trust (ppb): ")


async def test_without_the_relays_operator_key_the_grant_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    cast = Cast(operator=Keypair.generate())
    async with serving(make_config(tmp_path)) as running:  # the cast's operator is not the relay's
        with pytest.raises(RelayError) as info:
            await run_scenes(running.url, cast, pace=0.05)
    assert info.value.code == "unauthorized"
    assert cast.log == []  # it stopped at the grant, before any scene
