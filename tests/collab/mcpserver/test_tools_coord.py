"""Auction, task tree, trust and directory tools: valid closed schemas matching their Agent methods
(each is called against a live relay in test_live.py)."""
from __future__ import annotations

import pytest

from collab.mcpserver.spec import ToolSpec
from collab.mcpserver.tools_coord import TOOLS
from tests.collab.mcpserver.tools_check import check_tool


@pytest.mark.parametrize("spec", TOOLS, ids=[t.name for t in TOOLS])
def test_each_tool_has_a_valid_closed_schema_matching_its_agent_method(spec: ToolSpec) -> None:
    check_tool(spec)


def test_refusal_codes_a_model_meets_are_explained_where_it_meets_them() -> None:
    by = {t.name: t for t in TOOLS}
    for code in ("late", "conflict", "insufficient_funds", "invalid", "unauthorized"):
        assert f"`{code}`" in by["auction_bid"].description
    assert by["auction_list"].schema["properties"]["status"]["enum"][-1] == "any"
