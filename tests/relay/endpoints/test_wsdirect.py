"""Shared-frame fan-out (relay.endpoints.wsdirect): used when safe, byte-identical to the normal path,
and never used when an extension (permessage-deflate) makes frames differ per connection."""
from __future__ import annotations

import asyncio
from pathlib import Path

import websockets
from pycrdt import Text

from relay.ops.runner import serving
from tests.conftest import make_config
from tests.yclient import YClient, msg_step1


async def _edit(tmp_path: Path, deflate: bool) -> tuple[list[bool], list[str]]:
    """Two readers, one writer through a native agent; returns (direct used per conn, texts)."""
    from collab.client import Client
    from collab.doc import Doc
    from collab.keys import Keypair

    cfg = make_config(tmp_path / ("d" if deflate else "p"), ws_deflate=deflate)
    async with serving(cfg) as r:
        key = Keypair.generate()
        async with Client(r.url, key) as client, Doc(client, "doc/fan") as doc:
            await doc.synced(10)
            doc.text.insert(0, "start;")
            await doc.flushed(10)
            readers = []
            for _ in range(2):
                url = f"{r.yjs_url}/fan"
                ws = await websockets.connect(url, max_size=None,
                                              compression="deflate" if deflate else None)
                y = YClient(ws)
                await y.send(msg_step1(y.doc.get_state()))
                readers.append(y)
            await asyncio.gather(*(y.wait_text("start;") for y in readers))
            room = r.server.config.app.state.yjs.rooms["doc/fan"]
            direct = [c.out.direct is not None for c in room.conns]
            for i in range(20):
                doc.text.insert(len(str(doc.text)), f"e{i};")
            await doc.flushed(10)
            want = str(doc.text)
            await asyncio.gather(*(y.wait_text(want) for y in readers))
            texts = [str(y.doc.get("text", type=Text)) for y in readers]
            for y in readers:
                await y.ws.close()
            return direct, texts


async def test_direct_fan_out_is_used_and_delivers_everything_in_order(tmp_path: Path) -> None:
    direct, texts = await _edit(tmp_path, deflate=False)
    assert direct == [True, True]
    assert texts == ["start;" + "".join(f"e{i};" for i in range(20))] * 2


async def test_deflate_connections_take_the_normal_path(tmp_path: Path) -> None:
    direct, texts = await _edit(tmp_path, deflate=True)
    assert direct == [False, False]
    assert texts == ["start;" + "".join(f"e{i};" for i in range(20))] * 2
