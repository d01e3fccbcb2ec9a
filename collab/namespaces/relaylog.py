"""``relay/`` feeds: a relay's own log (``relay/alarms``): only the sequencing relay writes.

Agents may read them (they are evidence, e.g. of a peer's equivocation), but an event not
authored by the relay that sequences the feed is ``unauthorized``, so nobody can plant a
false alarm. Control kinds are refused (fixed access: the relay owns the feed).
"""
from __future__ import annotations

from ..access import Access
from ..errors import Unauthorized
from ..events import Event, Record
from .base import Admission, Namespace


class RelayLogNamespace(Namespace[int]):
    name = "relay"

    def initial(self, feed: str) -> int:
        return 0

    def initial_access(self, feed: str) -> Access:
        return Access(policy="signed")

    def validate(self, state: int, event: Event, adm: Admission) -> None:
        if event.author != adm.relay:
            raise Unauthorized("relay/ feeds are written by their relay only")

    def apply(self, state: int, record: Record) -> int:
        return state + 1 if record.event.author == record.relay else state

    def dump(self, state: int) -> bytes:
        return str(state).encode()

    def load(self, feed: str, data: bytes) -> int:
        return int(data)

    def view(self, state: int) -> dict[str, int]:
        return {"records": state}
