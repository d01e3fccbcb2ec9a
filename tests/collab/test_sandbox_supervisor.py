"""collab/sandbox_supervisor.py: real child processes, real panics, a real kill and a CPU-budget overrun."""
from __future__ import annotations

import asyncio
import os
import signal

from collab.namespaces.doc import DocState
from collab.sandbox import CRASH, OK, PANIC, TIMEOUT
from collab.sandbox_supervisor import Sandbox, SandboxSettings

from tests.collab.yjs_inputs import cpu_bomb, crashers, edits


async def test_panics_are_refused_and_the_innocent_updates_of_the_batch_pass() -> None:
    a, b, c = edits("one ", "two ", "three")
    bomb = next(x for x in crashers(("panic",)) if x.name == "a_panic_apply_alone")
    relay = DocState()
    async with Sandbox() as sb:
        verdicts = await sb.check("doc/x", relay.tag, [a, bomb.update, b, bomb.update, c], relay.state_update)
        assert [v.code for v in verdicts] == [OK, PANIC, OK, PANIC, OK]
        assert "panic" in verdicts[1].reason
        for u in (a, b, c):  # the relay folds what passed; the child holds exactly that
            relay.apply_update(u)
        [more] = edits("one two three", "!")[1:]
        assert [v.code for v in await sb.check("doc/x", relay.tag, [more], relay.state_update)] == [OK]
        assert sb.restarts == 0


async def test_every_regression_input_is_refused_after_its_prefix() -> None:
    async with Sandbox() as sb:
        for c in crashers():
            relay = DocState()
            verdicts = await sb.check("doc/" + c.name, relay.tag, [*c.prefix, c.update], relay.state_update)
            assert [v.code for v in verdicts] == [OK] * len(c.prefix) + [CRASH if c.verdict == "segfault" else PANIC], \
                c.name


async def test_a_segfault_is_a_crash_verdict_and_the_rest_of_the_batch_passes() -> None:
    segv = next(c for c in crashers(("segfault",)))
    a, b = edits("one ", "two")
    relay = DocState()
    async with Sandbox() as sb:
        verdicts = await sb.check("doc/s", relay.tag, [a, segv.update, b], relay.state_update)
        assert [v.code for v in verdicts] == [OK, CRASH, OK]
        assert sb.restarts == 2  # the batch, then the culprit alone
        relay.apply_update(a)
        relay.apply_update(b)
        [c] = edits("one two", "!")[1:]
        assert [v.code for v in await sb.check("doc/s", relay.tag, [c], relay.state_update)] == [OK]



async def test_a_killed_child_is_restarted_and_nothing_is_lost() -> None:
    a, b = edits("one ", "two")
    relay = DocState()
    async with Sandbox() as sb:
        assert [v.ok for v in await sb.check("doc/k", relay.tag, [a], relay.state_update)] == [True]
        relay.apply_update(a)
        proc = sb._children[0].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)  # a crash between requests (what a segfault leaves)
        await asyncio.to_thread(proc.wait)
        assert [v.ok for v in await sb.check("doc/k", relay.tag, [b], relay.state_update)] == [True]
        assert sb.restarts == 1


async def test_an_update_over_the_cpu_budget_is_killed_and_the_rest_pass() -> None:
    base, bomb = cpu_bomb()
    a, b = edits("one ", "two")
    relay = DocState()
    relay.apply_update(base)
    async with Sandbox(SandboxSettings(timeout=0.15, update_timeout=0.15)) as sb:
        verdicts = await sb.check("doc/t", relay.tag, [a, bomb, b], relay.state_update)
        assert [v.code for v in verdicts] == [OK, TIMEOUT, OK]
        assert sb.restarts == 2  # the batch, then the bomb alone
