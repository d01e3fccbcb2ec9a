"""Relay settings in one place; the CLI and tests build a :class:`Config`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collab.sandbox_supervisor import SandboxSettings

from relay.core.limits import Limits, YjsLimits


@dataclass(slots=True)
class Config:
    data_dir: Path = Path("./colony-data")
    host: str = "127.0.0.1"
    port: int = 8765
    limits: Limits = field(default_factory=Limits)
    synchronous: str = "FULL"          # SQLite durability: FULL fsyncs each group commit
    snapshot_every: int = 256          # doc feeds: store a snapshot every N records
    snapshot_catchup: int = 200        # doc feeds: send a snapshot when further behind than this
    idle_feed_seconds: float = 300.0   # unload feeds with no subscribers after this long
    web_dir: Path | None = None        # viewer files (default: the packaged web/)
    relay_key_file: Path | None = None  # relay identity (default <data_dir>/relay.key); the
                                        # processes of one site share one file
    redis_url: str | None = None       # scale-out: share this Redis with other relay processes
    redis_prefix: str = "colony"       # key prefix in Redis (several sites can share one server)
    sync_interval: float = 2.0         # Redis: how often loaded feeds compare heads with storage
    presence_ttl: float = 15.0         # Redis: a crashed process's participants expire after this
    sequencer_lease: float = 2.0       # Redis: seconds a process's lease to sequence a feed lasts after
                                       # its last renewal (failover bound); 0: no leases, processes
                                       # race on the head (relay.core.sequencer)
    yjs: YjsLimits = field(default_factory=YjsLimits)  # the y-websocket endpoint /yjs/{name}
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)  # the Yjs engine's child processes
    verify_in_child: bool = True       # /ws publishes: signatures checked in a child process, a batch
                                       # per event-loop turn (relay.core.verifier); False: in-process
    ws_deflate: bool = False           # permessage-deflate: off, because compressing each small
                                       # record once per subscriber costs more CPU than it saves
                                       # (docs/benchmarks.md); turn on for slow links
    ws_ping_interval: float = 20.0     # WebSocket keep-alive: ping every connection this often and
    ws_ping_timeout: float = 20.0      # close it when the pong takes longer than this
    operators: tuple[str, ...] = ()    # keys that may grant ledger credits (docs/coordination.md)
    trust_pretrusted: tuple[str, ...] = ()  # EigenTrust pre-trusted keys (the relay key always is)
    trust_half_life: float = 30 * 24 * 3600.0  # seconds: a vouch's weight halves this often
    public_url: str | None = None      # federation: how peers reach this relay (default http://host:port)
    peers: tuple[str, ...] = ()        # federation members other than this relay, as URL#RELAYKEY
    replicate: tuple[str, ...] = ("vouch/",)  # feed prefixes every member mirrors (not on demand)
    pins: tuple[str, ...] = ()         # PATTERN=RELAYKEY: the home of matching feeds
