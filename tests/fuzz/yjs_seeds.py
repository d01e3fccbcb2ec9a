"""Valid Yjs updates to mutate: small documents of every shared type, edited by several clients.

Each seed is the list of incremental updates one document emitted, in order (so a mutated update
can be applied after the valid ones before it: the fuzzer's ``seq`` operation), built
deterministically from pycrdt itself.
"""
from __future__ import annotations

from collections.abc import Callable

import pycrdt


def _record(steps: list[Callable[[pycrdt.Doc], None]], client_ids: tuple[int, ...] = (1, 2)) -> list[bytes]:
    """Run ``steps`` alternately on docs of ``client_ids`` kept in sync; the updates, in order."""
    docs = [pycrdt.Doc(client_id=c) for c in client_ids]
    out: list[bytes] = []
    for i, step in enumerate(steps):
        doc = docs[i % len(docs)]
        before = doc.get_state()
        step(doc)
        u = doc.get_update(before)
        out.append(u)
        for other in docs:
            if other is not doc:
                other.apply_update(u)
    return out


def _text(doc: pycrdt.Doc) -> pycrdt.Text:
    return doc.get("text", type=pycrdt.Text)


def _map(doc: pycrdt.Doc) -> pycrdt.Map:  # type: ignore[type-arg]
    return doc.get("map", type=pycrdt.Map)


def _array(doc: pycrdt.Doc) -> pycrdt.Array:  # type: ignore[type-arg]
    return doc.get("array", type=pycrdt.Array)


def _xml(doc: pycrdt.Doc) -> pycrdt.XmlFragment:
    return doc.get("xml", type=pycrdt.XmlFragment)


def _del(t: pycrdt.Text, a: int, b: int) -> None:
    del t[a:b]


def seeds() -> list[list[bytes]]:
    text_steps: list[Callable[[pycrdt.Doc], None]] = [
        lambda d: _text(d).insert(0, "hello world"),
        lambda d: _text(d).insert(5, ", dear"),
        lambda d: _del(_text(d), 0, 3),
        lambda d: _text(d).format(1, 6, {"bold": True}),
        lambda d: _text(d).insert(2, "é漢😀", {"italic": True}),
        lambda d: _text(d).insert_embed(3, {"image": "x.png"}),
        lambda d: _del(_text(d), 4, 9),
    ]
    map_steps: list[Callable[[pycrdt.Doc], None]] = [
        lambda d: _map(d).update({"a": 1, "b": "two", "c": 3.5, "d": True, "e": None}),
        lambda d: _map(d).__setitem__("nested", pycrdt.Map({"x": [1, 2, {"y": "z"}]})),
        lambda d: _map(d).__setitem__("bin", b"\x00\x01\xff"),
        lambda d: _map(d).pop("a"),
        lambda d: _map(d).__setitem__("arr", pycrdt.Array([1, "s", pycrdt.Text("in text")])),
        lambda d: _map(d).__setitem__("b", 2**40),
        lambda d: _map(d).__setitem__("sub", pycrdt.Doc()),
    ]
    array_steps: list[Callable[[pycrdt.Doc], None]] = [
        lambda d: _array(d).extend([1, 2, 3, "four", 5.5, False, None]),
        lambda d: _array(d).insert(2, pycrdt.Map({"k": "v"})),
        lambda d: _array(d).__delitem__(slice(0, 2)),
        lambda d: _array(d).append(pycrdt.Array([pycrdt.Array(["deep"])])),
        lambda d: _array(d).__setitem__(1, "replaced"),
        lambda d: _array(d).insert(0, {"json": ["obj", 1]}),
    ]
    xml_steps: list[Callable[[pycrdt.Doc], None]] = [
        lambda d: _xml(d).children.append(pycrdt.XmlElement("p", {"class": "c"}, [pycrdt.XmlText("hi")])),
        lambda d: _xml(d).children.append(pycrdt.XmlText("tail")),
        lambda d: _xml(d).children[0].attributes.__setitem__("id", "7"),
        lambda d: _xml(d).children.__delitem__(1),
    ]
    mixed = [text_steps[0], map_steps[0], array_steps[0], xml_steps[0], text_steps[2], map_steps[3],
             array_steps[2], text_steps[3]]
    out = [_record(text_steps), _record(map_steps, (5,)), _record(array_steps, (7, 8, 9)), _record(xml_steps),
           _record(mixed, (1, 2**32 + 5)), _record(text_steps * 3, (3, 4))]
    # whole-document updates (one update holding every struct of the seed) and their merge
    for s in list(out):
        doc = pycrdt.Doc()
        for u in s:
            doc.apply_update(u)
        out.append([doc.get_update()])
        out.append([pycrdt.merge_updates(*s)])
    return out
