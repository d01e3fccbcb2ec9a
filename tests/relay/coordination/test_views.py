"""relay/coordination/views.py: the query-parameter parsers the plug-ins' views share."""
from __future__ import annotations

import json

import pytest

from collab.errors import InvalidEvent
from relay.coordination.views import error, query_bool, query_int


def test_query_bool() -> None:
    assert [query_bool(v, "x") for v in (None, "", "1", "TRUE", "yes", "0", "false", "No")] == \
        [None, None, True, True, True, False, False, False]
    with pytest.raises(InvalidEvent, match="x must be true or false"):
        query_bool("maybe", "x")


def test_query_int() -> None:
    assert query_int(None, 7, 1, 10, "n") == 7 and query_int("10", 7, 1, 10, "n") == 10
    for raw in ("0", "11", "-1", "1.5", "٣", ""):
        with pytest.raises(InvalidEvent, match="n must be an integer between 1 and 10"):
            query_int(raw, 7, 1, 10, "n")


def test_error_body() -> None:
    resp = error(404, "not_found", "nothing here")
    assert resp.status_code == 404 and json.loads(bytes(resp.body)) == {"error": "not_found", "message": "nothing here"}
