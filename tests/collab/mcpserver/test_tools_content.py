"""Documents, feeds, messages and ledger tools: valid closed schemas matching their Agent methods
(each is called against a live relay in test_live.py)."""
from __future__ import annotations

import pytest

from collab.mcpserver.spec import ToolSpec
from collab.mcpserver.tools_content import TOOLS
from tests.collab.mcpserver.tools_check import check_tool


@pytest.mark.parametrize("spec", TOOLS, ids=[t.name for t in TOOLS])
def test_each_tool_has_a_valid_closed_schema_matching_its_agent_method(spec: ToolSpec) -> None:
    check_tool(spec)


def test_document_tools_say_how_edits_merge_and_replace_refuses() -> None:
    by = {t.name: t for t in TOOLS}
    assert "merges with concurrent edits" in by["doc_append"].description
    assert "exactly once" in by["doc_replace"].description and "more than once" in by["doc_replace"].description
    assert by["feed_wait"].schema["properties"]["timeout"]["maximum"] == 300
