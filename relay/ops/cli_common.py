"""What every agent command of ``colony`` shares: the relay URL and key options, ``--json``, and
the exit codes (docs/agents.md, "Command line"), in one place.

Exit codes:

* 0 ``OK``: done;
* 1 ``REFUSED``: the relay refused (or a check of the command failed); stderr says
  ``error: <code>: <message>`` with the relay's code;
* 2 ``USAGE``: bad usage (argparse's own code), e.g. a missing argument, a JSON argument that
  does not parse, no key for a command that signs;
* 3 ``UNREACHABLE``: no relay answers at the URL (stderr names it), or it did not answer in time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

from collab.errors import ColonyError, RelayError, Unreachable
from collab.keys import Keypair

DEFAULT_RELAY = "http://127.0.0.1:8765"
DEFAULT_TIMEOUT = 30.0

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
EXIT_CODES = {OK: "ok", REFUSED: "refused by the relay (error: <code>: <message> on stderr)",
              USAGE: "usage error", UNREACHABLE: "the relay could not be reached (the URL is named)"}
EPILOG = "exit codes: 0 ok, 1 refused by the relay (the code on stderr), 2 usage, 3 relay unreachable"


def usage(message: str) -> NoReturn:
    """A usage error found after parsing: say so and exit 2, like argparse does."""
    print(f"colony: {message}", file=sys.stderr)
    raise SystemExit(USAGE)


def relay_url(args: argparse.Namespace) -> str:
    return str(getattr(args, "relay", None) or os.environ.get("COLONY_RELAY") or DEFAULT_RELAY)


def load_key(args: argparse.Namespace) -> Keypair:
    """The agent key of ``--key FILE`` or ``$COLONY_KEY`` (exit 2 when absent or unreadable)."""
    path = getattr(args, "key", None) or os.environ.get("COLONY_KEY")
    if not path:
        usage("this command signs events: pass --key FILE or set COLONY_KEY (create one with "
              "`colony keygen --out FILE`)")
    try:
        return Keypair.load(path)
    except (OSError, ValueError) as exc:
        usage(f"cannot load key {path}: {exc}")


def optional_key(args: argparse.Namespace) -> Keypair | None:
    """The key if one is given (reads are then signed: private feeds it may read are shown)."""
    return load_key(args) if getattr(args, "key", None) or os.environ.get("COLONY_KEY") else None


def json_value(text: str) -> Any:
    """argparse ``type=`` for a JSON argument (a bad one is a usage error, exit 2)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text[:60]!r}; quote strings: '\"text\"'") from None


def json_or_text(text: str) -> Any:
    """A JSON value if ``text`` parses as one, else the text itself (bodies of messages, results)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def client_args(p: argparse.ArgumentParser, *, key: bool | str = True, as_json: bool = True,
                timeout: bool = True) -> None:
    """``--relay``, ``--key`` (``key`` a string: its help), ``--json`` and ``--timeout``."""
    p.add_argument("--relay", default=None, metavar="URL",
                   help=f"relay base URL (default $COLONY_RELAY or {DEFAULT_RELAY})")
    if key:
        p.add_argument("--key", default=None, metavar="FILE",
                       help=key if isinstance(key, str) else "agent key file (default $COLONY_KEY)")
    if as_json:
        p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    if timeout:
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help=f"give up waiting for the relay after this long (default {DEFAULT_TIMEOUT:g})")


def add_command(sub: Any, name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with the exit codes."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, epilog=EPILOG, **kw)
    return p


def fail(exc: BaseException, url: str) -> int:
    """Print what went wrong (``error: <code>: <message>``) and return its exit code."""
    import httpx

    if isinstance(exc, Unreachable):
        print(f"error: unreachable: {exc}", file=sys.stderr)
        return UNREACHABLE
    if isinstance(exc, TimeoutError):  # before OSError, its base class
        print(f"error: timeout: no answer from {url} in time (--timeout)", file=sys.stderr)
        return UNREACHABLE
    if isinstance(exc, (OSError, httpx.TransportError)):
        print(f"error: unreachable: cannot reach {url}: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return UNREACHABLE
    if isinstance(exc, RelayError):
        print(f"error: {exc.code}: {exc.message or exc.code}", file=sys.stderr)
        return REFUSED
    if isinstance(exc, ColonyError):
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
        return REFUSED
    raise exc


def run(coro: Coroutine[Any, Any, int], url: str) -> int:
    """Run a command's coroutine; map failures to the exit codes above."""
    import httpx

    from relay.ops.cli import _run

    try:
        return _run(coro)
    except (ColonyError, OSError, TimeoutError, httpx.TransportError) as exc:
        return fail(exc, url)


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def one_line(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[:width - 3] + "..."


def ack_line(ack: dict[str, Any]) -> str:
    return f"{ack['feed']}#{ack['seq']} {ack['id']}" + (" (already stored)" if ack.get("dup") else "")


Human = Callable[[Any], str | None]


def agent_command(p: argparse.ArgumentParser, action: Callable[[Any, argparse.Namespace], Awaitable[Any]],
                  human: Human | None = None, *, signs: bool | Callable[[argparse.Namespace], bool] = True) -> None:
    """Make ``p`` run ``action(agent, args)`` on an :class:`collab.agent.Agent` and print its result:
    ``--json`` as one JSON document, else ``human(result)`` (default: indented JSON). ``signs``:
    the command needs a key, or a predicate of the arguments saying whether it does (else a key is
    used only if given, to sign reads)."""
    def fn(args: argparse.Namespace) -> int:
        from collab.agent import Agent, http_base
        from collab.errors import InvalidEvent

        url = relay_url(args)
        try:
            http_base(url)
        except InvalidEvent as exc:
            usage(f"--relay: {exc}")
        key = load_key(args) if (signs(args) if callable(signs) else signs) else optional_key(args)
        timeout = getattr(args, "timeout", DEFAULT_TIMEOUT)

        async def main() -> int:
            async with Agent(url, key, reconnect=False, timeout=timeout) as agent:
                result = await action(agent, args)
            if getattr(args, "json", False):
                print_json(result)
            else:
                text = human(result) if human is not None else json.dumps(result, ensure_ascii=False, indent=2)
                if text:
                    print(text)
            return OK

        return run(main(), url)

    p.set_defaults(fn=fn)


__all__ = ["DEFAULT_RELAY", "EPILOG", "EXIT_CODES", "OK", "REFUSED", "UNREACHABLE", "USAGE", "ack_line",
           "add_command", "agent_command", "client_args", "fail", "json_or_text", "json_value", "load_key",
           "one_line", "optional_key", "print_json", "relay_url", "run", "usage"]
