"""MCP agents for tests: the official ``mcp`` client talking to a real ``colony mcp`` process,
over stdio (the client starts the process, handshake era: ``resources/subscribe``) or over
streamable HTTP (``colony mcp --http 127.0.0.1:0``; the client negotiates the newest era, so
subscriptions are ``subscriptions/listen`` streams).

Each agent's client lives in a task of its own (the SDK's contexts must be left in the task that
entered them), so several agents start in parallel; the test calls tools from its own task.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp
import mcp_types as types
from mcp.client.stdio import StdioServerParameters

from collab.keys import Keypair
from tests.procs import read_listen_line

LISTEN_RE = re.compile(rb"listening on (http://[\d.]+:\d+/mcp)")
START_TIMEOUT = 60.0


class McpAgent:
    """One ``colony mcp`` process with its own key, and the official client connected to it."""

    def __init__(self, name: str, key: Keypair, key_file: Path, transport: str) -> None:
        self.name, self.key, self.key_file, self.transport = name, key, key_file, transport
        self.client: mcp.Client | None = None
        self.updates: asyncio.Queue[str] = asyncio.Queue()  # resource URIs of updated notifications
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def me(self) -> str:
        return self.key.public_hex

    @property
    def session(self) -> mcp.Client:
        assert self.client is not None
        return self.client

    async def result(self, tool: str, **args: Any) -> types.CallToolResult:
        return await self.session.call_tool(tool, args)

    async def call(self, tool: str, **args: Any) -> Any:
        """Call a tool that must succeed; its JSON result."""
        res = await self.result(tool, **args)
        text = res.content[0].text if res.content and isinstance(res.content[0], types.TextContent) else ""
        assert not res.is_error, f"{self.name}: {tool}({args}) failed: {text}"
        return json.loads(text)

    async def fail(self, tool: str, **args: Any) -> str:
        """Call a tool that must fail; the text of its tool error."""
        res = await self.result(tool, **args)
        text = res.content[0].text if res.content and isinstance(res.content[0], types.TextContent) else ""
        assert res.is_error, f"{self.name}: {tool}({args}) should have failed, got {text}"
        return text

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updates.put_nowait(str(message.params.uri))

    def _cmd(self, relay_url: str) -> list[str]:
        return ["-m", "relay.ops.cli", "mcp", "--key", str(self.key_file), "--relay", relay_url]

    async def _start_http(self, relay_url: str) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self._cmd(relay_url), "--http", "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE, stderr=None, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        return await read_listen_line(self.proc.stdout, LISTEN_RE, "colony mcp --http")

    async def run(self, relay_url: str, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        """The client's task: connect, report ready, hold the connection until ``stop``."""
        try:
            if self.transport == "stdio":
                server: Any = StdioServerParameters(command=sys.executable, args=self._cmd(relay_url),
                                                    env=dict(os.environ))
                mode = "legacy"
            else:
                server, mode = await self._start_http(relay_url), "auto"
            async with mcp.Client(server, mode=mode, message_handler=self._on_message,
                                  read_timeout_seconds=60) as client:
                self.client = client
                ready.set_result(None)
                await stop.wait()
                self.client = None
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            if self.proc is not None and self.proc.returncode is None:
                self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), 15)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()


@contextlib.asynccontextmanager
async def mcp_agents(relay_url: str, tmp: Path, transport: str, *names: str,
                     keys: dict[str, Keypair] | None = None) -> AsyncIterator[dict[str, McpAgent]]:
    """Start one ``colony mcp`` per name (in parallel), each with a fresh key file."""
    agents: dict[str, McpAgent] = {}
    for name in names:
        key = (keys or {}).get(name) or Keypair.generate()
        key_file = tmp / f"{name}.key"
        key.save(key_file)
        agents[name] = McpAgent(name, key, key_file, transport)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    readies = {n: loop.create_future() for n in agents}
    tasks = [loop.create_task(a.run(relay_url, readies[n], stop), name=f"mcp {n}") for n, a in agents.items()]
    try:
        await asyncio.wait_for(asyncio.gather(*readies.values()), START_TIMEOUT)
        yield agents
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        if errors:
            raise errors[0]
