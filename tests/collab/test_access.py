"""collab/access.py: the access policy as a pure fold over a feed's control events."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.access import (
    CONTROL_KINDS,
    Access,
    apply_access,
    claims_capability,
    validate_control,
)
from collab.capability import Capability
from collab.errors import AuthRequired, InvalidEvent, Unauthorized
from collab.events import Event
from collab.keys import Keypair

OWNER, OTHER, THIRD = (Keypair.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
FEED = "misc/acl"


def ev(key: Keypair, kind: str, body: object = None) -> Event:
    return Event.create(key, FEED, kind, {} if body is None else body)


def fold(events: list[Event], start: Access | None = None) -> Access:
    access = start or Access()
    for seq, e in enumerate(events, start=1):
        if e.kind in CONTROL_KINDS:
            validate_control(access, e, seq)
        access = apply_access(access, e, seq)
    return access


def test_the_first_author_owns_the_feed_and_the_policy_is_set_only_first() -> None:
    access = fold([ev(OWNER, "feed.policy", {"policy": "members"})])
    assert (access.policy, access.owner) == ("members", OWNER.public_hex)
    with pytest.raises(InvalidEvent):
        validate_control(access, ev(OWNER, "feed.policy", {"policy": "open"}), 2)
    for body in ({"policy": "public"}, {"policy": "open", "x": 1}, ["open"]):
        with pytest.raises(InvalidEvent):
            validate_control(Access(), ev(OWNER, "feed.policy", body), 1)
    assert fold([ev(OTHER, "note")]).owner == OTHER.public_hex


def test_signed_feeds_take_events_by_their_authenticated_author() -> None:
    access = fold([ev(OWNER, "note")])
    access.check_write(ev(OTHER, "note"), OTHER.public_hex, 2, 0)
    with pytest.raises(Unauthorized):
        access.check_write(ev(OTHER, "note"), OWNER.public_hex, 2, 0)  # not the author of the connection
    with pytest.raises(AuthRequired):
        access.check_write(ev(OTHER, "note"), None, 2, 0)
    assert access.can_read(None) and access.can_read(THIRD.public_hex)


def test_open_feeds_take_anyone_after_an_anonymous_policy() -> None:
    policy = ev(OWNER, "feed.policy", {"policy": "open"})
    Access().check_write(policy, None, 1, 0)  # anonymous: only an open policy as seq 1
    access = fold([policy])
    access.check_write(ev(THIRD, "note"), None, 2, 0)
    with pytest.raises(AuthRequired):
        Access().check_write(ev(OWNER, "feed.policy", {"policy": "members"}), None, 1, 0)


def test_members_feeds_follow_grants_and_revocations() -> None:
    events = [ev(OWNER, "feed.policy", {"policy": "members"})]
    access = fold(events)
    assert access.can_read(OWNER.public_hex) and not access.can_read(OTHER.public_hex) and not access.can_read(None)
    with pytest.raises(Unauthorized):
        access.check_write(ev(OTHER, "note"), OTHER.public_hex, 2, 0)
    events.append(ev(OWNER, "acl.grant", {"key": OTHER.public_hex, "read": True, "write": True}))
    access = fold(events)
    access.check_write(ev(OTHER, "note"), OTHER.public_hex, 3, 0)
    assert access.can_read(OTHER.public_hex)
    events.append(ev(OWNER, "acl.grant", {"key": THIRD.public_hex}))  # read by default, no write
    access = fold(events)
    assert access.can_read(THIRD.public_hex)
    with pytest.raises(Unauthorized):
        access.check_write(ev(THIRD, "note"), THIRD.public_hex, 4, 0)
    events.append(ev(OWNER, "acl.revoke", {"key": OTHER.public_hex}))
    access = fold(events)
    assert not access.can_read(OTHER.public_hex)
    with pytest.raises(Unauthorized):
        access.check_write(ev(OTHER, "note"), OTHER.public_hex, 5, 0)


def test_only_the_owner_grants_and_bodies_are_checked() -> None:
    access = fold([ev(OWNER, "note")])
    with pytest.raises(Unauthorized):
        validate_control(access, ev(OTHER, "acl.grant", {"key": OTHER.public_hex}), 2)
    for kind, body in (("acl.grant", {"key": "ab"}), ("acl.grant", {"key": OTHER.public_hex, "read": 1}),
                       ("acl.grant", {"key": OTHER.public_hex, "admin": True}),
                       ("acl.revoke", {"key": OTHER.public_hex, "read": False}), ("acl.revoke", "x")):
        with pytest.raises(InvalidEvent):
            validate_control(access, ev(OWNER, kind, body), 2)


def test_access_round_trips_through_json() -> None:
    access = Access("members", OWNER.public_hex, frozenset({OTHER.public_hex}), frozenset({THIRD.public_hex}))
    assert Access.from_json(access.to_json()) == access
    assert Access.from_json({"policy": "open"}) == Access("open")


def test_only_doc_updates_claim_capabilities() -> None:
    assert claims_capability(Event.create(OWNER, "doc/d", "doc.update", {"update": "AA==", "cap": {}}))
    assert not claims_capability(Event.create(OWNER, "doc/d", "doc.update", {"update": "AA=="}))
    assert not claims_capability(Event.create(OWNER, "misc/d", "note", {"cap": {}}))


KEYS = [OTHER.public_hex, THIRD.public_hex]


@given(st.lists(st.tuples(st.sampled_from(["grant", "revoke"]), st.sampled_from(KEYS), st.booleans(), st.booleans()),
                max_size=12))
def test_any_grant_and_revoke_sequence_folds_like_set_updates(ops: list[tuple[str, str, bool, bool]]) -> None:
    events = [ev(OWNER, "feed.policy", {"policy": "members"})]
    readers: set[str] = set()
    writers: set[str] = set()
    for op, key, read, write in ops:
        if op == "grant":
            events.append(ev(OWNER, "acl.grant", {"key": key, "read": read, "write": write}))
            (readers.add if read else readers.discard)(key)
            (writers.add if write else writers.discard)(key)
        else:
            events.append(ev(OWNER, "acl.revoke", {"key": key}))
            readers.discard(key)
            writers.discard(key)
    access = fold(events)
    assert (access.readers, access.writers) == (readers, writers)
    for key in KEYS:
        assert access.can_read(key) == (key in readers)


def test_a_capability_is_judged_on_the_relay_time_never_on_ts() -> None:
    """Issue 13: expiry is judged on ``now`` (the record's rtime), whatever ``ts`` claims."""
    feed = "doc/d"
    access = apply_access(Access(), Event.create(OWNER, feed, "feed.policy", {"policy": "members"}), 1)
    cap = Capability.issue(OWNER, feed, write=True, ttl_ms=1_000, now=10_000)  # exp 11_000

    def write(ts: int) -> Event:
        return Event.create(OTHER, feed, "doc.update", {"update": "AA==", "cap": cap.to_wire()}, ts=ts)

    with pytest.raises(Unauthorized, match="expired"):
        access.check_write(write(10_500), OTHER.public_hex, 2, 11_000)  # back-dated ts, relay past exp
    access.check_write(write(99_000), OTHER.public_hex, 2, 10_999)  # a future ts does not expire it
