"""The script of ``colony demo``'s document: who writes what into ``doc/demo``, in which order,
and the checks that the merged result reads like collaborative writing.

The roles (``TEAM``, taken in this order by ``--agents N``; agents past the fifth are extra
writers):

* ``outliner`` types the title and every section heading, in order (then the outline is done);
* ``writer`` and ``co-writer`` type the sections' paragraphs, a few words per edit, each in its
  own sections and *at the same time* (their edits interleave in the feed; the CRDT merges them);
* ``reviewer`` puts one comment line right after each finished paragraph;
* ``editor`` then fixes a word or rewrites a sentence in place (one transaction: delete + insert).

Every edit is anchored to content: an agent finds the place in its own merged copy of the text
at the moment of the edit (the heading it writes under, the paragraph line it comments on), and
Yjs keeps the insert there whatever the others type concurrently elsewhere. Agents wait for what
they need (a heading, a finished paragraph) by observing their copy, never by polling. With fewer
agents the missing roles are left out (no reviewer: no comments) or folded into the outliner (no
writer: the outliner writes the paragraphs too), so the expected document follows from the team.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from collab.doc import Doc

TITLE = "# Relay design note"
TEAM = ("outliner", "writer", "co-writer", "reviewer", "editor")
ROLES = {
    "outliner": "writes the outline: the title and the section headings",
    "writer": "types the paragraphs of its sections",
    "co-writer": "types the paragraphs of its sections, at the same time as the writer",
    "reviewer": "comments right after each finished paragraph",
    "editor": "fixes words and sentences in finished paragraphs",
}
WORDS_PER_EDIT = 3


@dataclass(frozen=True)
class Section:
    heading: str
    draft: str                     # the paragraph as its writer types it (one line)
    comment: str                   # the reviewer's line after it
    edit: tuple[str, str] | None   # the editor's replacement in the paragraph (old, new)

    @property
    def line(self) -> str:
        return f"## {self.heading}"

    def final(self, edited: bool) -> str:
        return self.draft.replace(*self.edit, 1) if edited and self.edit else self.draft


SECTIONS = (
    Section("Goals", "Agents sign every event; the relay orders each feed and stores it befor it acks.",
            "> reviewer: say what happens to an acked event on a crash.", ("befor", "before")),
    Section("Ordering", "One seq per feed, chained by hashes, so any two parties can compare heads.",
            "> reviewer: +1, and the relay signs each receipt.", None),
    Section("Storage", "SQLite by default. Lots of processes can maybe share a Redis if needed.",
            "> reviewer: add numbers from the benchmark.",
            ("Lots of processes can maybe share a Redis if needed.",
             "Many relay processes share one Redis to scale out.")),
    Section("Open questions", "How should trust scores decay over time?",
            "> reviewer: and who may read a members-only feed?", ("decay", "fade")),
)


def team(n_agents: int) -> list[str]:
    """The doc agents' names for ``--agents N``: the roles first, then extra writers."""
    names = list(TEAM[: max(1, n_agents)])
    while len(names) < n_agents:
        names.append(f"writer-{len(names) - len(TEAM) + 2}")
    return names


def writers(names: list[str]) -> list[str]:
    ws = [n for n in names if n in ("writer", "co-writer") or n.startswith("writer-")]
    return ws or names[:1]


def assignments(names: list[str]) -> dict[str, list[Section]]:
    """Which sections each writer types: round-robin, so two writers type in different sections."""
    ws = writers(names)
    out: dict[str, list[Section]] = {w: [] for w in ws}
    for i, s in enumerate(SECTIONS):
        out[ws[i % len(ws)]].append(s)
    return out


def typing_together(names: list[str]) -> asyncio.Barrier:
    """The barrier the writers pass before they type (``play``'s ``together``)."""
    return asyncio.Barrier(sum(1 for ss in assignments(names).values() if ss))


def concurrency(names: list[str]) -> str:
    """The banner's line on who types at the same moment."""
    parts = [f"{w} ({', '.join(s.heading for s in ss)})" for w, ss in assignments(names).items() if ss]
    line = "the outliner writes the outline; then " + (" and ".join(parts) if len(parts) < 3 else ", ".join(parts))
    line += " type at the same time" if len(parts) > 1 else " types"
    if "reviewer" in names:
        line += "; the reviewer comments each paragraph once it is written"
    if "editor" in names:
        line += "; the editor fixes it after that"
    return line + (", while the writers type on" if {"reviewer", "editor"} & set(names) else "")


def expected(names: list[str]) -> str:
    """The document the script produces with this team."""
    lines = [TITLE, ""]
    for s in SECTIONS:
        lines.append(s.line)
        lines.append(s.final("editor" in names))
        if "reviewer" in names:
            lines.append(s.comment)
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


def check_document(text: str, names: list[str]) -> list[str]:
    """What is wrong with the merged document (empty when it reads as scripted): every heading
    once and in order, each followed by its paragraph; every comment right after the line it is
    about; no line or sentence twice."""
    problems: list[str] = []
    lines = text.split("\n")
    if not lines or lines[0] != TITLE:
        problems.append(f"the first line is not the title {TITLE!r}")
    at = [i for i, ln in enumerate(lines) if ln.startswith("## ")]
    heads = [lines[i] for i in at]
    if heads != [s.line for s in SECTIONS]:
        problems.append(f"headings are {heads}, not each section once in order")
    edited, reviewed = "editor" in names, "reviewer" in names
    for s in SECTIONS:
        if heads.count(s.line) != 1:
            continue
        i = lines.index(s.line)
        para = lines[i + 1] if i + 1 < len(lines) else ""
        if para != s.final(edited):
            problems.append(f"{s.line!r} is followed by {para!r}, not its paragraph")
        if reviewed:
            comment = lines[i + 2] if i + 2 < len(lines) else ""
            if comment != s.comment:
                problems.append(f"the comment on {s.line!r} is not right after its paragraph (found {comment!r})")
    seen: set[str] = set()
    for ln in lines:
        for sentence in (p.strip() for p in ln.replace("?", ".").split(". ")):
            if sentence and sentence in seen:
                problems.append(f"{sentence!r} appears twice")
            seen.add(sentence)
    if text != expected(names):
        problems.append("the text is not the scripted document")
    return problems


# -- the agents' parts ------------------------------------------------------------------------
async def wait_text(doc: Doc, ready: Callable[[str], bool], timeout: float) -> str:
    """Wait until this agent's merged copy satisfies ``ready`` (observed, not polled); the text."""
    changed = asyncio.Event()
    sub = doc.text.observe(lambda _e: changed.set())

    async def until() -> str:
        while True:
            changed.clear()
            text = str(doc.text)
            if ready(text):
                return text
            await changed.wait()

    try:
        return await asyncio.wait_for(until(), timeout)
    finally:
        doc.text.unobserve(sub)


def after_line(text: str, line: str) -> int:
    """The index just past ``line`` and its newline in ``text`` (the line must be there)."""
    i = text.index(line + "\n")
    return i + len(line) + 1


def _paragraph_done(s: Section) -> Callable[[str], bool]:
    return lambda t: f"{s.line}\n{s.draft}\n" in t


def _commented(s: Section) -> Callable[[str], bool]:
    return lambda t: s.line + "\n" in t and t[after_line(t, s.line):].split("\n", 2)[1:2] == [s.comment]


async def play(name: str, names: list[str], doc: Doc, pace: float, say: Callable[[str], None],
               timeout: float, together: asyncio.Barrier | None = None) -> None:
    """Play ``name``'s part of the script on ``doc``; ``pace`` seconds between its edits.

    The writers pass ``together`` (one barrier for all of them, :func:`typing_together`) once the
    outline is in their copy, so they start typing at the same moment even when they sit on
    different relays whose copies see the outline at different times."""
    text = doc.text
    if name == names[0]:  # the outliner
        say(f"{name} starts the outline")
        for line in (TITLE, *(s.line for s in SECTIONS)):
            text.insert(len(str(text)), line + "\n\n" if line != SECTIONS[-1].line else line + "\n")
            await asyncio.sleep(pace)
    mine = assignments(names).get(name, [])
    if mine:
        outline = [s.line for s in SECTIONS]
        await wait_text(doc, lambda t: all(h + "\n" in t for h in outline), timeout)
        if together is not None:
            await asyncio.wait_for(together.wait(), timeout)
    for s in mine:
        say(f"{name} is typing under {s.line!r}")
        words = s.draft.split(" ")
        typed = 0
        for k in range(0, len(words), WORDS_PER_EDIT):
            chunk = " ".join(words[k:k + WORDS_PER_EDIT]) + (" " if k + WORDS_PER_EDIT < len(words) else "\n")
            text.insert(after_line(str(text), s.line) + typed, chunk)
            typed += len(chunk)
            await asyncio.sleep(pace / 2)
        await asyncio.sleep(pace)
    if name == "reviewer":
        for s in SECTIONS:
            await wait_text(doc, _paragraph_done(s), timeout)
            await asyncio.sleep(pace)  # reads it first
            t = str(text)
            text.insert(after_line(t, f"{s.line}\n{s.draft}"), s.comment + "\n")
            say(f"reviewer commented on {s.line!r}")
            await asyncio.sleep(pace)
    if name == "editor":
        for s in SECTIONS:
            if s.edit is None:
                continue
            await wait_text(doc, _commented(s) if "reviewer" in names else _paragraph_done(s), timeout)
            await asyncio.sleep(pace)  # reads it first
            t = str(text)
            start = after_line(t, s.line)
            old, new = s.edit
            at = start + t[start:].index(old)
            with doc.ydoc.transaction():
                del text[at:at + len(old)]
                text.insert(at, new)
            say(f"editor replaced {old!r} with {new!r} under {s.line!r}")
            await asyncio.sleep(pace)
