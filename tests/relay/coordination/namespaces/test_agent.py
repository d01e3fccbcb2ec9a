"""relay/coordination/namespaces/agent.py: the directory's views, mounted from the plug-in."""
from __future__ import annotations

from pathlib import Path

import httpx

from collab.events import Event
from collab.keys import Keypair
from relay.coordination.namespaces.agent import AgentPlugin
from relay.ops.runner import serving
from tests.conftest import make_config


async def test_agents_views(tmp_path: Path) -> None:
    ada = Keypair.generate()
    async with serving(make_config(tmp_path / "r")) as running, httpx.AsyncClient(base_url=running.url) as http:
        await running.relay.hub.publish(Event.create(ada, f"agent/{ada.public_hex}", "agent.profile",
                                                     {"name": "Ada", "capabilities": ["Math"]}), ada.public_hex)
        page = (await http.get("/agents", params={"capability": "math"})).json()
        assert page["total"] == 1 and page["agents"][0]["name"] == "Ada"
        one = await http.get(f"/agents/{ada.public_hex}")
        assert one.status_code == 200 and one.json()["online"] is False
        assert (await http.get(f"/agents/{Keypair.generate().public_hex}")).status_code == 404
        for q in ({"online": "maybe"}, {"limit": "0"}, {"offset": "-1"}):
            resp = await http.get("/agents", params=q)
            assert resp.status_code == 400 and resp.json()["error"] == "invalid"


def test_the_plugin_only_adds_views() -> None:
    p = AgentPlugin()
    assert [getattr(r, "path", "") for r in p.routes] == ["/agents", "/agents/{key}"]
    assert not p.follows and not p.gated_kinds and p.sdk == "collab.directory"
