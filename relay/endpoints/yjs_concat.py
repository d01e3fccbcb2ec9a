"""One writer's queued ``/yjs`` edits as one update, without the Yjs engine (docs/protocol.md 21.4).

A Yjs client sends each local transaction as its own update: one struct group of its own
client id, whose clock continues where its previous update ended, and a delete set. The edits
that queue while a connection's previous chunk is recorded are joined by :func:`concat` into
one update: the structs' bytes as they came under one group header (their counts summed), the
delete sets united. That is ``Y.mergeUpdates`` of such updates, short of joining adjacent
structs, and applying it is applying the edits in order (each edit's structs can only refer to
its own earlier structs or to what the document held; deletions are applied once all structs
are in, as within any one update).

Pure Python over the bytes: :func:`collab.namespaces.doc_pending.scan` reads the struct headers,
as the doc admission does. Whatever is not plainly that shape is not joined (None) and the edits
are recorded one event each: structs of several clients, a clock that does not continue, a Skip,
content the scan does not know, bytes after the delete set, or more structs or deleted ranges
than the admission reads in one update (it would count the join as possibly pending). The
result is as untrusted as its parts: the feed's worker has the Yjs sandbox check it on the
document before anything stores or folds it.
"""
from __future__ import annotations

from collections.abc import Sequence

from collab.lib0 import Decoder, var_uint
from collab.namespaces.doc_pending import MAX_SCAN_RANGES, MAX_SCAN_STRUCTS, scan

from relay.endpoints.yjs_protocol import merge_ranges


def concat(updates: Sequence[bytes], max_structs: int = MAX_SCAN_STRUCTS,
           max_ranges: int = MAX_SCAN_RANGES) -> bytes | None:
    """The v1 updates of one writer, in order, as one update; None when they cannot be joined
    that way (fewer than two, or not of the shape above). Never raises on any input bytes."""
    if len(updates) < 2:
        return None
    client: int | None = None
    start = end = structs = 0
    parts: list[bytes] = []
    deletes: dict[int, list[tuple[int, int]]] = {}
    for update in updates:
        try:
            s = scan(update)
        except ValueError:
            return None
        if s.cut or len(s.groups) > 1:
            return None
        r = Decoder(update)
        try:
            if s.groups:
                g = s.groups[0]
                if g.gap or (client is not None and (g.client != client or g.start != end)):
                    return None
                if client is None:
                    client, start = g.client, g.start
                end = g.end
                r.var_uint()  # one group
                structs += r.var_uint()
                r.var_uint()  # its client and first clock: in g
                r.var_uint()
                parts.append(update[r.pos:s.ds_at])
            r.pos = s.ds_at
            for _ in range(r.var_uint()):
                held = deletes.setdefault(r.var_uint(), [])
                for _ in range(r.var_uint()):
                    clock, length = r.var_uint(), r.var_uint()
                    if length:
                        held.append((clock, length))
        except ValueError:
            return None
        if not r.at_end() or structs > max_structs:
            return None
    united = {c: merge_ranges(rs) for c, rs in deletes.items() if rs}
    ranges = sum(len(rs) for rs in united.values())
    if ranges > max_ranges:
        return None
    out = [var_uint(0)]
    if client is not None:
        out = [var_uint(1), var_uint(structs), var_uint(client), var_uint(start), *parts]
    out.append(var_uint(len(united)))
    for c, rs in united.items():
        out += [var_uint(c), var_uint(len(rs))]
        out += [var_uint(clock) + var_uint(length) for clock, length in rs]
    return b"".join(out)


__all__ = ["concat"]
