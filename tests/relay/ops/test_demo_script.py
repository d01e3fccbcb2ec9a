"""relay/ops/demo_script.py: the demo's team and script, and the checks that a merged document
reads like collaborative writing (every heading once and in order, each followed by its paragraph,
each comment right after the line it is about, no fragment twice). The agents playing it against
a real relay are in test_demo.py."""
from __future__ import annotations

from relay.ops.demo_coord import Cast
from relay.ops.demo_script import (SECTIONS, TEAM, TITLE, after_line, assignments, check_document, concurrency,
                                   expected, team)

FULL = team(5)


def test_the_team_takes_the_roles_first_and_every_demo_agent_has_its_own_name() -> None:
    assert team(5) == list(TEAM) and team(2) == ["outliner", "writer"] and team(0) == ["outliner"]
    assert team(7) == [*TEAM, "writer-2", "writer-3"]
    cast = Cast()
    everyone = [*team(7), *cast.names().values()]
    assert len(set(everyone)) == len(everyone), everyone
    assert len(set(cast.names())) == len(cast.names()) == 6  # six keys, six names
    # two writers share the sections out, so they type in different sections at the same time
    split = assignments(FULL)
    assert {w: [s.heading for s in ss] for w, ss in split.items()} == {
        "writer": ["Goals", "Storage"], "co-writer": ["Ordering", "Open questions"]}
    assert assignments(["outliner"]) == {"outliner": list(SECTIONS)}


def structure_problems(text: str) -> list[str]:
    """The issue's checks, written out independently of check_document."""
    lines = text.split("\n")
    out = []
    heads = [ln for ln in lines if ln.startswith("## ")]
    if heads != [s.line for s in SECTIONS]:
        out.append(f"headings {heads}")
    for s in SECTIONS:
        i = lines.index(s.line) if s.line in lines else -1
        if i < 0 or not lines[i + 1] or lines[i + 1].startswith(("#", ">")):
            out.append(f"no paragraph under {s.line}")
        elif lines[i + 2] != s.comment:  # the comment is right after the paragraph it is about
            out.append(f"comment on {s.line}: {lines[i + 2]!r}")
    body = [ln for ln in lines if ln]
    if len(body) != len(set(body)):
        out.append("a line appears twice")
    return out


def test_the_checks_accept_the_script_and_refuse_a_shuffle() -> None:
    good = expected(FULL)
    assert check_document(good, FULL) == [] and structure_problems(good) == []
    assert good.startswith(TITLE + "\n\n## Goals\nAgents sign every event;")
    assert "befor " not in good and "decay" not in good  # the editor's fixes are in
    lines = good.split("\n")
    swapped = "\n".join([lines[0], lines[1], lines[2], lines[4], lines[3], *lines[5:]])  # comment before its line
    assert any("comment" in p for p in check_document(swapped, FULL)) and structure_problems(swapped)
    doubled = good + "_(edited for clarity)_\n_(edited for clarity)_\n"  # the old demo's repeated fragments
    assert any("twice" in p for p in check_document(doubled, FULL)) and structure_problems(doubled)
    out_of_order = (good.replace("## Ordering", "## Tmp").replace("## Storage", "## Ordering")
                    .replace("## Tmp", "## Storage"))
    assert check_document(out_of_order, FULL)
    # a smaller team: no reviewer, no comments; no editor, the drafts stay
    assert check_document(expected(team(3)), team(3)) == []
    assert "> reviewer" not in expected(team(3)) and "befor it acks" in expected(team(3))


def test_the_banner_line_says_who_types_at_the_same_moment() -> None:
    assert concurrency(FULL) == (
        "the outliner writes the outline; then writer (Goals, Storage) and co-writer (Ordering, Open questions)"
        " type at the same time; the reviewer comments each paragraph once it is written; the editor fixes it"
        " after that, while the writers type on")
    assert concurrency(team(2)) == ("the outliner writes the outline; then writer"
                                    " (Goals, Ordering, Storage, Open questions) types")


def test_after_line_is_the_start_of_the_next_line() -> None:
    text = expected(FULL)
    at = after_line(text, "## Goals")
    assert text[at:].startswith("Agents sign every event")
