"""The fallback namespace: any kind, any canonical body; the state is just a count."""
from __future__ import annotations

from ..events import Event, Record
from .base import Admission, Namespace


class GenericNamespace(Namespace[int]):
    name = "*"

    def initial(self, feed: str) -> int:
        return 0

    def validate(self, state: int, event: Event, adm: Admission) -> None:
        return None

    def apply(self, state: int, record: Record) -> int:
        return state + 1

    def dump(self, state: int) -> bytes:
        return str(state).encode()

    def load(self, feed: str, data: bytes) -> int:
        return int(data)
