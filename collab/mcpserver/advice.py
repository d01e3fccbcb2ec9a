"""Turning failures into tool errors a language model can act on.

A relay refusal keeps its machine-readable code (docs/protocol.md section 13.1) and the relay's
message, and adds one sentence saying what to do. Nothing here raises: the server answers every
call, and a failure is a tool result with ``isError`` set.
"""
from __future__ import annotations

from ..errors import ColonyError

#: what a caller should do after each refusal code
ADVICE: dict[str, str] = {
    "malformed": "The request was not well formed; check the arguments against the tool's schema.",
    "too_large": "The content is over the relay's size limit; send less at once (split it over several calls).",
    "invalid": "The rules refuse this (the message says which); fix the arguments or re-read the current "
               "state, and do not retry the same call unchanged.",
    "late": "A deadline has passed (bids close at the auction's bid deadline, results at the result "
            "deadline); check the status tool and do not retry.",
    "conflict": "This contradicts the current state (e.g. a second bid, a result from an agent not "
                "assigned, a finished task); read the status tool and act on the current state.",
    "stale_epoch": "You no longer hold the lease this write is fenced with (it expired, you resigned, or a "
                   "newer epoch was granted); stop acting as leader, check lease_status, campaign again.",
    "insufficient_funds": "Your ledger balance does not cover the stake or reward; check ledger_balance, "
                          "bid less, or ask an operator for a grant.",
    "bad_signature": "A signature did not verify; this server's key may be unusable. Report it to the operator.",
    "auth_required": "This server has no identity to sign with; the operator must start it with --key.",
    "unauthorized": "Your key may not do this here (not the owner, requester, leader or assignee, or not a "
                    "member of this feed); use a feed you may write or ask its owner for access.",
    "rate_limited": "Too many events too fast; wait a few seconds, then retry the same call.",
    "limit_exceeded": "A per-connection or per-key limit is reached; stop waiting on or watching some feeds, "
                      "or reuse existing feeds.",
    "unavailable": "The relay could not store the event; nothing was written. Retry in a few seconds.",
    "busy": "The relay is overloaded right now; retry in a few seconds.",
    "home_unreachable": "The relay that homes this feed is unreachable; retry later.",
    "unreachable": "The relay does not answer; nothing was done. Retry in a little while (this server "
                   "reconnects by itself).",
    "false_evidence": "A relay of the federation gave false evidence; report it to the operator.",
    "not_found": "There is no such feed (no records yet); check the feed id, or create it by writing to it.",
    "bad_chain": "The relay's records do not verify; do not trust this relay's answer and report it.",
    "timeout": "Nothing happened in time; call again, or check the status tool.",
    "internal": "The relay or this server hit a bug; retry once, then report it.",
}
DEFAULT_ADVICE = "Do not retry the same call unchanged."


def refusal_text(code: str, message: str) -> str:
    """``refused (<code>): <relay message>. <what to do>`` (``unreachable: ...`` when no relay answered)"""
    message = message.strip().rstrip(".")
    word = "unreachable" if code == "unreachable" else f"refused ({code})"
    head = f"{word}: {message}." if message else f"{word}."
    return f"{head} {ADVICE.get(code, DEFAULT_ADVICE)}"


def error_text(exc: BaseException) -> str:
    """The text of the tool error for any exception a tool call raised (the caller logs bugs)."""
    if isinstance(exc, ColonyError):
        message = getattr(exc, "message", None)
        if not isinstance(message, str):
            message = str(exc)
            if message.startswith(exc.code + ": "):
                message = message[len(exc.code) + 2:]
        return refusal_text(exc.code, message)
    if isinstance(exc, ValueError):  # our own argument checks and the SDK's (bad values)
        return f"{exc} Fix the arguments and call again."
    if isinstance(exc, TimeoutError):
        return f"timed out: {str(exc) or 'no answer in time'}. {ADVICE['timeout']}"
    if isinstance(exc, OSError | ConnectionError):
        return (f"the relay is unreachable ({type(exc).__name__}: {exc}). Nothing was done; retry in a "
                "little while (this server reconnects by itself).")
    return (f"internal error in the MCP server ({type(exc).__name__}): {exc}. Retry once; if it happens "
            "again, report it.")
