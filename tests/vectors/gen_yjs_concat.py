"""``yjs_concat.json``: a /yjs writer's queued edits joined into one update (docs/protocol.md 21.4).

Imported by ``generate.py``; written from the spec alone (the bytes below are laid out by hand
from the Yjs v1 update format). A chunk joins when every edit is one struct group of one client
whose clock continues the previous edit's, with no Skip and nothing after the delete set; the
joined update is one group (structs in order, counts summed, the first clock) and the delete
sets' union (per client, sorted, overlapping or touching ranges joined, empty ones dropped).
``joined_hex`` null: the edits are recorded one event each.
"""
from __future__ import annotations

from typing import Any

# client 5 inserts "a" into the root text "text" (no origin: parent by name), clock 0
A = "01 01 05 00" + "04 01 04 74657874 01 61" + "00"
A_STRUCT = "04 01 04 74657874 01 61"
# client 5 inserts "b" after (5, 0): origin set (info 0x84), clock 1
B = "01 01 05 01" + "84 05 00 01 62" + "00"
B_STRUCT = "84 05 00 01 62"
# client 5 inserts "🌍" after (5, 1): two UTF-16 code units, so the next clock is 4
C = "01 01 05 02" + "84 05 01 04 f09f8c8d" + "00"
C_STRUCT = "84 05 01 04 f09f8c8d"
D = "01 01 05 04" + "84 05 03 01 21" + "00"  # "!" after the emoji's second unit
D_STRUCT = "84 05 03 01 21"
DEL_0 = "00 01 05 01 00 01"              # no structs; deletes (5, clock 0, length 1)
DEL_1 = "00 02 07 01 09 02 05 01 01 01"  # deletes (7: 9+2) and (5: 1+1)
GAP = "01 01 05 02" + "84 05 01 01 63" + "00"  # claims clock 2 right after A
OTHER = "01 01 06 00" + "04 01 04 74657874 01 7a" + "00"  # client 6


def h(*parts: str) -> str:
    """Hex without the spaces that group the fields above."""
    return "".join(parts).replace(" ", "")


def gen_yjs_concat() -> dict[str, Any]:
    cases = [
        ("two_inserts", [A, B], "01 02 05 00" + A_STRUCT + B_STRUCT + "00",
         "one group of 2 structs at client 5's clock 0; no deletions"),
        ("utf16_clock", [A, B, C, D], "01 04 05 00" + A_STRUCT + B_STRUCT + C_STRUCT + D_STRUCT + "00",
         "an emoji counts two clock units: D (clock 4) continues C (clock 2)"),
        ("inserts_then_deletes", [A, B, DEL_0, DEL_1],
         "01 02 05 00" + A_STRUCT + B_STRUCT + "02 05 01 00 02 07 01 09 02",
         "edits without structs join too; client 5's ranges (0,1) and (1,1) touch: one range (0,2)"),
        ("deletes_only", [DEL_0, DEL_1], "00 02 05 01 00 02 07 01 09 02",
         "no struct group at all; the delete sets united"),
        ("clock_gap", [A, GAP], None, "the second edit starts at clock 2, the first ended at 1"),
        ("two_clients", [A, OTHER], None, "client 6's structs after client 5's: not one writer's run"),
        ("trailing_byte", [A, B + "ff"], None, "a byte after the delete set"),
        ("one_edit", [A], None, "nothing to join"),
    ]
    return {
        "description": "A /yjs writer's queued edits (v1 updates, in the order sent) and the one update "
                       "the relay records for them (docs/protocol.md 21.4); joined_hex null: one event each.",
        "generated_by": "tests/vectors/generate.py",
        "cases": [{"name": n, "edits_hex": [h(x) for x in e], "joined_hex": None if j is None else h(j), "note": note}
                  for n, e, j, note in cases],
    }
