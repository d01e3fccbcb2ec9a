"""relay/endpoints/http_errors.py: the one code -> status table, equal to docs/protocol.md 15.2,
covering every code of section 13.1; the answers it builds."""
from __future__ import annotations

import json
import re
from pathlib import Path

from collab.errors import ERROR_CODES
from relay.endpoints.http_errors import FIXED_MESSAGES, STATUS, error_response, status_of

PROTOCOL = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def documented_table() -> dict[str, int]:
    text = PROTOCOL.read_text()
    section = text[text.index("### 15.2 Publishing over HTTP"):text.index("### 15.3 OpenAPI")]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `([a-z_]+)` \| (\d{3}) \|$", section, re.MULTILINE)}


def test_the_table_is_the_documented_one_and_covers_every_code() -> None:
    assert documented_table() == STATUS
    assert set(ERROR_CODES) - {"bad_chain"} <= set(STATUS)  # bad_chain: clients only, never sent


def test_answers() -> None:
    resp = error_response("rate_limited", "too many events from this key; slow down", feed="doc/a", id=None)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert json.loads(resp.body) == {"error": "rate_limited", "message": "too many events from this key; slow down",
                                     "feed": "doc/a"}
    # a code that is not about the request: its fixed text, never the detail
    resp = error_response("unavailable", "sqlite at /var/lib/colony.db: disk I/O error")
    assert resp.status_code == 503 and "retry-after" in resp.headers
    assert json.loads(resp.body)["message"] == FIXED_MESSAGES["unavailable"]
    # an unknown code is a bug: 500 internal, fixed text
    assert status_of("what") == 500
    resp = error_response("what", "Traceback ...")
    assert resp.status_code == 500
    assert json.loads(resp.body) == {"error": "internal", "message": FIXED_MESSAGES["internal"]}
    # a member that cannot be sent as UTF-8 is left out, not a crash
    resp = error_response("invalid", "bad", id="\ud800")
    assert resp.status_code == 400 and "id" not in json.loads(resp.body) and "retry-after" not in resp.headers
