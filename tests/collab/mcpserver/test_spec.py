"""The MCP tools' definitions, checked without a relay: valid JSON Schemas that match the Agent
methods they wrap, descriptions a model can use, argument checks and refusal texts."""
from __future__ import annotations

import inspect
import re

import pytest
from jsonschema import Draft202012Validator

from collab.agent import Agent
from collab.errors import InsufficientFunds, RelayError, Unreachable
from collab.mcpserver.advice import ADVICE, error_text
from collab.mcpserver.resources import feed_of, uri_of
from collab.mcpserver.run import parse_addr
from collab.mcpserver.server import TOOLS
from collab.mcpserver.spec import check_arguments

BY_NAME = {t.name: t for t in TOOLS}


@pytest.mark.parametrize("spec", TOOLS, ids=[t.name for t in TOOLS])
def test_each_tool_has_a_valid_closed_schema_matching_its_agent_method(spec) -> None:  # type: ignore[no-untyped-def]
    assert re.fullmatch(r"[a-z][a-z_]{2,40}", spec.name)
    Draft202012Validator.check_schema(spec.schema)
    assert spec.schema["type"] == "object" and spec.schema["additionalProperties"] is False
    assert len(spec.description) >= 120, "a description says what it does, takes, returns and what to do on errors"
    for name, prop in spec.schema["properties"].items():
        assert prop.get("description"), f"{spec.name}.{name} has no description"
        if prop.get("type") == "string":
            assert "maxLength" in prop, f"{spec.name}.{name}: unbounded string"
    params = {n: p for n, p in inspect.signature(getattr(Agent, spec.method)).parameters.items() if n != "self"}
    assert set(spec.schema["properties"]) <= set(params), "an argument the Agent method does not take"
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert required <= set(spec.schema.get("required", [])), "the Agent method needs an argument the schema lets go"


def test_the_tool_set_covers_every_area_of_the_brief() -> None:
    names = set(BY_NAME)
    assert {"doc_read", "doc_append", "doc_insert", "doc_replace"} <= names
    assert {"feed_list", "feed_read", "feed_publish", "feed_wait"} <= names
    assert {f"auction_{v}" for v in ("open", "list", "bid", "status", "deliver", "accept", "reject")} <= names
    assert {f"task_{v}" for v in ("open", "spawn", "progress", "checkpoint", "done", "fail", "finish", "status",
                                  "assigned", "resume")} <= names
    assert {"trust_vouch", "trust_scores", "agent_profile", "agent_search", "dm_send", "dm_read",
            "ledger_balance"} <= names


def test_bad_arguments_are_refused_naming_the_argument() -> None:
    spec = BY_NAME["doc_insert"]
    good = {"feed": "doc/a", "index": 0, "text": "x"}
    assert check_arguments(spec, good) == good
    with pytest.raises(ValueError, match=r"`index`.*not of type 'integer'"):
        check_arguments(spec, {"feed": "doc/a", "index": "3", "text": "x"})
    with pytest.raises(ValueError, match=r"'text' is a required property"):
        check_arguments(spec, {"feed": "doc/a", "index": 0})
    with pytest.raises(ValueError, match=r"Additional properties are not allowed \('colour'"):
        check_arguments(spec, {"feed": "doc/a", "index": 0, "text": "x", "colour": 1})
    with pytest.raises(ValueError, match=r"`feed`.*does not match"):
        check_arguments(spec, {"feed": "Doc a", "index": 0, "text": "x"})
    with pytest.raises(ValueError, match=r"`stake`.*less than the minimum"):
        check_arguments(BY_NAME["auction_bid"], {"feed": "auction/a", "stake": -1})
    with pytest.raises(ValueError, match=r"`timeout`.*greater than the maximum of 300"):
        check_arguments(BY_NAME["feed_wait"], {"feed": "chat/a", "timeout": 3600})


def test_refusals_keep_the_relay_code_and_say_what_to_do() -> None:
    text = error_text(RelayError("insufficient_funds", "stake 50 > available 10"))
    assert text.startswith("refused (insufficient_funds): stake 50 > available 10. ")
    assert "ledger_balance" in text
    assert error_text(InsufficientFunds("no credits")).startswith("refused (insufficient_funds): no credits.")
    assert error_text(RelayError("brand_new_code", "x")).startswith("refused (brand_new_code): x. Do not retry")
    assert "does not answer" in error_text(Unreachable("http://127.0.0.1:9", "connection refused"))
    assert error_text(ValueError("bad argument `x`.")).endswith("Fix the arguments and call again.")
    for code in ("malformed", "too_large", "invalid", "late", "conflict", "unauthorized", "rate_limited",
                 "limit_exceeded", "unavailable", "busy", "home_unreachable", "internal"):
        assert code in ADVICE, f"no advice for the protocol's {code}"


def test_feed_uris_and_http_addresses() -> None:
    assert feed_of(uri_of("doc/a/b")) == "doc/a/b"
    for bad in ("colony://feed/", "colony://feed/Doc", "http://x/doc/a", "colony://feed/doc/a/.."):
        with pytest.raises(ValueError, match=r"colony://feed|bad feed id"):
            feed_of(bad)
    assert parse_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:8800") == ("::1", 8800)
    assert parse_addr(":8800") == ("127.0.0.1", 8800)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr("localhost")
