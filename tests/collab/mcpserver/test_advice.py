"""Failures as tool errors: the relay's code, its message, and what to do."""
from __future__ import annotations

from collab.errors import ERROR_CODES, InsufficientFunds, RelayError, Unreachable
from collab.mcpserver.advice import ADVICE, error_text, refusal_text


def test_refusals_keep_the_relay_code_and_say_what_to_do() -> None:
    text = error_text(RelayError("insufficient_funds", "stake 50 > available 10"))
    assert text.startswith("refused (insufficient_funds): stake 50 > available 10. ")
    assert "ledger_balance" in text
    assert error_text(InsufficientFunds("no credits")).startswith("refused (insufficient_funds): no credits.")
    assert error_text(RelayError("brand_new_code", "x")).startswith("refused (brand_new_code): x. Do not retry")
    assert refusal_text("late", "") == f"refused (late). {ADVICE['late']}"
    gone = error_text(Unreachable("http://127.0.0.1:9", "connection refused"))
    assert gone.startswith("unreachable: cannot reach http://127.0.0.1:9: connection refused. The relay does not")
    assert error_text(ValueError("bad argument `x`.")).endswith("Fix the arguments and call again.")
    assert error_text(TimeoutError()).startswith("timed out: no answer in time.")
    assert error_text(ConnectionRefusedError("refused")).startswith("the relay is unreachable (")
    assert error_text(KeyError("x")).startswith("internal error in the MCP server (KeyError)")


def test_every_protocol_code_has_advice() -> None:
    for code in (*ERROR_CODES, "busy", "unreachable", "not_found", "bad_chain"):
        assert code in ADVICE, f"no advice for {code}"
