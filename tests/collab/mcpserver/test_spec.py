"""Tool specs: the schema builders and the argument checks every call goes through."""
from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from collab.mcpserver.server import TOOLS
from collab.mcpserver.spec import FEED_PATTERN, anything, check_arguments, feed, integer, key, obj, string, tool

BY_NAME = {t.name: t for t in TOOLS}


def test_builders_make_closed_bounded_schemas() -> None:
    schema = obj(["f"], f=feed(), n=integer("n", minimum=1, maximum=5, default=2), k=key("whose"),
                 s=string("s", max_length=3, enum=["a", "b"]), x=anything("any"))
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False and schema["required"] == ["f"]
    assert schema["properties"]["k"]["maxLength"] == 64 and schema["properties"]["n"]["default"] == 2
    assert FEED_PATTERN.endswith("$") and "\\Z" not in FEED_PATTERN
    with pytest.raises(ValueError, match="not defined"):
        obj(["missing"], f=feed())
    t = tool("demo_tool", "\n  Does a thing.\n", obj(), "publish", read_only=True)
    assert (t.description, t.method, t.annotations) == ("Does a thing.", "publish", {"readOnlyHint": True})


def test_the_tool_set_covers_every_area_of_the_brief() -> None:
    names = set(BY_NAME)
    assert {"doc_read", "doc_append", "doc_insert", "doc_replace"} <= names
    assert {"feed_list", "feed_read", "feed_publish", "feed_wait"} <= names
    assert {f"auction_{v}" for v in ("open", "list", "bid", "status", "deliver", "accept", "reject")} <= names
    assert {f"task_{v}" for v in ("open", "spawn", "progress", "checkpoint", "done", "fail", "finish", "status",
                                  "assigned", "resume")} <= names
    assert {"trust_vouch", "trust_scores", "agent_profile", "agent_search", "dm_send", "dm_read",
            "ledger_balance"} <= names
    assert len(names) == len(TOOLS), "two tools share a name"


def test_bad_arguments_are_refused_naming_the_argument() -> None:
    spec = BY_NAME["doc_insert"]
    good = {"feed": "doc/a", "index": 0, "text": "x"}
    assert check_arguments(spec, good) == good
    assert check_arguments(BY_NAME["feed_list"], None) == {}
    with pytest.raises(ValueError, match=r"`index`.*not of type 'integer'\.$"):
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
    with pytest.raises(ValueError, match=r"`peer`.*does not match"):
        check_arguments(BY_NAME["dm_send"], {"peer": "AB" * 32, "body": 1})


def test_docs_list_every_tool_with_its_arguments() -> None:
    """docs/agents.md's tool table: each tool once, its arguments as the schema has them (`?` optional)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[3] / "docs" / "agents.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \| .+ \|$", text, re.MULTILINE))
    want = {"whoami": "—", "feed_wait_new": "`prefix, timeout?`"}
    for t in TOOLS:
        req = set(t.schema.get("required", []))
        want[t.name] = "`" + ", ".join(p if p in req else p + "?" for p in t.schema["properties"]) + "`"
    assert rows == want
