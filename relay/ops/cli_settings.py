"""``colony serve`` settings: the one table of settings (flag, environment variable, TOML key,
default, help), their parsers, and the resolution flag > environment > TOML file > default into
a :class:`relay.core.config.Config`. :mod:`relay.ops.cli` builds the parser and runs the commands."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from collab.errors import ColonyError
from collab.events import HEX64_RE
from collab.sandbox_supervisor import SandboxSettings

from relay.core.config import Config
from relay.core.limits import Limits, YjsLimits

def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _key_hex(text: str) -> str:
    if not HEX64_RE.match(text):
        raise argparse.ArgumentTypeError(f"a key is 64 lowercase hex characters, not {text!r}")
    return text


def _peer(text: str) -> str:
    from relay.core.routing import Member

    try:
        Member.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _pin(text: str) -> str:
    from relay.core.routing import parse_pin

    try:
        parse_pin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


# --- colony serve settings -------------------------------------------------------------------
#
# One table lists every setting of ``colony serve``. Each has a flag (--NAME-WITH-DASHES), an
# environment variable (COLONY_NAME_UPPER, plus older aliases) and a key in the optional TOML
# file (--config / COLONY_CONFIG; flat keys, NAME_WITH_UNDERSCORES). One precedence, resolved in
# resolve_settings: flag > environment variable > TOML file > built-in default. A list setting
# from a higher source replaces (never extends) the lists of lower ones. docs/operations.md
# "Configuration" documents the table.


class ConfigError(ColonyError, ValueError):
    """A setting from the environment or the TOML file is unknown or invalid (exit code 2)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0-65535, not {text!r}")
    return value


def _nonneg(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a non-negative {kind.__name__}, not {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


@dataclass(frozen=True)
class Setting:
    name: str                     # TOML key; the flag is --NAME-WITH-DASHES
    kind: type                    # str, int, float, bool or list (of str)
    default: Any
    help: str
    target: str | None = None     # Config field, "limits.FIELD", "yjs.FIELD"; None: not in Config
    env: tuple[str, ...] = ()     # variables read (first set wins); default COLONY_NAME_UPPER
    parse: Callable[[str], Any] | None = None  # text -> value (list settings: one item)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None  # how --help and the docs show the default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_names(self) -> tuple[str, ...]:
        return self.env or ("COLONY_" + self.name.upper(),)

    def convert(self, text: str) -> Any:
        """One text value (a flag, an env var, a list item) to the setting's value; raises
        ArgumentTypeError / ValueError when invalid."""
        if self.parse is not None:
            value = self.parse(text)
        elif self.kind in (int, float):
            value = self.kind(text)
        else:
            value = text
        if self.choices is not None and value not in self.choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(self.choices)}, not {text!r}")
        return value


_LIMIT_HELP = {
    "max_frame_bytes": "largest WebSocket message a client may send, in bytes",
    "max_event_bytes": "largest signed event, in bytes",
    "max_subscriptions": "feeds one connection may subscribe to",
    "events_per_sec_key": "sustained publish rate per author key (events/second, token bucket)",
    "burst_key": "publish burst per author key (token bucket size)",
    "events_per_sec_ip": "sustained publish rate per client IP, checked before signatures (events/second)",
    "burst_ip": "publish burst per client IP (token bucket size)",
    "max_outbound_frames": "frames queued to one connection before it is closed as too slow",
    "max_outbound_bytes": "bytes held for one connection (queued plus the socket's write buffer) before it is "
                          "cut as too slow",
    "unwritable_timeout": "seconds a connection's socket may stay unwritable (the peer reads nothing) before "
                          "it is aborted",
    "storage_timeout": "seconds a publish (and any storage call) waits for Redis before it is answered "
                       "unavailable; /health asks with a shorter bound (at most 0.5 s)",
    "max_backlog_page": "records per storage read while catching a subscriber up",
    "max_loaded_feeds": "feeds kept in memory per relay process (idle ones are unloaded, least recently used first)",
    "subs_per_sec": "sustained subscribe rate per connection (subscriptions/second, token bucket)",
    "subs_burst": "subscribe burst per connection (token bucket size)",
    "presence_interval": "seconds over which a feed's presence changes are coalesced into one frame",
    "max_connections_per_ip": "open WebSocket connections (/ws, /yjs, /fed), SSE streams and HTTP publishes waiting "
                              "for their answer, per client IP",
    "header_timeout": "seconds a client has to send a request's HTTP headers before it is disconnected, "
                      "and then the body of an HTTP publish",
    "first_message_timeout": "seconds a WebSocket client has to send its first message before it is closed",
    "stream_keepalive": "seconds between keep-alive comments on an SSE stream (GET /feeds/{feed}/stream)",
    "peer_max_subscriptions": "federation: mirror subscriptions one peer's /fed link may hold",
    "peer_frames_per_sec": "federation: frames per second from one peer (fwd, sub, unsub, heads; token bucket)",
    "peer_frames_burst": "federation: frame burst from one peer (token bucket size)",
    "peer_heads_per_sec": "federation: heads entries per second from one peer (token bucket)",
    "peer_heads_burst": "federation: heads entries burst from one peer; also the most in one frame",
    "alarms_per_sec": "federation: alarm events written to relay/alarms per second (the rest are logged and counted)",
    "alarms_burst": "federation: alarm events burst (token bucket size)",
    "feeds_per_sec_key": "feeds one author key may create per second, per relay process (token bucket)",
    "feeds_burst_key": "feed creation burst per author key (token bucket size)",
    "max_feeds_per_key": "feeds one author key may create in total, counted per relay process since it started",
    "max_doc_bytes": "a doc/ feed's size: the summed signing bytes of its events, in bytes",
    "events_per_sec_feed": "publishes per second to one feed, per relay process (token bucket)",
    "burst_feed": "publish burst per feed (token bucket size)",
    "max_doc_pending_bytes": "bytes of a document's updates that may wait for dependencies (beyond: too_large)",
    "max_doc_pending_updates": "updates of a document that may wait for dependencies (beyond: too_large)",
    "max_doc_pending_deletes": "deleted ranges of a document that may wait for dependencies (beyond: too_large)",
    "max_watches": "feed-id prefixes one connection may watch (watch frames; beyond: limit_exceeded)",
}
_SANDBOX_HELP = {
    "children": "Yjs sandbox: child processes that check Yjs updates before the relay applies them "
                "(docs/reliability.md)",
    "max_docs": "Yjs sandbox: documents each child keeps (LRU; a miss sends the document's state)",
    "timeout": "Yjs sandbox: seconds one check (a feed-worker batch) may take before the child is killed",
    "update_timeout": "Yjs sandbox: seconds one update may take when a failed batch is checked one at a time "
                      "(over: refused timeout)",
    "max_mb": "Yjs sandbox: a child's address-space limit in MiB (0: none)",
}
_YJS_HELP = {
    "awareness_per_sec": "Yjs endpoint: awareness messages per second per connection",
    "awareness_burst": "Yjs endpoint: awareness message burst per connection",
    "max_awareness_bytes": "Yjs endpoint: largest awareness message, in bytes",
    "max_awareness_state_bytes": "Yjs endpoint: largest awareness state of one client (JSON text), in bytes",
    "max_awareness_clients": "Yjs endpoint: awareness client ids one connection may control",
    "sync_requests_per_sec": "Yjs endpoint: sync step 1 requests per second per connection",
    "sync_requests_burst": "Yjs endpoint: sync step 1 request burst per connection",
    "awareness_timeout": "Yjs endpoint: seconds after which an awareness state not renewed is removed",
    "agent_renew": "Yjs endpoint: agents' awareness states are renewed this often (seconds)",
    "max_queued_write_bytes": "Yjs endpoint: bytes of one writer's edits waiting to be recorded",
}


def _settings() -> tuple[Setting, ...]:
    base = Config()
    s = Setting
    out = [
        s("host", str, base.host, "interface to listen on", "host", metavar="ADDR"),
        s("port", int, base.port, "TCP port (0 picks a free one)", "port", parse=_port),
        s("data", str, "./colony-data", "data directory: SQLite log, snapshots, relay key", "data_dir",
          metavar="DIR"),
        s("synchronous", str, base.synchronous, "SQLite durability; FULL fsyncs every group commit",
          "synchronous", choices=("FULL", "NORMAL", "EXTRA")),
        s("redis", str, None, "share this Redis (redis://HOST:PORT/DB, or a cluster node) with other relay "
          "processes instead of the embedded SQLite store", "redis_url", metavar="URL"),
        s("relay_key", str, None, "the relay's Ed25519 identity file (created if missing). Processes "
          "serving one site from one Redis should share it", "relay_key_file", metavar="FILE",
          default_text="<data>/relay.key"),
        s("redis_prefix", str, base.redis_prefix, "key prefix in Redis (one per site sharing a Redis server)",
          "redis_prefix", metavar="PREFIX"),
        s("sync_interval", float, base.sync_interval, "with --redis: how often each loaded feed compares its "
          "head with Redis and catches up on records a lost pub/sub message hid", "sync_interval",
          parse=_positive, metavar="SECONDS"),
        s("presence_ttl", float, base.presence_ttl, "with --redis: a process's participant entries expire this "
          "long after its last refresh (every TTL/3), so the clients of a crashed process leave the "
          "participant lists of the others", "presence_ttl", parse=_positive, metavar="SECONDS"),
        s("sequencer_lease", float, base.sequencer_lease, "with --redis: one process at a time sequences a "
          "feed, under a lease in Redis that lasts this long after its last renewal (renewed every quarter "
          "of it): a crashed sequencer's feeds move to another process within about this long. 0: no "
          "leases, every process appends and they race on the feed's head", "sequencer_lease",
          parse=_nonneg(float), metavar="SECONDS"),
        s("snapshot_every", int, base.snapshot_every, "doc feeds: store a snapshot every N records",
          "snapshot_every", parse=_positive_int, metavar="N"),
        s("snapshot_catchup", int, base.snapshot_catchup, "doc feeds: send a subscriber a snapshot instead of "
          "records when it is further behind than N", "snapshot_catchup", parse=_nonneg(int), metavar="N"),
        s("idle_feed_seconds", float, base.idle_feed_seconds, "unload feeds without subscribers after this long",
          "idle_feed_seconds", parse=_positive, metavar="SECONDS"),
        s("web_dir", str, None, "serve the viewer from this directory", "web_dir", metavar="DIR",
          default_text="the packaged web/"),
        s("ws_deflate", bool, base.ws_deflate, "accept WebSocket permessage-deflate (off by default: "
          "per-subscriber compression of small records costs more CPU than it saves on fast links)",
          "ws_deflate"),
        s("verify_in_child", bool, base.verify_in_child, "check /ws publish signatures and sign receipts in a "
          "child process, off the event loop (on by default; off: in-process)", "verify_in_child"),
        s("ws_ping_interval", float, base.ws_ping_interval, "WebSocket keep-alive: ping every connection this "
          "often", "ws_ping_interval", parse=_positive, metavar="SECONDS"),
        s("ws_ping_timeout", float, base.ws_ping_timeout, "WebSocket keep-alive: close a connection whose pong "
          "takes longer than this", "ws_ping_timeout", parse=_positive, metavar="SECONDS"),
        s("operator", list, [], "a key that may grant stake credits in ledger/ feeds (repeatable)", "operators",
          env=("COLONY_OPERATORS", "COLONY_OPERATOR"), parse=_key_hex, metavar="KEY"),
        s("trust_pretrusted", list, [], "an EigenTrust pre-trusted key (repeatable; the relay key always is)",
          "trust_pretrusted", parse=_key_hex, metavar="KEY"),
        s("trust_half_life", float, base.trust_half_life, "a vouch's weight halves this often",
          "trust_half_life", parse=_positive, metavar="SECONDS"),
        s("public_url", str, None, "federation: how peers reach this relay", "public_url",
          metavar="URL", default_text="http://HOST:PORT"),
        s("peer", list, [], "federation: another member relay, its base URL and relay key (repeatable); "
          "see docs/federation.md", "peers", env=("COLONY_PEERS", "COLONY_PEER"), parse=_peer, metavar="URL#KEY"),
        s("replicate", list, list(base.replicate), "federation: feeds with this prefix are mirrored by every "
          "member (repeatable)", "replicate", metavar="PREFIX"),
        s("pin", list, [], "federation: the home relay of feeds matching PATTERN (fnmatch; repeatable)", "pins",
          env=("COLONY_PINS", "COLONY_PIN"), parse=_pin, metavar="PATTERN=KEY"),
        s("log_level", str, "info", "log level", choices=("debug", "info", "warning", "error")),
        s("log_format", str, "text", "log format: text lines, or one JSON object per line",
          choices=("text", "json")),
    ]
    for name in Limits.names():
        default = getattr(base.limits, name)
        out.append(s(name, type(default), default, _LIMIT_HELP.get(name, "limit") + " (advertised at GET /limits)",
                     "limits." + name, parse=_nonneg(type(default)), metavar="N"))
    for f in fields(YjsLimits):
        default = getattr(base.yjs, f.name)
        out.append(s("yjs_" + f.name, type(default), default, _YJS_HELP.get(f.name, "Yjs endpoint limit"),
                     "yjs." + f.name, parse=_nonneg(type(default)), metavar="N"))
    for f in fields(SandboxSettings):
        default = getattr(base.sandbox, f.name)
        out.append(s("sandbox_" + f.name, type(default), default, _SANDBOX_HELP[f.name],
                     "sandbox." + f.name, parse=_nonneg(type(default)), metavar="N"))
    return tuple(out)


SETTINGS: tuple[Setting, ...] = _settings()
SETTINGS_BY_NAME = {st.name: st for st in SETTINGS}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Every setting can also come from an environment variable or a TOML file (--config); "
                "precedence: flag > environment variable > TOML file > default. See docs/operations.md.")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file of settings: flat keys named like the flags with underscores, e.g. "
                        "port = 8765, peer = [\"http://...#KEY\"], max_frame_bytes = 65536 (env COLONY_CONFIG)")
    for st in SETTINGS:
        envs = " or ".join(st.env_names)
        help_text = f"{st.help} (default {st.default_text or _show(st.default)}; env {envs}"
        help_text += ", comma-separated)" if st.kind is list else ")"
        kw: dict[str, Any] = {"dest": st.name, "default": None, "help": help_text}
        if st.kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = st.convert
            kw["metavar"] = st.metavar or ("{" + ",".join(st.choices) + "}" if st.choices else st.name.upper())
            if st.kind is list:
                kw["action"] = "append"
        p.add_argument(st.flag, **kw)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(st: Setting, var: str, text: str) -> Any:
    try:
        if st.kind is bool:
            low = text.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(f"expected one of {', '.join(sorted(_TRUE | _FALSE))}, not {text!r}")
            return low in _TRUE
        if st.kind is list:
            return [st.convert(item) for item in text.replace(",", " ").split() if item]
        return st.convert(text.strip())
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(f"environment variable {var}: {exc}") from exc


def _from_toml(st: Setting, value: Any, where: str) -> Any:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{where}: key {st.name!r}: {why}")

    def one(item: Any, kind: type) -> Any:
        ok = {str: isinstance(item, str), bool: isinstance(item, bool),
              int: isinstance(item, int) and not isinstance(item, bool),
              float: isinstance(item, (int, float)) and not isinstance(item, bool)}[kind]
        if not ok:
            raise bad(f"expected {'a string' if kind is str else 'a ' + kind.__name__}, "
                      f"not {type(item).__name__} {item!r}")
        if kind is bool:
            return item
        try:
            return st.convert(str(item))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise bad(str(exc)) from exc

    if st.kind is list:
        if not isinstance(value, list):
            raise bad(f"expected a list of strings, not {type(value).__name__} {value!r}")
        return [one(item, str) for item in value]
    return one(value, st.kind)


def _load_toml(path_text: str) -> dict[str, Any]:
    import tomllib

    path = Path(path_text)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    for key, value in data.items():
        st = SETTINGS_BY_NAME.get(key)
        if st is None:
            hint = " (settings are flat keys, not tables)" if isinstance(value, dict) else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; valid keys are the serve flags with "
                              f"underscores (colony serve --help)")
        out[key] = _from_toml(st, value, str(path))
    return out


def resolve_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value: flag > environment variable > TOML file > default.

    An environment variable set to the empty string counts as unset. Raises ConfigError."""
    env = os.environ if environ is None else environ
    config_path = getattr(args, "config", None) or env.get("COLONY_CONFIG") or None
    from_file = _load_toml(config_path) if config_path else {}
    values: dict[str, Any] = {}
    for st in SETTINGS:
        flag = getattr(args, st.name, None)
        if flag is not None:
            values[st.name] = flag
            continue
        var = next((v for v in st.env_names if env.get(v, "") != ""), None)
        if var is not None:
            values[st.name] = _from_env(st, var, env[var])
        elif st.name in from_file:
            values[st.name] = from_file[st.name]
        else:
            values[st.name] = list(st.default) if isinstance(st.default, list) else st.default
    return values


def _config_of(values: dict[str, Any]) -> Config:
    kw: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    yjs: dict[str, Any] = {}
    sandbox: dict[str, Any] = {}
    paths = {"data_dir", "relay_key_file", "web_dir"}
    for st in SETTINGS:
        if st.target is None:
            continue
        value = values[st.name]
        if st.target.startswith("limits."):
            limits[st.target[7:]] = value
        elif st.target.startswith("yjs."):
            yjs[st.target[4:]] = value
        elif st.target.startswith("sandbox."):
            sandbox[st.target[8:]] = value
        elif st.kind is list:
            kw[st.target] = tuple(value)
        elif st.target in paths:
            kw[st.target] = Path(value) if value else None
        else:
            kw[st.target] = value if value != "" or st.default is not None else None
    return Config(limits=Limits(**limits), yjs=YjsLimits(**yjs), sandbox=SandboxSettings(**sandbox), **kw)


def config_from(args: argparse.Namespace) -> Config:
    """The Config of parsed ``colony serve`` arguments, with the environment and --config file
    applied (flag > environment variable > TOML file > default). Raises ConfigError."""
    return _config_of(resolve_settings(args))
