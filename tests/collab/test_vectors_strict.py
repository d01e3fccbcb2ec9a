"""The vectors that leave an implementer nothing to guess (issue 13, item 6), against collab and a
live relay: strict Ed25519 (``ed25519.json``), empty Yjs updates on every endpoint
(``doc_updates.json``), and the exact first reply to frames with several faults, ``null``
members and what error frames carry (``frames.json`` ``first_reply``)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from collab import frames, keys
from collab.capability import Capability
from collab.events import Event, unb64
from collab.keys import Keypair, verify
from collab.namespaces import DocNamespace
from collab.namespaces import doc as doc_ns
from collab.namespaces.base import Admission
from relay.ops.runner import Running
from tests.collab.test_vectors import Conn, authed, by_name, conn, error_code  # noqa: F401 (conn: a fixture)
from tests.wait import eventually
from tests.yclient import YClient, msg_step2, msg_update

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ED = json.loads((VECTORS / "ed25519.json").read_text())
DOCU = json.loads((VECTORS / "doc_updates.json").read_text())
FIRST = json.loads((VECTORS / "frames.json").read_text())["first_reply"]
ALICE = Keypair.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
REFUSED = [c for c in ED["cases"] if c["expected"] == "refuse"]


# -- strict Ed25519 -----------------------------------------------------------------------------

@by_name(ED["cases"])
def test_ed25519_vector_in_collab(case: dict[str, Any]) -> None:
    ok = case["expected"] == "accept"
    assert case["lenient_accepts"]  # each case is one a lenient verifier lets through
    public, message, sig = (bytes.fromhex(case[k]) for k in ("public", "message_hex", "signature"))
    assert verify(public, message, sig) is ok
    assert error_code(Event.from_wire, case["event"]) == ("" if ok else "bad_signature")


@by_name(ED["cases"])
def test_ed25519_encoding_rules_do_not_rest_on_libsodium(case: dict[str, Any]) -> None:
    """collab's own checks refuse every case whose fault is in an encoding (all but the mixed-order
    key, which only the cofactorless equation refuses), whatever libsodium build is installed."""
    got = keys.strict_encodings(bytes.fromhex(case["public"]), bytes.fromhex(case["signature"]))
    assert got is (case["expected"] == "accept" or case["name"] == "key_mixed_order")


async def test_ed25519_vectors_on_a_live_relay(relay: Running, conn: Conn) -> None:  # noqa: F811
    for i, case in enumerate(REFUSED):
        await conn.ws.send(frames.encode({"t": "pub", "event": case["event"], "rid": i}))
        reply = await conn.until("ok", "error")
        assert (reply["t"], reply["code"], reply["rid"]) == ("error", "bad_signature", i), case["name"]
        if case["any_message"]:  # verifies for every message under a lenient verifier: a hello too
            await conn.ws.send(frames.encode({"t": "hello", "key": case["public"], "sig": case["signature"],
                                              "rid": "h"}))
            reply = await conn.until("welcome", "error")
            assert (reply["t"], reply["code"]) == ("error", "bad_signature"), case["name"]
    valid = next(c for c in ED["cases"] if c["expected"] == "accept")
    async with authed(relay, ALICE) as c:
        await c.ws.send(frames.encode({"t": "pub", "event": valid["event"]}))
        assert (await c.until("ok", "error"))["t"] == "ok"


# -- empty Yjs updates --------------------------------------------------------------------------

@by_name(DOCU["cases"])
def test_empty_update_vector_in_collab(case: dict[str, Any]) -> None:
    assert doc_ns.is_empty_update(bytes.fromhex(case["update_hex"])) is case["empty"]
    ns = DocNamespace()
    ev = Event.from_wire(case["event"])
    assert error_code(ns.validate, ns.initial(ev.feed), ev, Admission(0, "00" * 32)) == case["error"]


async def feed_records(relay: Running, feed: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{relay.url}/feeds/{feed}/events", params={"limit": 1000})
    return resp.json()["records"] if resp.status_code == 200 else []


async def test_empty_updates_on_ws_and_yjs(relay: Running) -> None:
    feed, stored = DOCU["feed"], []
    async with authed(relay, ALICE) as c:  # /ws: every empty update is refused with invalid
        for i, case in enumerate(DOCU["cases"]):
            await c.ws.send(frames.encode({"t": "pub", "event": case["event"], "rid": i}))
            reply = await c.until("ok", "error")
            assert reply.get("code", "") == case["error"] and reply["rid"] == i, case["name"]
            if not case["error"]:
                stored.append(case["event"]["id"])
    assert [r["event"]["id"] for r in await feed_records(relay, feed)] == stored
    # /yjs: a writer's empty updates (as update and as sync step 2) are ignored, not recorded
    cap = Capability.issue(ALICE, feed, write=True)
    y = await YClient.connect(relay.yjs_url, feed.split("/", 1)[1], cap.token())
    try:
        await asyncio.wait_for(y.synced, 10)
        for case in DOCU["cases"]:
            if case["empty"]:
                await y.send(msg_update(bytes.fromhex(case["update_hex"])))
                await y.send(msg_step2(bytes.fromhex(case["update_hex"])))
        y.edit("!")  # recorded after the empty ones, as the very next record
        await eventually(lambda: _grown(relay, feed, len(stored)), 10, "the yjs edit recorded")
        recs = await feed_records(relay, feed)
        assert not y.closed.done()
        assert len(recs) == len(stored) + 1
        assert not doc_ns.is_empty_update(unb64(recs[-1]["event"]["body"]["update"]))
    finally:
        await y.close()


async def _grown(relay: Running, feed: str, n: int) -> bool:
    return len(await feed_records(relay, feed)) > n


# -- frames: first replies ------------------------------------------------------------------------

async def test_first_replies_on_a_live_relay(relay: Running) -> None:
    for case in FIRST:
        async with connect(relay.ws_url, max_size=None) as ws:
            c = Conn(ws)
            assert (await c.next())["t"] == "challenge"
            await ws.send(case["text"])
            got = await c.next()
            got.pop("message", None)
            assert got == case["reply"], case["name"]
