"""relay/coordination/namespaces/vouch.py: the site's trust parameters, current scores, relay-
signed outcomes, and the /trust views (cached per feed head) over a real socket."""
from __future__ import annotations

from pathlib import Path

import httpx

from collab import trust
from collab.events import Event
from collab.keys import Keypair
from relay.coordination.hooks import TrustSettings
from relay.coordination.namespaces import vouch
from relay.ops.runner import serving
from relay.server import Relay
from tests.conftest import make_config


async def test_scores_outcomes_and_params(site: Relay) -> None:
    ctx, a, b = site.coordinator, Keypair.generate(), Keypair.generate()
    assert vouch.trust_params(ctx) == trust.TrustParams(pretrusted=ctx.trust.pretrusted,
                                                        half_life_ms=ctx.trust.half_life_ms)
    assert await vouch.current_scores(ctx, "vouch/unit") == (0, {})
    await site.hub.publish(Event.create(a, "vouch/unit", "vouch.set", {"subject": b.public_hex, "weight": 500}),
                           a.public_hex)
    await vouch.record_outcome(ctx, "vouch/unit", {"subject": b.public_hex, "outcome": "delivered",
                                                   "ref": "auction/x"}, ts=1)
    rt = await site.hub.runtime("vouch/unit")
    assert rt.seq == 3  # the relay's opening (relay-owned feed), the vouch, the outcome
    seq, table = await vouch.current_scores(ctx, "vouch/unit")
    assert seq == 3 and table == trust.scores(rt.state, vouch.trust_params(ctx), relay=ctx.relay)
    assert sum(table.values()) == trust.SCALE and table[b.public_hex] > table[a.public_hex]


async def test_trust_views(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "r", trust_half_life=3600.0)
    a, b = Keypair.generate(), Keypair.generate()
    async with serving(cfg) as running, httpx.AsyncClient(base_url=running.url) as http:
        assert running.relay.coordinator.trust == TrustSettings(frozenset(), 3_600_000)
        assert (await http.get("/trust/empty")).json() == {"feed": "vouch/empty", "seq": 0, "scale": 10**9,
                                                          "scores": []}
        await running.relay.hub.publish(
            Event.create(a, "vouch/t", "vouch.set", {"subject": b.public_hex, "weight": 900}), a.public_hex)
        body = (await http.get("/trust/t")).json()
        table = {r["key"]: r["score"] for r in body["scores"]}
        assert body["seq"] == 2 and set(table) == {a.public_hex, b.public_hex}
        assert [r["score"] for r in body["scores"]] == sorted(table.values(), reverse=True)  # highest first
        one = (await http.get(f"/trust/t/{b.public_hex}")).json()
        assert one["score"] == table[b.public_hex] and one["seq"] == 2
        bad = await http.get("/trust/t/not-a-key")
        assert bad.status_code == 400 and bad.json()["error"] == "invalid"
        assert (await http.get("/trust/Bad%20Topic")).status_code == 400
