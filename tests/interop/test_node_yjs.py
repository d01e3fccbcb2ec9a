"""Unmodified Yjs clients (npm yjs + y-websocket's WebsocketProvider, in Node) against a live
relay, next to pycrdt agents; and Yjs <-> pycrdt update bytes in both directions."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Array, Doc as YDoc, Map, Text, XmlFragment

from collab.capability import Capability
from collab.client import Client
from collab.doc import Doc
from collab.keys import Keypair
from collab.replay import replay_feed
from relay.ops.runner import Running
from relay.endpoints.yjs_room import agent_client_id
from tests.yclient import YClient

HERE = Path(__file__).resolve().parent
FAST = {"backoff_base": 0.02, "backoff_max": 0.2}
_names = itertools.count()


class Node:
    """``node client.mjs ...`` with JSON lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._cond = asyncio.Condition()
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> Node:
        proc = await asyncio.create_subprocess_exec(
            "node", str(HERE / "client.mjs"), *args, cwd=HERE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            async with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()
        async with self._cond:
            self._cond.notify_all()

    async def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            async with self._cond:
                while True:
                    for line in self.lines:
                        if "error" in line and "id" not in line:
                            raise AssertionError(f"node failed: {line['error']}")
                        if pred(line):
                            return line
                    if self._reader.done():
                        err = await self.proc.stderr.read() if self.proc.stderr else b""
                        raise AssertionError(f"node exited ({self.proc.returncode}): {err.decode()[-2000:]}")
                    await self._cond.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_event(self, event: str, pred: Callable[[dict[str, Any]], bool] = lambda e: True,
                         timeout: float = 15.0) -> dict[str, Any]:
        return await self.wait(lambda line: line.get("event") == event and pred(line), timeout)

    def write(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def cmd(self, cmd: str, **kw: Any) -> dict[str, Any]:
        rid = next(self._ids)
        self.write({"id": rid, "cmd": cmd, **kw})
        reply = await self.wait(lambda line: line.get("id") == rid)
        assert reply["ok"], reply
        return reply

    async def text_is(self, value: str, timeout: float = 15.0) -> None:
        await self.wait(lambda line: line.get("text") == value and line.get("event") in ("text", "sync"), timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cmd("quit"), 5)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def nodes(node_modules: Path) -> AsyncIterator[list[Node]]:
    made: list[Node] = []
    yield made
    for n in made:
        await n.stop()


async def live(made: list[Node], relay: Running, name: str, token: str | None = None) -> Node:
    n = await Node.start("live", relay.yjs_url, name, *([token] if token else []))
    made.append(n)
    return n


async def records(relay: Running, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{relay.url}/feeds/{feed}/events", params={"limit": 1000})).json()["records"]


# -- update bytes: Yjs -> pycrdt -> Yjs ------------------------------------------------------
def py_view(doc: YDoc) -> dict[str, Any]:
    return {"text": str(doc.get("text", type=Text)), "map": doc.get("map", type=Map).to_py(),
            "arr": doc.get("arr", type=Array).to_py(), "xml": str(doc.get("xml", type=XmlFragment))}


def numbers_as_int(value: Any) -> Any:
    """pycrdt reads every JSON number of a Y.Map/Y.Array as a float; Yjs keeps 42 an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: numbers_as_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_int(v) for v in value]
    return value


async def test_update_bytes_round_trip_yjs_pycrdt_yjs(node_modules: Path) -> None:
    node = await Node.start("roundtrip")
    try:
        first = await node.wait(lambda line: "update" in line)
        original = first["json"]
        py = YDoc()
        py.apply_update(base64.b64decode(first["update"]))
        view = py_view(py)
        # pycrdt reads what Yjs wrote: text, nested maps and arrays, XML, all the non-ASCII
        assert view["text"] == original["text"] and "世界" in view["text"] and "🌍🚀" in view["text"]
        assert numbers_as_int(view["map"]) == original["map"]
        assert numbers_as_int(view["arr"]) == original["arr"]
        assert original["xml"] == '<h1>標題 🏷</h1><p lang="fr" title="été">Ça va? 🙂</p>'
        h1, p = py.get("xml", type=XmlFragment).children  # (attribute order in str() differs: compare parts)
        assert (h1.tag, str(h1.children[0]), p.tag, dict(p.attributes), str(p.children[0])) == (
            "h1", "標題 🏷", "p", {"lang": "fr", "title": "été"}, "Ça va? 🙂")
        formatted = py.get("text", type=Text).diff()
        assert [(d[0], d[1]) for d in formatted][:1] == [("Grüße", {"bold": True})]
        # pycrdt's own encoding of the same document, applied by Yjs to a fresh Y.Doc
        node.write({"update": base64.b64encode(py.get_update()).decode()})
        second = await node.wait(lambda line: "json" in line and "update" not in line)
        assert second["json"] == original
        # and an incremental pycrdt update (edits by Python) applied by Yjs on top of its own doc
        sv = YDoc()
        sv.apply_update(base64.b64decode(first["update"]))
        before = sv.get_state()
        with py.transaction():
            py.get("text", type=Text).insert(0, "¡Hola! ")
            py.get("map", type=Map)["python"] = "👍 ok"
            py.get("arr", type=Array).append("末尾")
            frag = py.get("xml", type=XmlFragment)
            frag.children[1].attributes["data-é"] = "ü"
        node.write({"update": base64.b64encode(py.get_update(before)).decode()})
        third = await node.wait(lambda line: "json" in line and line is not second and line["json"] != original)
        expect = py_view(py)
        assert third["json"]["text"] == expect["text"] and third["json"]["text"].startswith("¡Hola! Grüße")
        assert third["json"]["map"] == numbers_as_int(expect["map"]) and third["json"]["map"]["python"] == "👍 ok"
        assert third["json"]["arr"] == numbers_as_int(expect["arr"])
        assert 'data-é="ü"' in third["json"]["xml"]
    finally:
        await node.stop()


# -- a live relay ----------------------------------------------------------------------------
async def test_node_client_follows_agents_read_only(relay: Running, nodes: list[Node]) -> None:
    name = f"node{next(_names)}"
    feed = f"doc/{name}"
    ada = Keypair.generate()
    async with Client(relay.url, ada, **FAST) as client:
        await client.publish(f"agent/{ada.public_hex}", "agent.profile", {"name": "Ada"})
        async with Doc(client, feed) as doc:
            await doc.synced(10)
            doc.text += "Hello from pycrdt, ünïcödé 🌍"
            await doc.flushed(10)
            node = await live(nodes, relay, name)
            await node.wait_event("sync", lambda e: e["synced"])
            await node.text_is("Hello from pycrdt, ünïcödé 🌍")
            # live edits from the agent, including deletions
            doc.text.insert(0, ">> ")
            del doc.text[3:8]
            await node.text_is(">>  from pycrdt, ünïcödé 🌍")
            # the agent's presence is an awareness state with its profile name
            cid = agent_client_id(ada.public_hex)
            await node.wait_event("awareness", lambda e: any(
                s["client"] == cid and s["state"].get("user", {}).get("name") == "Ada" for s in e["states"]))
            # and the node's own awareness reaches other Yjs clients
            y = await YClient.connect(relay.yjs_url, name)
            try:
                await y.wait(lambda: any(s.get("user", {}).get("name") == "node" for s in y.states().values()))
            finally:
                await y.close()
            # read-only: its edit is refused (y-websocket's permission-denied handler) and not recorded
            n = len(await records(relay, feed))
            await node.cmd("insert", text=" (node)")
            warn = await node.wait_event("warn", lambda e: "Permission denied" in e["message"])
            assert "read-only" in warn["message"]
            doc.text += "!"
            await node.wait(lambda line: line.get("event") == "text" and line["text"].endswith("!"))
            assert len(await records(relay, feed)) == n + 1
            assert str(doc.text) == ">>  from pycrdt, ünïcödé 🌍!"


async def test_node_client_writes_with_a_capability(relay: Running, nodes: list[Node]) -> None:
    name = f"node{next(_names)}"
    feed = f"doc/{name}"
    owner, bob = Keypair.generate(), Keypair.generate()
    token = Capability.issue(owner, feed, write=True).token()
    async with Client(relay.url, owner, **FAST) as c1, Client(relay.url, bob, **FAST) as c2, \
            Doc(c1, feed) as d1, Doc(c2, feed) as d2:
        await d1.synced(10)
        await d2.synced(10)
        d1.text += "[owner]"
        await d1.flushed(10)
        node = await live(nodes, relay, name, token)
        await node.wait_event("sync", lambda e: e["synced"])
        await node.text_is("[owner]")
        await node.cmd("insert", text="[node-ü]")
        await d2.wait_seq(2, 10)
        assert str(d2.text) == "[owner][node-ü]"
        recs = await records(relay, feed)
        ev = recs[1]["event"]
        assert ev["author"] == relay.relay.hub.relay_key.public_hex
        assert ev["body"]["cap"]["issuer"] == owner.public_hex and ev["body"]["cap"]["rights"] == ["read", "write"]
        # everyone edits at once; all converge on the same text, which the relay's log says too
        for i in range(5):
            d1.text.insert(0, f"(o{i})")
            d2.text += f"(b{i})"
            await node.cmd("insert", text=f"(n{i})", index=0)  # whole tokens: never inside another
        await d1.flushed(10)
        await d2.flushed(10)
        tokens = [f"({p}{i})" for p in "obn" for i in range(5)]

        def converged(text: str) -> bool:
            return all(t in text for t in tokens)

        final = await node.wait(lambda line: line.get("event") == "text" and converged(line["text"]))
        for d in (d1, d2):
            await d.wait_seq(len(await records(relay, feed)), 10)
        state = await node.cmd("state")
        assert state["text"] == str(d1.text) == str(d2.text)
        assert converged(final["text"])
        result = await replay_feed(relay.url, feed)
        assert result.verified, result.anomalies
        assert result.view() == {"text": state["text"]}
