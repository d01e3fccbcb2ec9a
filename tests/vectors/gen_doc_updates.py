"""``doc_updates.json``: which Yjs v1 updates are *empty* (docs/protocol.md 16.1).

Imported by ``generate.py``; written from the spec alone. An update is empty when each of its
struct groups declares 0 structs and each range of its delete set has length 0 (bytes after the
delete set are not looked at). A ``doc.update`` event carrying an empty update is refused with
``invalid``; on ``/yjs`` an empty update is ignored (nothing is recorded).
"""
from __future__ import annotations

import base64
from typing import Any

FEED = "doc/empty-updates"


def gen_doc_updates(make_event: Any, key: Any, ts0: int, insert_b64: str) -> dict[str, Any]:
    updates = [
        ("no_bytes", "", False, "no bytes at all: not a decodable update, so not 'empty' but refused all the same"),
        ("empty_update", "0000", True, "0 struct groups, 0 delete-set clients: the empty update (AAA=)"),
        ("empty_with_trailing_byte", "0000ff", True, "the empty update and a byte after it (Yjs decoders ignore it)"),
        ("group_of_zero_structs", "010005000000", True, "one struct group (client 5, clock 0) declaring 0 structs"),
        ("delete_client_without_ranges", "0001050000", True, "a delete-set entry for client 5 with no range"),
        ("delete_range_of_length_zero", "00010501070000", True, "client 5 deletes the range (clock 7, length 0)"),
        ("deletes_one_item", "000105010701", False, "client 5 deletes (clock 7, length 1): not empty"),
        ("inserts_hello", base64.b64decode(insert_b64).hex(), False, "inserts 'hello' into root text: not empty"),
    ]
    cases = []
    for i, (name, hx, empty, note) in enumerate(updates):
        b64 = base64.b64encode(bytes.fromhex(hx)).decode("ascii")
        ev, _ = make_event(key, FEED, "doc.update", {"update": b64}, ts=ts0 + i)
        cases.append({"name": name, "note": note, "update_hex": hx, "update_b64": b64, "empty": empty,
                      "error": "invalid" if empty or not hx else "", "event": ev})
    return {
        "description": "Yjs v1 updates and whether each is empty (docs/protocol.md 16.1). event: a doc.update "
                       "by alice carrying it (in the order given); error: the code a relay answers when it is "
                       "published (invalid for every empty update; '' = accepted). On /yjs, an update or sync "
                       "step 2 holding an empty update is ignored: nothing is recorded, the connection stays.",
        "generated_by": "tests/vectors/generate.py",
        "feed": FEED,
        "cases": cases,
    }
