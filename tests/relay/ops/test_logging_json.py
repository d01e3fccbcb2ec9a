"""relay/ops/logging_json.py: one JSON object per log line, tracebacks included."""
from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from relay.ops.logging_json import JsonFormatter, configure


def record(msg: str, *args: object, exc: bool = False, stack: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.getLogger("relay.test").makeRecord("relay.test", logging.WARNING, __file__, 1, msg, args,
                                                     exc_info, sinfo="Stack (most recent call last):\n  here"
                                                     if stack else None)


def test_a_line_has_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("hello %s → %d", "wörld", 3))
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "WARNING" and out["logger"] == "relay.test" and out["message"] == "hello wörld → 3"
    assert out["ts"].endswith("+00:00") and "." in out["ts"] and "exc_info" not in out


def test_tracebacks_and_stacks_stay_on_one_line() -> None:
    line = JsonFormatter().format(record("failed", exc=True, stack=True))
    assert "\n" not in line
    out = json.loads(line)
    assert "ValueError: boom\nsecond line" in out["exc_info"] and "Traceback" in out["exc_info"]
    assert out["stack_info"].startswith("Stack")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uv = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
          for n in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, (hs, prop, lvl) in uv.items():
        logging.getLogger(n).handlers[:] = hs
        logging.getLogger(n).propagate = prop
        logging.getLogger(n).setLevel(lvl)


def test_configure_routes_everything_through_one_json_handler(restore_root: None,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()  # the handler writes to the stderr of the moment, which capsys captures
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    configure("info", "json")
    logging.getLogger("relay.x").info("one")
    logging.getLogger("uvicorn.error").error("two")  # (uvicorn.Config sets its loggers' own levels)
    logging.getLogger("relay.x").debug("not shown")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [("relay.x", "one"), ("uvicorn.error", "two")]
    with pytest.raises(ValueError, match="log format must be text or json, not 'xml'"):
        configure("info", "xml")
    configure("warning", "text")
    logging.getLogger("relay.x").warning("plain")
    assert capsys.readouterr().err.splitlines()[-1].endswith("WARNING relay.x: plain")
