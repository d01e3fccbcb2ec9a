"""``ledger/`` feeds: stake credits per key (docs/coordination.md, "Stake ledger").

Agents never write here: operators grant credits and the relay moves them (locks a bidder's
stake or a requester's escrow before it sequences the auction event that needs it, then
releases, rewards or slashes the lock). Balances are a fold of this one feed, so anyone who
replays it gets the same balances, and no admissible sequence makes a balance negative.

The ledger is one long-lived feed touched by every auction, so the state is persistent
(:class:`PMap`): a record copies O(keys/256) entries, not every balance.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..canonical import MAX_SAFE_INT, canonical, parse_json
from ..errors import ColonyError, Conflict, InsufficientFunds, InvalidEvent, Unauthorized
from ..events import HEX64_RE, Event, Record
from .base import Admission, Namespace

KINDS = ("ledger.open", "ledger.grant", "ledger.lock", "ledger.release", "ledger.reward", "ledger.slash")
RELAY_KINDS = frozenset(KINDS) - {"ledger.grant"}
MAX_MEMO = 200
MAX_REF = 256

V = TypeVar("V")


# -- body checks (shared with the auction namespace) ------------------------------------------

def body_fields(body: Any, required: AbstractSet[str], optional: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    """The body as a dict with exactly ``required`` and some of ``optional`` (else ``invalid``)."""
    if not isinstance(body, dict):
        raise InvalidEvent("body must be an object")
    missing, unknown = required - set(body), set(body) - required - optional
    if missing or unknown:
        raise InvalidEvent(f"body fields wrong (missing {sorted(missing)}, unknown {sorted(unknown)})")
    return body


def check_int(value: Any, name: str, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidEvent(f"{name} must be an integer in {lo}..{hi}")
    return value


def check_key(value: Any, name: str) -> str:
    if not isinstance(value, str) or not HEX64_RE.match(value):
        raise InvalidEvent(f"{name} must be a key (64 lowercase hex chars)")
    return value


def check_str(value: Any, name: str, hi: int, lo: int = 0) -> str:
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise InvalidEvent(f"{name} must be a string of {lo}..{hi} chars")
    return value


# -- a small persistent map -------------------------------------------------------------------

_NBUCKETS = 256
_EMPTY: tuple[dict[str, Any], ...] = tuple({} for _ in range(_NBUCKETS))


class PMap(Generic[V]):
    """An immutable ``str -> V`` map in 256 buckets: ``set`` copies the bucket table and one bucket.

    Buckets are never mutated after construction, so versions share them safely.
    """

    __slots__ = ("_buckets", "_len")

    def __init__(self, buckets: tuple[dict[str, V], ...] = _EMPTY, length: int = 0) -> None:
        self._buckets = buckets
        self._len = length

    @classmethod
    def of(cls, items: Mapping[str, V]) -> PMap[V]:
        buckets: list[dict[str, V]] = [{} for _ in range(_NBUCKETS)]
        for k, v in items.items():
            buckets[_slot(k)][k] = v
        return cls(tuple(buckets), len(items))

    def get(self, key: str, default: V | None = None) -> V | None:
        return self._buckets[_slot(key)].get(key, default)

    def set(self, key: str, value: V | None) -> PMap[V]:
        """A new map with ``key`` bound to ``value`` (``None`` removes it)."""
        i = _slot(key)
        old = self._buckets[i]
        if value is None:
            if key not in old:
                return self
            new = dict(old)
            del new[key]
            length = self._len - 1
        else:
            new = {**old, key: value}
            length = self._len + (key not in old)
        return PMap((*self._buckets[:i], new, *self._buckets[i + 1:]), length)

    def items(self) -> Iterator[tuple[str, V]]:
        for bucket in self._buckets:
            yield from bucket.items()

    def to_dict(self) -> dict[str, V]:
        return dict(sorted(self.items()))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._buckets[_slot(key)]

    def __len__(self) -> int:
        return self._len


def _slot(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (_NBUCKETS - 1)


# -- state --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LedgerState:
    """Balances of one ledger feed. ``operators`` is None until ``ledger.open``.

    ``locks[ref][key]`` is one lock (at most one per (ref, key)); ``locked[key]`` is its total
    over refs and ``supply`` the sum of every grant (= available + locked, conserved by moves).
    Zero entries are dropped so equal balances give equal states.
    """

    operators: tuple[str, ...] | None = None
    available: PMap[int] = field(default_factory=PMap)
    locked: PMap[int] = field(default_factory=PMap)
    locks: PMap[Mapping[str, int]] = field(default_factory=PMap)
    supply: int = 0

    def available_of(self, key: str) -> int:
        return self.available.get(key) or 0

    def locked_of(self, key: str) -> int:
        return self.locked.get(key) or 0

    def lock_of(self, ref: str, key: str) -> int:
        held = self.locks.get(ref)
        return held.get(key, 0) if held else 0


def _add(m: PMap[int], key: str, delta: int) -> PMap[int]:
    return m.set(key, (m.get(key) or 0) + delta or None)


def _set_lock(state: LedgerState, ref: str, key: str, amount: int) -> PMap[Mapping[str, int]]:
    held = dict(state.locks.get(ref) or {})
    if amount:
        held[key] = amount
    else:
        held.pop(key, None)
    return state.locks.set(ref, held or None)


# -- the namespace ------------------------------------------------------------------------------

class LedgerNamespace(Namespace[LedgerState]):
    name = "ledger"
    kinds = frozenset(KINDS)
    relay_owned = True  # the relay opens a ledger (``ledger.open``); nobody else may be its seq 1

    def initial(self, feed: str) -> LedgerState:
        return LedgerState()

    def validate(self, state: LedgerState, event: Event, adm: Admission) -> None:
        kind = event.kind
        if kind not in self.kinds:
            raise InvalidEvent(f"ledger feeds accept kinds {sorted(KINDS)}")
        if kind in RELAY_KINDS and event.author != adm.relay:
            raise Unauthorized(f"{kind} is written by the relay only")
        if kind == "ledger.open":
            ops = body_fields(event.body, {"operators"})["operators"]
            if not isinstance(ops, list):
                raise InvalidEvent("operators must be a list of keys")
            for k in ops:
                check_key(k, "operator")
            if len(set(ops)) != len(ops):
                raise InvalidEvent("operators must be distinct")
            if state.operators is not None:
                raise Conflict("the ledger is already open")
            return
        if state.operators is None:
            raise Conflict("the ledger is not open yet (ledger.open must be its first event)")
        if kind == "ledger.grant":
            if event.author not in state.operators:
                raise Unauthorized("only an operator of this ledger may grant credits")
            body = body_fields(event.body, {"to", "amount"}, {"memo"})
            check_key(body["to"], "to")
            amount = check_int(body["amount"], "amount", 1)
            if "memo" in body:
                check_str(body["memo"], "memo", MAX_MEMO)
            if state.supply + amount > MAX_SAFE_INT:
                raise InvalidEvent("the grant would take the ledger's supply past 2^53-1")
            return
        if kind == "ledger.lock":
            body = body_fields(event.body, {"key", "amount", "ref"})
            key, ref = check_key(body["key"], "key"), check_str(body["ref"], "ref", MAX_REF, 1)
            amount = check_int(body["amount"], "amount", 1)
            if state.lock_of(ref, key):
                raise Conflict("this key already has a lock under this ref")
            if state.available_of(key) < amount:
                raise InsufficientFunds(f"available {state.available_of(key)} < {amount}")
            return
        body = body_fields(event.body, {"key", "ref"} | ({"to"} if kind != "ledger.release" else set()))
        key, ref = check_key(body["key"], "key"), check_str(body["ref"], "ref", MAX_REF, 1)
        if "to" in body:
            check_key(body["to"], "to")
        if not state.lock_of(ref, key):
            raise Conflict("no such lock")

    def apply(self, state: LedgerState, record: Record) -> LedgerState:
        """Fold a record; one that would not validate (an untrusted log) leaves the state as is."""
        ev = record.event
        try:
            self.validate(state, ev, Admission.of(record))
        except ColonyError:
            return state
        body, kind = ev.body, ev.kind
        if kind == "ledger.open":
            return LedgerState(tuple(body["operators"]), state.available, state.locked, state.locks, state.supply)
        if kind == "ledger.grant":
            return LedgerState(state.operators, _add(state.available, body["to"], body["amount"]), state.locked,
                               state.locks, state.supply + body["amount"])
        key, ref = body["key"], body["ref"]
        if kind == "ledger.lock":
            amount = body["amount"]
            return LedgerState(state.operators, _add(state.available, key, -amount),
                               _add(state.locked, key, amount), _set_lock(state, ref, key, amount), state.supply)
        amount = state.lock_of(ref, key)
        to = key if kind == "ledger.release" else body["to"]
        return LedgerState(state.operators, _add(state.available, to, amount), _add(state.locked, key, -amount),
                           _set_lock(state, ref, key, 0), state.supply)

    def dump(self, state: LedgerState) -> bytes:
        return canonical({
            "operators": list(state.operators) if state.operators is not None else None,
            "available": state.available.to_dict(),
            "locks": {ref: dict(held) for ref, held in sorted(state.locks.items())},
        })

    def load(self, feed: str, data: bytes) -> LedgerState:
        d = parse_json(data)
        if not isinstance(d, dict) or set(d) != {"operators", "available", "locks"}:
            raise ValueError("not a ledger snapshot")
        ops = d["operators"]
        available = {k: check_int(v, "available", 1) for k, v in d["available"].items()}
        locked: dict[str, int] = {}
        locks: dict[str, Mapping[str, int]] = {}
        for ref, held in d["locks"].items():
            locks[ref] = {k: check_int(v, "lock", 1) for k, v in held.items()}
            for k, v in held.items():
                locked[k] = locked.get(k, 0) + v
        supply = sum(available.values()) + sum(locked.values())
        return LedgerState(tuple(ops) if ops is not None else None, PMap.of(available), PMap.of(locked),
                           PMap.of(locks), supply)

    def view(self, state: LedgerState) -> dict[str, Any]:
        keys = sorted({k for k, _ in state.available.items()} | {k for k, _ in state.locked.items()})
        return {
            "operators": list(state.operators) if state.operators is not None else None,
            "balances": {k: {"available": state.available_of(k), "locked": state.locked_of(k)} for k in keys},
            "locks": {ref: dict(sorted(held.items())) for ref, held in sorted(state.locks.items())},
        }
