"""``vouch/`` feeds: who vouches for whom, and the relay's record of delivered and slashed work.

Kinds (``docs/coordination.md``, "Vouching and trust"):

* ``vouch.set`` ``{subject, weight: -1000..1000, note?: str≤1000}`` by any key, not for itself;
* ``vouch.revoke`` ``{subject}`` by any key;
* ``vouch.outcome`` ``{subject, outcome: "delivered"|"slashed", ref: str≤256}`` by the relay only.

The state is the *set* of events that matter for trust: per ``(author, subject)`` only the
``vouch.set``/``vouch.revoke`` with the greatest ``(ts, id)``, plus every outcome. It never looks
at ``seq`` or ``rtime``, so the same events folded in any order give the same state (and the
same scores, ``collab.trust``). The state is immutable and shared copy-on-write: ``apply``
copies only the top-level map and the one row it changes, so a fold of n events stays cheap.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..canonical import canonical, parse_json
from ..errors import InvalidEvent, ProtocolError, Unauthorized
from ..events import HEX64_RE, Event, Record
from .base import Admission, Namespace

SET, REVOKE, OUTCOME = "vouch.set", "vouch.revoke", "vouch.outcome"
KINDS = frozenset((SET, REVOKE, OUTCOME))
OUTCOMES = frozenset(("delivered", "slashed"))
MAX_WEIGHT = 1000
MAX_NOTE = 1000
MAX_REF = 256
#: how far an event's ``ts`` may run ahead of the relay's receipt time. A far-future ``ts``
#: would never decay, would win every supersession and would drag the default ``at`` (the
#: greatest ``ts``) forward, decaying everyone else's vouches to nothing.
MAX_FUTURE_MS = 5 * 60_000
DUMP_VERSION = 1

#: kind -> (required body fields, optional body fields)
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    SET: (frozenset(("subject", "weight")), frozenset(("note",))),
    REVOKE: (frozenset(("subject",)), frozenset()),
    OUTCOME: (frozenset(("subject", "outcome", "ref")), frozenset()),
}


@dataclass(frozen=True, slots=True)
class VouchState:
    """The relevant events of one ``vouch/`` feed. Never mutate the maps: states share them.

    ``vouches``: author -> subject -> the latest ``vouch.set``/``vouch.revoke`` by ``(ts, id)``;
    ``outcomes``: subject -> event id -> ``vouch.outcome``; ``max_ts``: the greatest ``ts`` of
    every event folded (the default "now" of a trust computation, so it never reads a clock).
    """

    vouches: Mapping[str, Mapping[str, Event]] = field(default_factory=dict)
    outcomes: Mapping[str, Mapping[str, Event]] = field(default_factory=dict)
    max_ts: int = 0

    def latest(self) -> Iterator[Event]:
        """Every live ``vouch.set``/``vouch.revoke``, by (author, subject)."""
        for author in sorted(self.vouches):
            row = self.vouches[author]
            for subject in sorted(row):
                yield row[subject]

    def all_outcomes(self) -> list[Event]:
        """Every outcome, by (ts, id)."""
        return sorted((ev for by_id in self.outcomes.values() for ev in by_id.values()), key=_order)

    def count(self) -> int:
        """How many events the state holds (not ``__len__``: an empty state must stay truthy)."""
        return sum(map(len, self.vouches.values())) + sum(map(len, self.outcomes.values()))


def _order(ev: Event) -> tuple[int, str]:
    return (ev.ts, ev.id)


def check_body(event: Event) -> None:
    """Raise InvalidEvent unless ``event`` is a well-formed vouch event (authority aside)."""
    if event.kind not in KINDS:
        raise InvalidEvent("vouch feeds accept kinds " + ", ".join(sorted(KINDS)))
    body = event.body
    required, optional = _FIELDS[event.kind]
    if not isinstance(body, dict) or not required <= set(body) <= required | optional:
        shape = ", ".join(sorted(required) + [f + "?" for f in sorted(optional)])
        raise InvalidEvent(f"{event.kind} body must have exactly the fields {shape}")
    subject = body["subject"]
    if not isinstance(subject, str) or not HEX64_RE.match(subject):
        raise InvalidEvent("subject must be a key (64 lowercase hex chars)")
    if subject == event.author:
        raise InvalidEvent("a key cannot vouch for itself")
    if event.kind == SET:
        weight = body["weight"]
        if not isinstance(weight, int) or isinstance(weight, bool) or not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
            raise InvalidEvent(f"weight must be an integer in -{MAX_WEIGHT}..{MAX_WEIGHT} (thousandths)")
        if "note" in body and (not isinstance(body["note"], str) or len(body["note"]) > MAX_NOTE):
            raise InvalidEvent(f"note must be a string of at most {MAX_NOTE} characters")
    elif event.kind == OUTCOME:
        if not isinstance(body["outcome"], str) or body["outcome"] not in OUTCOMES:
            raise InvalidEvent('outcome must be "delivered" or "slashed"')
        ref = body["ref"]
        if not isinstance(ref, str) or len(ref) > MAX_REF:
            raise InvalidEvent(f"ref must be a string of at most {MAX_REF} characters")


def add(state: VouchState, event: Event) -> VouchState:
    """Return ``state`` with ``event`` folded in (``event`` must be valid); ``state`` is untouched."""
    max_ts = max(state.max_ts, event.ts)
    subject = event.body["subject"]
    if event.kind == OUTCOME:
        by_id = state.outcomes.get(subject, {})
        if event.id in by_id:
            return state
        outcomes = dict(state.outcomes)
        outcomes[subject] = {**by_id, event.id: event}
        return VouchState(state.vouches, outcomes, max_ts)
    row = state.vouches.get(event.author, {})
    old = row.get(subject)
    if old is not None and _order(old) >= _order(event):
        return state  # superseded (or a duplicate): old.ts >= event.ts, so max_ts holds too
    vouches = dict(state.vouches)
    vouches[event.author] = {**row, subject: event}
    return VouchState(vouches, state.outcomes, max_ts)


def from_events(events: Iterable[Event]) -> VouchState:
    """Build a state from valid events in one pass (mutable build, then frozen by convention)."""
    vouches: dict[str, dict[str, Event]] = {}
    outcomes: dict[str, dict[str, Event]] = {}
    max_ts = 0
    for ev in events:
        max_ts = max(max_ts, ev.ts)
        subject = ev.body["subject"]
        if ev.kind == OUTCOME:
            outcomes.setdefault(subject, {})[ev.id] = ev
            continue
        row = vouches.setdefault(ev.author, {})
        old = row.get(subject)
        if old is None or _order(old) < _order(ev):
            row[subject] = ev
    return VouchState(vouches, outcomes, max_ts)


def _vouch_view(ev: Event) -> dict[str, Any]:
    revoked = ev.kind == REVOKE
    return {"author": ev.author, "subject": ev.body["subject"], "weight": 0 if revoked else ev.body["weight"],
            "revoked": revoked, "note": ev.body.get("note"), "ts": ev.ts, "id": ev.id}


def _outcome_view(ev: Event) -> dict[str, Any]:
    return {"relay": ev.author, "subject": ev.body["subject"], "outcome": ev.body["outcome"],
            "ref": ev.body["ref"], "ts": ev.ts, "id": ev.id}


class VouchNamespace(Namespace[VouchState]):
    name = "vouch"
    kinds = KINDS
    immutable_state = True
    relay_owned = True  # a trust topic is shared: the relay opens it (``feed.policy signed``)

    def initial(self, feed: str) -> VouchState:
        return VouchState()

    def validate(self, state: VouchState, event: Event, adm: Admission) -> None:
        check_body(event)
        if event.kind == OUTCOME and event.author != adm.relay:
            raise Unauthorized("vouch.outcome is written by the relay only")
        if event.ts > adm.now + MAX_FUTURE_MS:
            raise InvalidEvent(f"ts is more than {MAX_FUTURE_MS} ms ahead of the relay's clock")

    def apply(self, state: VouchState, record: Record) -> VouchState:
        try:  # validated before sequencing; a replayer re-checks and skips what should not be there
            self.validate(state, record.event, Admission.of(record))
        except ProtocolError:
            return state
        return add(state, record.event)

    def dump(self, state: VouchState) -> bytes:
        return canonical({"v": DUMP_VERSION, "vouches": [ev.to_wire() for ev in state.latest()],
                          "outcomes": [ev.to_wire() for ev in state.all_outcomes()]})

    def load(self, feed: str, data: bytes) -> VouchState:
        d = parse_json(data)
        if (not isinstance(d, dict) or d.get("v") != DUMP_VERSION or not isinstance(d.get("vouches"), list)
                or not isinstance(d.get("outcomes"), list)):
            raise InvalidEvent("not a vouch state dump")
        # the snapshot is relay-signed: ids are re-checked (from_wire), signatures are not
        events = [Event.from_wire(w, verify_sig=False) for w in [*d["vouches"], *d["outcomes"]]]
        for ev in events:
            check_body(ev)
        return from_events(events)

    def view(self, state: VouchState) -> Any:
        return {"vouches": [_vouch_view(ev) for ev in state.latest()],
                "outcomes": [_outcome_view(ev) for ev in state.all_outcomes()],
                "scores": scores(state)}


# -- EigenTrust over the state (collab.trust is the SDK side: compute from records, fetch, vouch) --
SCALE = 1_000_000_000
DAY_MS = 86_400_000
#: past this many half-lives ``SCALE >> k`` is 0: any older edge weighs nothing
_MAX_HALVINGS = SCALE.bit_length()


@dataclass(frozen=True, slots=True)
class TrustParams:
    """EigenTrust parameters: who is trusted a priori, how fast vouches fade, how much to teleport.

    ``alpha_ppb`` is the weight of the pre-trusted distribution in each step (0.15 by default),
    which keeps a clique of keys vouching for each other from soaking up all the trust.
    """

    pretrusted: frozenset[str] = frozenset()
    half_life_ms: int = 30 * DAY_MS
    alpha_ppb: int = 150_000_000
    iterations: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "pretrusted", frozenset(self.pretrusted))
        if not isinstance(self.half_life_ms, int) or self.half_life_ms <= 0:
            raise ValueError("half_life_ms must be a positive integer")
        if not isinstance(self.alpha_ppb, int) or not 0 <= self.alpha_ppb <= SCALE:
            raise ValueError(f"alpha_ppb must be an integer in 0..{SCALE}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError("iterations must be a non-negative integer")


DEFAULT = TrustParams()


def decay(age_ms: int, half_life_ms: int) -> int:
    """Weight (ppb) of an event ``age_ms`` old: halves every half-life, linear in between.

    ``(1e9 >> k) * (2*hl - r) // (2*hl)`` with ``k, r = divmod(age, hl)``; a negative age (an
    event newer than the ``at`` asked for) counts as fresh.
    """
    age = max(0, age_ms)
    k, r = divmod(age, half_life_ms)
    if k >= _MAX_HALVINGS:
        return 0
    return (SCALE >> k) * (2 * half_life_ms - r) // (2 * half_life_ms)


def _uniform(keys: list[str]) -> dict[str, int]:
    """``1e9`` split evenly over sorted ``keys``; the remainder goes to the smallest key."""
    share, rest = divmod(SCALE, len(keys))
    out = dict.fromkeys(keys, share)
    out[keys[0]] += rest
    return out


def scores(state: VouchState, params: TrustParams | None = None, relay: str | None = None,
           at: int | None = None) -> dict[str, int]:
    """Every key's trust in ppb (sorted by key), summing to 1e9; ``{}`` for an empty state.

    ``relay`` joins configured pre-trusted keys (as does every key that signed an outcome); ``at``
    (ms) defaults to the greatest ``ts`` in the state, so the result never depends on a clock.
    """
    p = params or DEFAULT
    hl = p.half_life_ms
    now = state.max_ts if at is None else at
    keys: set[str] = set()
    edges: dict[str, dict[str, int]] = {}  # s(i->j) > 0, sparse
    for author, row in state.vouches.items():
        keys.add(author)
        for subject, ev in row.items():
            keys.add(subject)
            if ev.kind == SET and ev.body["weight"] > 0:
                s = ev.body["weight"] * decay(now - ev.ts, hl)
                if s > 0:
                    edges.setdefault(author, {})[subject] = s
    relays: set[str] = set()
    slashed: dict[str, int] = {}  # S_j
    for subject, by_id in state.outcomes.items():
        keys.add(subject)
        for ev in by_id.values():
            keys.add(ev.author)
            relays.add(ev.author)
            d = decay(now - ev.ts, hl)
            if ev.body["outcome"] == "delivered":
                if d > 0:
                    given = edges.setdefault(ev.author, {})
                    given[subject] = given.get(subject, 0) + 1000 * d
            else:
                slashed[subject] = slashed.get(subject, 0) + d
    if not keys:
        return {}
    order = sorted(keys)

    # Configured pre-trusted keys anchor the computation and the relay (every outcome signer)
    # joins them; with none configured every key is a start point. The relay alone must not be
    # the anchor: until it records a delivery it has no edges, and all trust would pool there.
    trusted = p.pretrusted & keys
    if trusted:
        trusted |= (relays | ({relay} if relay else set())) & keys
    pre = _uniform(sorted(trusted) if trusted else order)
    pre_items = sorted(pre.items())

    # C: row-normalised, c(i->j) = s(i->j) * 1e9 // sum_j s(i->j); rows absent = "trusts p"
    rows: dict[str, list[tuple[str, int]]] = {}
    for i in order:
        edge = edges.get(i)
        if edge:
            total = sum(edge.values())
            rows[i] = [(j, s * SCALE // total) for j, s in sorted(edge.items())]

    a = p.alpha_ppb
    keep = SCALE - a
    teleport = {j: a * pj * SCALE for j, pj in pre_items}  # a * p_j at scale 1e27
    t = {k: pre.get(k, 0) for k in order}
    for _ in range(p.iterations):
        u = dict.fromkeys(order, 0)  # (C^T t)_j at scale 1e18
        dangling = 0
        for i in order:
            ti = t[i]
            if not ti:
                continue
            norm = rows.get(i)
            if norm is None:
                dangling += ti
                continue
            for j, c in norm:
                u[j] += c * ti
        if dangling:
            for j, pj in pre_items:
                u[j] += pj * dangling
        t = {j: (keep * u[j] + teleport.get(j, 0)) // (SCALE * SCALE) for j in order}

    for j in sorted(slashed):  # one fresh slash halves a score
        t[j] = t[j] * SCALE // (SCALE + slashed[j])
    total = sum(t.values())
    if total == 0:  # everything slashed to nothing: fall back to the prior
        return {k: pre.get(k, 0) for k in order}
    out = {k: t[k] * SCALE // total for k in order}
    out[order[0]] += SCALE - sum(out.values())
    return out
