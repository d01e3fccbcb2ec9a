"""One feed's subscribers: catch-up (snapshot, base or backlog), live fan-out, presence frames.

A :class:`Fanout` belongs to one :class:`relay.core.worker.FeedRuntime`; the worker calls it
between batches only (``start`` for a new subscription, ``send_batch`` after a commit), so a
subscriber always starts from a committed head: the snapshot or backlog covers exactly
``seq <= head`` and every later record arrives live (buffered until the backlog is sent).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Protocol

from collab import frames
from collab.access import Access
from collab.errors import InvalidEvent, Unauthorized, Unavailable
from collab.events import Snapshot
from collab.feedcore import FeedCore, record_frame
from collab.keys import Keypair

from relay.core.config import Config
from relay.core.memory import release_soon
from relay.core.presence import Participants, PresenceStore
from relay.core.wsframe import SharedText
from relay.core.metrics import Metrics
from relay.storage.base import Storage

log = logging.getLogger(__name__)

SHARED_MAX_BYTES = 256 << 10  # a batch up to this size goes out as one message (the outbox's coalescing limit)
#: from this many participants on, presence frames go out framed once for every subscriber that
#: takes them so (``Subscriber.shared_presence``), and a new subscriber's ``list`` waits for the end
#: of an open presence window, built once for all who joined in it: a feed with thousands of
#: participants would otherwise encode a list of all of them for each one that joins
SHARED_PRESENCE_AT = 64
RELEASE_AFTER = 256 << 10  # a presence list this large asks for freed memory to go back (relay.core.memory)


class Subscriber(Protocol):
    """What the hub needs of a connection: its key, how it reads, and ways to hand it frames."""

    key: str | None
    #: the subscriber does its own read checks for every client behind it (the Yjs endpoint's
    #: room, whose clients read ``members`` feeds by capability)
    reads_any: bool
    #: it stores records (a federation mirror): never send it a doc snapshot instead
    records_only: bool

    def deliver(self, frame: str) -> None:
        """Queue a frame without waiting; a connection that is too far behind closes itself."""

    async def deliver_wait(self, frame: str) -> None:
        """Queue a frame, waiting for room (used for backlogs, which must not be dropped)."""

    def deliver_shared(self, shared: SharedText) -> None:
        """Queue a batch of frames framed once for all subscribers (``shared.parts`` are the
        frames; a connection that cannot take a shared message delivers them one by one)."""


def shares_presence(sub: Subscriber) -> bool:
    """The subscriber takes presence frames as a :class:`SharedText` too (an agent's native
    connection sets ``shared_presence``; others filter or render frames one by one)."""
    return getattr(sub, "shared_presence", False) is True


@dataclass(slots=True)
class _SubState:
    key: str | None = None  # the key the subscriber had when it subscribed (its presence entry)
    live: bool = False
    buffer: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Fanout:
    """The subscribers of one feed and everything sent to them."""

    def __init__(self, core: FeedCore, storage: Storage, config: Config, metrics: Metrics, relay_key: Keypair,
                 presence: PresenceStore) -> None:
        self.core, self.storage, self.config, self.metrics, self.relay_key = core, storage, config, metrics, relay_key
        self.feed = core.feed
        self.subs: dict[Subscriber, _SubState] = {}
        self.people = Participants(core.feed, presence, self.broadcast, config.limits.presence_interval,
                                   self._send_lists)
        self._list_waiting: list[tuple[Subscriber, _SubState]] = []  # live, their presence list due
        self.base_seq = 0  # compacted (relay/ops/compact.py): records 1..base_seq are gone, base_frame stands for them
        self.base_frame = ""
        self._snap_cache: tuple[int, str] | None = None
        self._doc = core.ns.name == "doc"

    def set_base(self, seq: int, frame: str) -> None:
        self.base_seq, self.base_frame = seq, frame
        self._snap_cache = None

    # -- live ------------------------------------------------------------------------------
    def send_batch(self, parts: list[str]) -> None:
        """Send one batch's record frames to every subscriber; connections that can take a
        shared message get it framed once for all (``relay.endpoints.wsdirect.SharedText``)."""
        if not parts or not self.subs:
            return
        self.metrics.events_out.inc(self.core.ns.name, n=len(parts) * len(self.subs))
        shared = SharedText(parts) if len(parts) == 1 or sum(map(len, parts)) <= SHARED_MAX_BYTES else None
        for sub, st in self.subs.items():
            if not st.live:
                st.buffer.extend(parts)
            elif shared is not None:
                sub.deliver_shared(shared)
            else:
                for frame in parts:
                    sub.deliver(frame)

    def send_committed(self, parts: list[str], cuts: Sequence[tuple[int, Access]] = ()) -> None:
        """Send a commit's frames, cut where the access changed (``collab.feedcore.Committed``):
        the frames before a cut go to every subscriber, then those that may not read under the
        cut's access are dropped, then the rest goes out (the access-changing record included),
        so no record sequenced at or after a revoke reaches the reader it revoked."""
        done = 0
        for i, access in cuts:
            self.send_batch(parts[done:i])
            self.drop_unreadable(access)
            done = i
        self.send_batch(parts[done:] if done else parts)

    def broadcast(self, frame: str) -> None:
        shared = SharedText([frame]) if len(self.people.present) >= SHARED_PRESENCE_AT else None
        for sub, st in self.subs.items():
            if not st.live:
                st.buffer.append(frame)
            elif shared is not None and shares_presence(sub):
                sub.deliver_shared(shared)
            else:
                sub.deliver(frame)

    def _send_lists(self) -> None:
        """A presence window closed (its join/leave frames are out): the presence list to every
        subscriber that went live meanwhile and waits for it, built and framed once."""
        waiting, self._list_waiting = self._list_waiting, []
        shared: SharedText | None = None
        for sub, st in waiting:
            if self.subs.get(sub) is st:
                shared = shared or SharedText([self.people.list_frame()])
                sub.deliver_shared(shared)
        if shared is not None and len(shared.parts[0]) >= RELEASE_AFTER:
            release_soon()  # sockets that could not take it at once hold copies for a while

    def drop_unreadable(self, access: Access | None = None) -> None:
        """End the subscriptions that may not read under ``access`` (default: the feed's own)."""
        access = access or self.core.access
        for sub in [s for s in self.subs if not access.can_read(s.key) and not s.reads_any]:
            self.unsubscribe(sub)
            sub.deliver(frames.encode({"t": "unsubbed", "feed": self.feed, "reason": "unauthorized"}))

    # -- subscriptions ---------------------------------------------------------------------
    def start(self, sub: Subscriber, since: int) -> None:
        core = self.core
        if not core.access.can_read(sub.key) and not sub.reads_any:
            raise Unauthorized("this feed is members-only and your key may not read it")
        if sub in self.subs:
            raise InvalidEvent(f"already subscribed to {self.feed}")
        if sub.key is not None:
            self.people.add(sub.key)  # announced to the others before this one is listening
        st = _SubState(key=sub.key)
        self.subs[sub] = st
        dump_ok = self._doc and not sub.records_only  # a mirror stores records
        head = core.seq
        if head > 0 and dump_ok and (since == 0 or since < self.base_seq
                                     or head - since > self.config.snapshot_catchup):
            sub.deliver(self.snapshot_frame())
            self._go_live(sub, st, head, core.head)
        elif since < self.base_seq:  # the records it lacks are compacted: the base, then the tail
            sub.deliver(self.base_frame)
            st.task = asyncio.get_running_loop().create_task(self._catch_up(sub, st, self.base_seq, head))
        elif since >= head:
            self._go_live(sub, st, head, core.head)
        else:
            st.task = asyncio.get_running_loop().create_task(self._catch_up(sub, st, since, head))

    def snapshot_frame(self) -> str:
        core = self.core
        if self._snap_cache is None or self._snap_cache[0] != core.seq:
            state = core.ns.dump(core.state) or b""
            snap = Snapshot.seal(self.relay_key, self.feed, core.seq, core.head, state)
            self._snap_cache = (core.seq, frames.encode({"t": "snapshot", "feed": self.feed, "snap": snap.to_wire()}))
        return self._snap_cache[1]

    def _go_live(self, sub: Subscriber, st: _SubState, seq: int, head: str) -> None:
        """Send the caught-up marker, then what arrived meanwhile, then the participant list."""
        sub.deliver(frames.encode({"t": "synced", "feed": self.feed, "seq": seq, "head": head}))
        for frame in st.buffer:
            sub.deliver(frame)
        st.buffer.clear()
        st.live = True
        people = self.people
        if people.window_open and len(people.present) >= SHARED_PRESENCE_AT and shares_presence(sub):
            self._list_waiting.append((sub, st))  # at the window's end (_send_lists), shared
        else:
            sub.deliver(people.list_frame())

    async def _catch_up(self, sub: Subscriber, st: _SubState, since: int, head: int) -> None:
        page = self.config.limits.max_backlog_page
        last_hash = ""
        try:
            while since < head:
                rows = await self.storage.read(self.feed, since, min(page, head - since))
                if not rows:
                    break
                for row in rows:
                    await sub.deliver_wait(record_frame(self.feed, row.data))
                    since, last_hash = row.seq, row.hash
            if self.subs.get(sub) is st:
                self._go_live(sub, st, since, last_hash)
                st.task = None  # done: the subscription keeps no finished task
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("catch-up of a subscriber to %s failed", self.feed)
            self.unsubscribe(sub)
            reason = "unavailable" if isinstance(exc, Unavailable) else "internal"  # storage down: ask again
            sub.deliver(frames.encode({"t": "unsubbed", "feed": self.feed, "reason": reason}))

    def unsubscribe(self, sub: Subscriber) -> bool:
        st = self.subs.pop(sub, None)
        if st is None:
            return False
        if st.task is not None and not st.task.done():
            st.task.cancel()
        if st.key is not None:  # not sub.key: a hello after sub must not make a key leave it never joined
            self.people.remove(st.key)
        return True
