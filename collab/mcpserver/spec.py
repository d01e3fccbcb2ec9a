"""What an MCP tool is here: a name, a description written for a language model, a JSON
Schema for its arguments, and the :class:`collab.agent.Agent` method it calls.

The schemas are written by hand (small builders below keep them short and uniform) and every
call's arguments are checked against them before the agent is touched, so a model's bad
arguments come back as a tool error naming the argument, never as an exception inside the
agent. Each schema is a closed JSON object (``additionalProperties: false``) with bounded
strings and integers: the arguments come from a model, and from a network when the server
speaks HTTP.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import FEED_RE

#: ``call(agent, arguments) -> JSON-able result``
Caller = Callable[[Any, dict[str, Any]], Awaitable[Any]]

Schema = dict[str, Any]

MAX_TEXT = 1_000_000    # characters of document text one call may write
MAX_NOTE = 1000         # the namespaces' limit on notes and reasons (docs/coordination.md)
MAX_WAIT_S = 300        # a wait blocks at most this long (hosts time tool calls out)
FEED_PATTERN = FEED_RE.pattern.removesuffix("\\Z") + "$"  # collab.events.FEED_RE as a JSON Schema pattern
PREFIX_PATTERN = r"^[A-Za-z0-9._~:@+=/-]*$"
KEY_PATTERN = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class ToolSpec:
    """One tool. ``method`` names the Agent method it wraps (for the record and for tests);
    ``call`` makes the call from checked arguments."""

    name: str
    description: str
    schema: Schema
    call: Caller
    method: str = ""
    annotations: Mapping[str, Any] = field(default_factory=dict)


# -- schema builders ---------------------------------------------------------------------------
def obj(required: list[str] | None = None, **props: Schema) -> Schema:
    """A closed object schema; ``required`` names the properties a call must give."""
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        missing = [r for r in required if r not in props]
        if missing:
            raise ValueError(f"required properties {missing} are not defined")
        schema["required"] = list(required)
    return schema


def string(description: str, *, max_length: int = 1000, min_length: int = 0, pattern: str | None = None,
           enum: list[str] | None = None) -> Schema:
    s: Schema = {"type": "string", "description": description, "maxLength": max_length}
    if min_length:
        s["minLength"] = min_length
    if pattern is not None:
        s["pattern"] = pattern
    if enum is not None:
        s["enum"] = enum
    return s


def integer(description: str, *, minimum: int = 0, maximum: int = 2**53 - 1, default: int | None = None) -> Schema:
    s: Schema = {"type": "integer", "description": description, "minimum": minimum, "maximum": maximum}
    if default is not None:
        s["default"] = default
    return s


def number(description: str, *, minimum: float = 0, maximum: float, default: float | None = None) -> Schema:
    s: Schema = {"type": "number", "description": description, "minimum": minimum, "maximum": maximum}
    if default is not None:
        s["default"] = default
    return s


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def anything(description: str) -> Schema:
    """Any JSON value (a task, a result, a body): the relay bounds its size."""
    return {"description": description}


def feed(description: str = "The feed id, `<namespace>/<name>`.") -> Schema:
    return string(description, max_length=256, min_length=3, pattern=FEED_PATTERN)


def key(description: str) -> Schema:
    return string(description + " (64 lowercase hex characters)", max_length=64, min_length=64,
                  pattern=KEY_PATTERN)


def string_list(description: str, *, max_items: int = 32, max_length: int = 64) -> Schema:
    return {"type": "array", "description": description, "maxItems": max_items,
            "items": {"type": "string", "minLength": 1, "maxLength": max_length}}


# -- calls -------------------------------------------------------------------------------------
def method_call(method: str, rename: Mapping[str, str] | None = None) -> Caller:
    """``agent.<method>(**arguments)``, with argument names renamed where the tool's name for an
    argument reads better for a model than the SDK's."""
    names = dict(rename or {})

    async def call(agent: Any, args: dict[str, Any]) -> Any:
        return await getattr(agent, method)(**{names.get(k, k): v for k, v in args.items()})

    return call


def tool(name: str, description: str, schema: Schema, method: str | None = None, *,
         rename: Mapping[str, str] | None = None, call: Caller | None = None, read_only: bool = False) -> ToolSpec:
    m = method or name
    return ToolSpec(name=name, description=description.strip(), schema=schema,
                    call=call or method_call(m, rename), method=m,
                    annotations={"readOnlyHint": read_only})


# -- argument checks ---------------------------------------------------------------------------
def check_arguments(spec: ToolSpec, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments as a dict after checking them against the tool's schema; raises
    ValueError with a sentence naming the argument and what is wrong with it."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    args = dict(arguments or {})
    error = best_match(Draft202012Validator(spec.schema).iter_errors(args))
    if error is None:
        return args
    where = ".".join(str(p) for p in error.absolute_path)
    what = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    what = what.rstrip(".") + "."
    if where:
        raise ValueError(f"bad argument `{where}` for {spec.name}: {what}")
    raise ValueError(f"bad arguments for {spec.name}: {what}")
