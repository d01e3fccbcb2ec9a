"""``GET /openapi.json`` (relay/endpoints/openapi.py) stays true to the app.

* The routes the Starlette app serves and the operations the document lists are the same set,
  both ways (a new route without its entry, or a stale entry, fails here).
* schemathesis fuzzes every operation of the document against a live relay (real uvicorn on
  a free port, in a thread): no answer is a 5xx and every answer matches the
  schema its operation documents for its status. The two event streams (``feedStream``,
  ``watch``) answer a good request with an endless body, which a request/response check cannot
  read to its end: their cases are sent with a streaming client; a 200 is checked by its status
  and content type and then closed, any other answer is read and validated like the rest.
"""
from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)
from starlette.routing import Mount, Route, WebSocketRoute

from relay.app import create_app
from relay.core.config import Config
from collab.events import Event
from relay.endpoints.openapi import EXAMPLE_EVENT, document
from relay.ops.runner import serving
from tests.conftest import make_config

_CONVERTER = re.compile(r"\{(\w+)(:\w+)?\}")


def served(app: Any) -> set[tuple[str, str]]:
    """``(path template, method)`` of every HTTP route of ``app`` (HEAD rides along with GET)."""
    out = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            continue
        if isinstance(route, Route):
            path = _CONVERTER.sub(r"{\1}", route.path)
            out |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount):  # the viewer's static files: documented as GET of the mount
            out.add((route.path + "/", "get"))
        else:
            pytest.fail(f"a route of an unknown kind: {route!r}")
    return out


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in doc["paths"].items() for method in ops}


def test_every_route_is_documented_and_every_operation_is_served(tmp_path: Path) -> None:
    bare = create_app(Config(data_dir=tmp_path, web_dir=tmp_path / "no-viewer"))
    assert served(bare) == documented(document(bare.state.relay, viewer=False))  # no "/" without a viewer
    app = create_app(Config(data_dir=tmp_path))
    doc = document(app.state.relay)
    assert served(app) == documented(doc)
    for path, ops in doc["paths"].items():
        names = set(_CONVERTER.findall(path))
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert params == {n for n, _ in names}, (path, method)
            assert op["responses"] and op["operationId"], (path, method)


def test_the_documented_example_is_a_valid_signed_event() -> None:
    """The publish example (what schemathesis sends first) is the vector ``doc_update_1``."""
    vectors = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "events.json").read_text())
    wire = next(v for v in vectors["events"] if v["name"] == "doc_update_1")["event"]
    assert Event.from_wire(EXAMPLE_EVENT).to_wire() == EXAMPLE_EVENT == wire


async def test_the_route_serves_the_document(tmp_path: Path) -> None:
    async with serving(make_config(tmp_path)) as run, httpx.AsyncClient() as http:
        resp = await http.get(f"{run.url}/openapi.json")
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        assert resp.json() == document(run.relay)
        assert resp.json()["openapi"].startswith("3.1")


@pytest.fixture(scope="module")
def live_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A relay (SQLite) on real uvicorn on a free port, in a thread of its own (schemathesis
    calls it synchronously from the test's thread); its base URL."""
    started: queue.Queue[str | BaseException] = queue.Queue()
    stops: list[Callable[[], None]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            async with serving(make_config(tmp_path_factory.mktemp("openapi-relay"))) as run:
                loop = asyncio.get_running_loop()
                stops.append(lambda: loop.call_soon_threadsafe(stop.set))
                started.put(run.url)
                await stop.wait()
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="openapi-relay")
    thread.start()
    got = started.get(timeout=60)
    if isinstance(got, BaseException):
        thread.join(10)
        raise got
    try:
        yield got
    finally:
        stops[0]()
        thread.join(30)


#: the operations whose good answer is an endless event stream (docs/protocol.md 15.4, 15.5)
STREAMS = ["feedStream", "watch"]
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]
FUZZ = settings(max_examples=10, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def relay_schema(live_relay: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_relay}/openapi.json", wait_for_schema=10.0)


schema = schemathesis.pytest.from_fixture("relay_schema")


@schema.exclude(operation_id=STREAMS).parametrize()
@FUZZ
def test_the_api_conforms_to_its_document(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS, timeout=30)


@schema.include(operation_id=STREAMS).parametrize()
@FUZZ
def test_the_event_streams_conform_to_their_document(case: schemathesis.Case, live_relay: str) -> None:
    kw = case.as_transport_kwargs(base_url=live_relay)
    # header values as bytes: generated ones may hold any Latin-1 character (as requests sends them)
    headers = {k: v.encode("latin-1", "replace") if isinstance(v, str) else v
               for k, v in (kw.get("headers") or {}).items()}
    with httpx.Client(timeout=30) as http, http.stream(kw["method"], kw["url"], params=kw.get("params"),
                                                       headers=headers) as resp:
        assert resp.status_code < 500, (resp.status_code, kw)
        if resp.status_code == 200:
            assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
            documented = case.operation.definition.raw["responses"]
            assert "200" in documented
            return  # the stream would never end: closing it is the client's way out
        resp.read()
    case.validate_response(resp, checks=CHECKS)
