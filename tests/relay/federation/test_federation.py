"""Federation end to end: three relay processes on loopback, each with its own key and store
(docs/federation.md). Agents connect to different relays; a feed's home orders it, the others
forward writes and mirror records. A partition is a real TCP proxy on one relay's path to
another, cut and healed."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.auctions import Auction
from collab.client import Client
from collab.doc import Doc
from collab.errors import RelayError
from collab.keys import Keypair
from collab.replay import fetch_records
from collab.trust import vouch
from relay.core.routing import Member, Routing
from tests.conftest import Backend
from tests.procs import RelayProc, start_relay_proc
from tests.redis_server import free_port
from tests.tcpproxy import TcpProxy

FAST = {"backoff_base": 0.02, "backoff_max": 0.3}


@dataclass
class Node:
    name: str
    key: Keypair
    port: int
    proc: RelayProc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fed:
    nodes: dict[str, Node]
    proxies: dict[tuple[str, str], TcpProxy]

    def routing(self) -> Routing:
        a, *rest = self.nodes.values()
        return Routing(Member(a.key.public_hex, a.url), tuple(Member(n.key.public_hex, n.url) for n in rest))

    def home_of(self, feed: str) -> Node:
        key = self.routing().home(feed).key
        return next(n for n in self.nodes.values() if n.key.public_hex == key)

    def others(self, node: Node) -> list[Node]:
        return [n for n in self.nodes.values() if n is not node]


@pytest.fixture
async def fed(tmp_path: Path, backend: Backend) -> AsyncIterator[Any]:
    """``await fed(proxied=[("a", "b")])`` -> Fed: relays a, b, c; a reaches b through a proxy."""
    stack = contextlib.AsyncExitStack()

    async def make(proxied: Any = ()) -> Fed:
        """``proxied``: (src, dst) pairs, or a function of the (not yet started) Fed giving them."""
        nodes = {n: Node(n, Keypair.generate(), free_port()) for n in ("a", "b", "c")}
        if callable(proxied):
            proxied = proxied(Fed(nodes, {}))
        proxies = {}
        for src, dst in proxied:
            proxies[(src, dst)] = await TcpProxy(nodes[dst].port).start()
            stack.push_async_callback(proxies[(src, dst)].close)
        for n in nodes.values():
            n.key.save(tmp_path / f"{n.name}.key")
        for n in nodes.values():
            args = ["--port", str(n.port), "--public-url", n.url, "--relay-key", str(tmp_path / f"{n.name}.key"),
                    "--sync-interval", "0.3"]
            for m in nodes.values():
                if m is not n:
                    url = proxies[(n.name, m.name)].url if (n.name, m.name) in proxies else m.url
                    args += ["--peer", f"{url}#{m.key.public_hex}"]
            n.proc = await start_relay_proc(tmp_path / n.name, *args, backend=backend, site=f"fed{n.name}")
            stack.push_async_callback(n.proc.stop)
        return Fed(nodes, proxies)

    async with stack:
        yield make


async def _linked(fed: Fed, timeout: float = 20.0) -> None:
    """Until every relay reports all of its links connected."""
    async def check() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                ok = True
                for n in fed.nodes.values():
                    h = (await http.get(f"{n.url}/health")).json()
                    links = (h.get("federation") or {}).get("links", {})
                    ok &= len(links) == 2 and all(v["connected"] for v in links.values())
                if ok:
                    return
                await asyncio.sleep(0.05)

    await asyncio.wait_for(check(), timeout)


async def _same_head(fed: Fed, feed: str, seq: int, timeout: float = 20.0) -> None:
    async def check() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                heads = []
                for n in fed.nodes.values():
                    r = await http.get(f"{n.url}/feeds/{feed}")
                    heads.append(r.json()["seq"] if r.status_code == 200 else 0)
                if all(h == seq for h in heads):
                    return
                await asyncio.sleep(0.05)

    await asyncio.wait_for(check(), timeout)


async def test_route_is_the_same_on_every_relay(fed: Any) -> None:
    f = await fed()
    await _linked(f)
    async with httpx.AsyncClient(timeout=5) as http:
        for feed in ("doc/a", "doc/b", "auction/x", "vouch/global", "task/t"):
            answers = [(await http.get(f"{n.url}/route/{feed}")).json() for n in f.nodes.values()]
            assert len({a["home"]["key"] for a in answers}) == 1
            assert answers[0]["home"]["key"] == f.home_of(feed).key.public_hex
            assert sum(a["self"] for a in answers) == 1
            assert all(a["replicated"] == feed.startswith("vouch/") for a in answers)


async def test_agents_on_three_relays_co_edit_one_doc_and_converge(fed: Any) -> None:
    f = await fed()
    await _linked(f)
    feed = "doc/shared"
    async with contextlib.AsyncExitStack() as stack:
        docs = []
        for n in f.nodes.values():
            c = await stack.enter_async_context(Client(n.url, Keypair.generate(), **FAST))
            d = await stack.enter_async_context(Doc(c, feed))
            await d.synced(20)
            docs.append(d)
        for round_ in range(5):
            for i, d in enumerate(docs):
                d.text.insert(len(str(d.text)), f"[{i}.{round_}]")
        seqs = [await d.flushed(30) for d in docs]
        head = max(seqs)
        for d in docs:
            await d.wait_seq(head, 30)
        texts = {str(d.text) for d in docs}
        assert len(texts) == 1
        text = texts.pop()
        assert all(f"[{i}.{r}]" in text for i in range(3) for r in range(5))
    await _same_head(f, feed, head)
    # the mirrors hold the home's records verbatim: same ids, same hashes, same receipts
    chains = [await fetch_records(n.url, feed) for n in f.nodes.values()]
    assert chains[0] == chains[1] == chains[2]
    assert {r["relay"] for r in chains[0]} == {f.home_of(feed).key.public_hex}


async def test_a_bid_on_a_non_home_relay_is_forwarded_and_acked_with_the_home_seq(fed: Any) -> None:
    f = await fed()
    await _linked(f)
    feed = "auction/forwarded"
    home = f.home_of(feed)
    other = f.others(home)[0]
    async with Client(home.url, Keypair.generate(), **FAST) as req_c, \
            Client(other.url, Keypair.generate(), **FAST) as bid_c:
        async with Auction(req_c, feed) as req:
            await req.open("t", bid_window_ms=60_000, result_window_ms=1000)
            ack = await bid_c.publish(feed, "auction.bid", {"stake": 0})
            assert ack.seq == 2
            await req.wait_for(lambda s: bid_c.key.public_hex in s.bids, 10)  # type: ignore[union-attr]
    recs = await fetch_records(home.url, feed)
    assert [r["seq"] for r in recs] == [1, 2] and recs[1]["event"]["author"] == bid_c.key.public_hex  # type: ignore[union-attr]


async def test_trust_scores_are_identical_on_all_relays(fed: Any) -> None:
    f = await fed()
    await _linked(f)
    keys = [Keypair.generate() for _ in range(6)]
    nodes = list(f.nodes.values())
    home = f.home_of("vouch/global")
    async with contextlib.AsyncExitStack() as stack:
        # the trust feed belongs to its home relay: an agent on a mirror cannot open it (issue 13)
        squatter = await stack.enter_async_context(Client(f.others(home)[0].url, Keypair.generate(), **FAST))
        with pytest.raises(RelayError) as info:
            await squatter.publish("vouch/global", "feed.policy", {"policy": "members"})
        assert info.value.code == "unauthorized"
        clients = [await stack.enter_async_context(Client(nodes[i % 3].url, k, **FAST)) for i, k in enumerate(keys)]
        for i, c in enumerate(clients):
            await vouch(c, keys[(i + 1) % 6].public_hex, 500 + 100 * i)
            await vouch(c, keys[(i + 3) % 6].public_hex, -200 if i % 2 else 700)
    await _same_head(f, "vouch/global", 13)  # the home relay's opening, then 12 vouches
    for n in nodes:
        first = (await fetch_records(n.url, "vouch/global"))[0]
        assert (first["event"]["kind"], first["event"]["author"], first["relay"]) == (
            "feed.policy", home.key.public_hex, home.key.public_hex)
    async with httpx.AsyncClient(timeout=5) as http:
        tables = [(await http.get(f"{n.url}/trust/global")).json() for n in nodes]
    assert tables[0]["scores"] == tables[1]["scores"] == tables[2]["scores"]
    assert len(tables[0]["scores"]) == 6 and sum(s["score"] for s in tables[0]["scores"]) == 1_000_000_000


async def test_partition_keeps_doc_edits_on_both_sides_and_converges_after_heal(fed: Any) -> None:
    f = await fed(proxied=(("a", "b"),))
    # a doc whose home is b: a reaches it only through the proxy
    feed = next(fd for fd in (f"doc/p{i}" for i in range(200)) if f.home_of(fd).name == "b")
    await _linked(f)
    a, b, c = f.nodes["a"], f.nodes["b"], f.nodes["c"]
    async with contextlib.AsyncExitStack() as stack:
        docs = {}
        for n in (a, b, c):
            cl = await stack.enter_async_context(Client(n.url, Keypair.generate(), **FAST))
            docs[n.name] = await stack.enter_async_context(Doc(cl, feed))
            await docs[n.name].synced(20)
        docs["a"].text.insert(0, "before;")
        await docs["a"].flushed(20)
        f.proxies[("a", "b")].cut()
        # both sides keep editing; a's edits are held until its home comes back
        for i in range(5):
            docs["a"].text.insert(len(str(docs["a"].text)), f"a{i};")
            docs["b"].text.insert(len(str(docs["b"].text)), f"b{i};")
            docs["c"].text.insert(len(str(docs["c"].text)), f"c{i};")
        await docs["b"].flushed(20)
        await docs["c"].flushed(20)
        f.proxies[("a", "b")].heal()
        head = await docs["a"].flushed(30)
        head = max(head, await docs["b"].flushed(30), await docs["c"].flushed(30))
        for d in docs.values():
            await d.wait_seq(head, 30)
        texts = {str(d.text) for d in docs.values()}
        assert len(texts) == 1
        text = texts.pop()
        assert "before;" in text and all(f"{s}{i};" in text for s in "abc" for i in range(5))
    await _same_head(f, feed, head)
    chains = [await fetch_records(n.url, feed) for n in (a, b, c)]
    assert chains[0] == chains[1] == chains[2]


async def test_home_unreachable_refuses_authority_namespaces(fed: Any) -> None:
    feed = "auction/h1"

    def cut_path(f: Fed) -> tuple[tuple[str, str], ...]:  # some relay's path to the auction's home
        home = f.home_of(feed)
        return ((f.others(home)[0].name, home.name),)

    f = await fed(proxied=cut_path)
    (src, _dst), proxy = next(iter(f.proxies.items()))
    await _linked(f)
    proxy.cut()
    async with Client(f.nodes[src].url, Keypair.generate(), **FAST) as cl:
        from collab.errors import RelayError

        with pytest.raises(RelayError) as err:
            await cl.publish(feed, "auction.open", {"task": "x", "bid_deadline": 2**52, "result_window": 1,
                                                    "min_stake": 0, "reward": 0})
        assert err.value.code == "home_unreachable"
