"""Shared checks of a tools module: every schema valid and matching the Agent method it wraps."""
from __future__ import annotations

import inspect
import re

from jsonschema import Draft202012Validator

from collab.agent import Agent
from collab.mcpserver.spec import ToolSpec


def check_tool(spec: ToolSpec) -> None:
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
