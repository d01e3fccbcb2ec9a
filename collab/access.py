"""Feed access policy: a pure fold over a feed's core control events.

Every feed has a policy fixed by its first record:
  ``open``     anyone may publish (even without an authenticated hello) and read;
  ``signed``   (default) an authenticated agent may publish events it authored; anyone reads;
  ``members``  only the owner and keys it granted may read / write.
The author of seq 1 is the feed's *owner*. The control kinds (usable in every namespace):
  ``feed.policy`` {policy}                     only as seq 1;
  ``acl.grant``   {key, read: bool, write: bool}  owner only;
  ``acl.revoke``  {key}                         owner only.

Capabilities (``collab.capability``): a ``doc.update`` whose body carries ``cap`` (a
capability object issued by the feed's owner with the ``write`` right, not expired at the
relay's receipt time, the ``rtime`` the record carries; never the author's ``ts``) is written
*on behalf of* that capability. The cap is checked whatever the
policy (a bogus claim never reaches the log); under ``members`` it stands in for the author
being a granted writer. The relay's Yjs endpoint publishes its writable clients' edits this way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .capability import Capability
from .errors import InvalidEvent, Unauthorized
from .events import HEX64_RE, Event

POLICIES = ("open", "signed", "members")
CONTROL_KINDS = frozenset(("feed.policy", "acl.grant", "acl.revoke"))
#: kinds whose object body may carry ``cap``: a write capability the event is written under
CAP_KINDS = frozenset(("doc.update",))


def claims_capability(event: Event) -> bool:
    """Whether the event's body has a ``cap`` member (which must then be a valid capability)."""
    return event.kind in CAP_KINDS and isinstance(event.body, dict) and "cap" in event.body


@dataclass(frozen=True, slots=True)
class Access:
    policy: str = "signed"
    owner: str | None = None
    readers: frozenset[str] = field(default_factory=frozenset)
    writers: frozenset[str] = field(default_factory=frozenset)

    def can_read(self, key: str | None) -> bool:
        if self.policy != "members":
            return True
        return key is not None and (key == self.owner or key in self.readers)

    def check_write(self, event: Event, session_key: str | None, seq: int, now: int) -> None:
        """Raise Unauthorized unless this connection may append ``event`` at ``seq`` with relay
        time ``now`` (the record's ``rtime``; a replayer passes the stored one)."""
        cap = self.check_capability(event, now) if claims_capability(event) else None
        if self.policy == "open" and seq > 1:
            return
        if session_key is None:
            if (seq == 1 and event.kind == "feed.policy" and isinstance(event.body, dict)
                    and event.body.get("policy") == "open"):
                return
            from .errors import AuthRequired

            raise AuthRequired("send an authenticated hello before publishing to this feed")
        if event.author != session_key:
            raise Unauthorized("event author differs from the authenticated key of this connection")
        if (self.policy == "members" and seq > 1
                and event.author != self.owner and event.author not in self.writers and cap is None):
            raise Unauthorized("key is not a writer of this members-only feed")

    def check_capability(self, event: Event, now: int) -> Capability:
        """Validate the ``cap`` an event carries: the owner's write grant for this feed, not
        expired at relay time ``now`` (the record's ``rtime``, never the author's ``ts``).
        Raise InvalidEvent / BadSignature / Unauthorized."""
        cap = Capability.from_wire_cached(event.body["cap"])
        cap.check(event.feed, self.owner, "write", now)
        return cap

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "owner": self.owner,
                "readers": sorted(self.readers), "writers": sorted(self.writers)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Access:
        return cls(d["policy"], d.get("owner"), frozenset(d.get("readers", ())), frozenset(d.get("writers", ())))


def validate_control(access: Access, event: Event, seq: int) -> None:
    """Check a control event's body and author; raise InvalidEvent / Unauthorized."""
    body = event.body
    if not isinstance(body, dict):
        raise InvalidEvent(f"{event.kind} body must be an object")
    if event.kind == "feed.policy":
        if seq != 1:
            raise InvalidEvent("feed.policy is only allowed as the first event of a feed")
        if body.get("policy") not in POLICIES or set(body) != {"policy"}:
            raise InvalidEvent("feed.policy body is {policy: open|signed|members}")
        return
    if event.author != access.owner:
        raise Unauthorized(f"only the feed owner may {event.kind}")
    key = body.get("key")
    if not isinstance(key, str) or not HEX64_RE.match(key):
        raise InvalidEvent(f"{event.kind} needs key: 64 lowercase hex chars")
    if event.kind == "acl.grant":
        if set(body) - {"key", "read", "write"} or not all(
            isinstance(body.get(f, False), bool) for f in ("read", "write")
        ):
            raise InvalidEvent("acl.grant body is {key, read: bool, write: bool}")
    elif set(body) != {"key"}:
        raise InvalidEvent("acl.revoke body is {key}")


def apply_access(access: Access, event: Event, seq: int) -> Access:
    """Fold one event into the access state (non-control events only set the owner)."""
    if seq == 1:
        access = replace(access, owner=event.author)
    kind = event.kind
    if kind == "feed.policy" and seq == 1:
        return replace(access, policy=event.body["policy"])
    if kind == "acl.grant":
        key = event.body["key"]
        readers = access.readers | {key} if event.body.get("read", True) else access.readers - {key}
        writers = access.writers | {key} if event.body.get("write", False) else access.writers - {key}
        return replace(access, readers=readers, writers=writers)
    if kind == "acl.revoke":
        key = event.body["key"]
        return replace(access, readers=access.readers - {key}, writers=access.writers - {key})
    return access
