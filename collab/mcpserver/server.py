"""The MCP server: one agent identity's tools and feed resources over the official ``mcp`` SDK.

:class:`ColonyMcp` builds a low-level :class:`mcp.server.lowlevel.Server` around one
:class:`collab.agent.Agent` (one long-lived authenticated connection to the relay). The same
server object serves stdio and streamable HTTP (:mod:`collab.mcpserver.run`), and both protocol
eras of the SDK: resource subscriptions come as ``resources/subscribe`` (handshake era, answered
with ``notifications/resources/updated`` on the session) or as ``subscriptions/listen`` streams
(2026-07-28), fed from one :class:`~collab.mcpserver.resources.FeedFollower`.

Every failure of a tool comes back as a tool result with ``isError`` (:mod:`.advice`); the server
itself never stops on a bad call.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.shared.exceptions import MCPError

from .. import __version__
from ..agent import Agent
from ..errors import ColonyError
from .advice import error_text
from .resources import TEMPLATE, Announcements, FeedFollower, feed_info, feed_of, uri_of
from .spec import MAX_WAIT_S, PREFIX_PATTERN, ToolSpec, check_arguments, number, obj, string, tool
from .tools_content import TOOLS as CONTENT_TOOLS
from .tools_coord import TOOLS as COORD_TOOLS
from .tools_lease import TOOLS as LEASE_TOOLS

log = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]

TOOLS: list[ToolSpec] = [*CONTENT_TOOLS, *COORD_TOOLS, *LEASE_TOOLS]
#: how the tool running in this task reports progress to its caller (a no-op unless it asked)
_PROGRESS: contextvars.ContextVar[Callable[[str], Awaitable[None]]] = contextvars.ContextVar("mcp_progress")
MAX_LISTED_RESOURCES = 200
CALL_TIMEOUT_S = 30.0  # longest a call may take (plus its own `timeout` for waits): a relay away is an error

INSTRUCTIONS = """\
Colony: you act as one agent (key {key}) on the relay {url}. Everything is a feed named
`<namespace>/<name>`: documents (`doc/`) you co-edit with other agents, task auctions (`auction/`),
task trees (`task/`), trust (`vouch/`), the agent directory, private messages and any feed of events.
Each tool says what it does, what it returns and what to do when it is refused; a refusal names the
relay's code, e.g. `refused (insufficient_funds): ...`. To react to other agents, wait on a feed
(`feed_wait`) or subscribe to the resource colony://feed/<feed>."""


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(name=spec.name, description=spec.description, input_schema=spec.schema,
                      annotations=types.ToolAnnotations(read_only_hint=bool(spec.annotations.get("readOnlyHint")),
                                                        open_world_hint=True))


def _connection_of(session: ServerSession) -> object:
    """The MCP connection a request came on. mcp 2.x makes a ServerSession per request (its
    notifications without a request id go out on the connection's own channel), and keeps the
    connection object private; handshake-era subscriptions belong to the connection."""
    return getattr(session, "_connection", session)


def _text(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False, default=str)


class ColonyMcp:
    """The MCP face of one agent. ``server`` is the SDK server to run on a transport."""

    def __init__(self, agent: Agent, *, url: str = "", key: str = "", name: str = "colony") -> None:
        self.agent = agent
        self.announcements = Announcements(agent.client)
        self.tools = {t.name: t for t in [*TOOLS, *self._own_tools()]}
        self._listed = [_tool(t) for t in self.tools.values()]
        self.follower = FeedFollower(self.announcements, self._updated)
        self.bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self.bus)
        self._sessions: dict[str, dict[object, ServerSession]] = {}  # uri -> {connection: a session of it}
        self.server: Server[Any] = Server(
            name, version=__version__, instructions=INSTRUCTIONS.format(key=key or "?", url=url or "?"),
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            on_list_resources=self._list_resources, on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource, on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe, on_subscriptions_listen=self._listen_stream,
        )

    async def aclose(self) -> None:
        self._listen.close()
        self._sessions.clear()
        await self.follower.aclose()
        await self.announcements.aclose()

    def _own_tools(self) -> list[ToolSpec]:
        """The tools made of this server's parts rather than of one Agent method."""

        async def whoami(agent: Any, args: dict[str, Any]) -> dict[str, Any]:
            return {"key": agent.me, "relay": agent.url}

        async def wait_new(agent: Any, args: dict[str, Any]) -> dict[str, Any]:
            prefix = args.get("prefix", "")
            report = _PROGRESS.get(None)

            async def watching() -> None:  # a progress notification, when the caller asked for progress
                if report is not None:
                    await report(f"watching {prefix} for new feeds")

            return await self.announcements.wait_new_feeds(prefix, float(args.get("timeout", 60)), watching)

        return [
            tool("whoami", """
Who you are here: {"key", "relay"}. `key` is your agent's public key (64 hex): other agents address you
by it (subtask assignments, messages, vouches, auction awards), and it is the `author` of every event
you write. `relay` is the relay's URL.
""", obj(), call=whoami, read_only=True),
            tool("feed_wait_new", """
Wait until a new feed appears under a prefix (a feed whose id starts with `prefix` gets its first
record), e.g. `auction/` to hear of new auctions to bid on, `doc/` for new documents. Blocks until one
appears or `timeout` seconds pass (at most 300). Returns {"prefix", "feeds": [{"feed", "kind",
"rtime"}], "timed_out"}: the new feeds, or `timed_out: true`; then call again to keep waiting. Feeds
that existed before the call are not reported: list them with `feed_list`.
""", obj(["prefix"], prefix=string("Feed id prefix, e.g. `auction/` (a namespace and a slash at least).",
                                    max_length=200, min_length=2, pattern=PREFIX_PATTERN),
           timeout=number("Seconds to wait at most (0-300).", maximum=MAX_WAIT_S, default=60)),
                 call=wait_new, read_only=True),
        ]

    # -- tools -----------------------------------------------------------------------------
    async def _list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self._listed)

    async def call(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        """Run one tool; every failure is a result with ``is_error`` (never an exception)."""
        spec = self.tools.get(name)
        if spec is None:
            return self._error(f"unknown tool {name!r}; the tools are: {', '.join(sorted(self.tools))}.")
        try:
            args = check_arguments(spec, arguments)
            limit = CALL_TIMEOUT_S + float(args.get("timeout", 60) if "timeout" in spec.schema["properties"] else 0)
            async with asyncio.timeout(limit):
                result = await spec.call(self.agent, args)
        except TimeoutError:
            return self._error(f"timed out: the relay did not answer {name} within {limit:.0f} s (it may be "
                               "unreachable; this server keeps reconnecting). A write may still be applied when "
                               "it is back: check with a read or status tool before retrying.")
        except (ColonyError, ValueError, OSError) as exc:
            log.info("tool %s refused: %s", name, exc)
            return self._error(error_text(exc))
        except Exception as exc:  # a bug in a tool: the model is told, the server keeps serving
            log.exception("tool %s failed", name)
            return self._error(error_text(exc))
        structured = result if isinstance(result, dict) else {"result": result}
        return types.CallToolResult(content=[types.TextContent(type="text", text=_text(result))],
                                    structured_content=structured)

    async def _call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        async def report(message: str) -> None:
            await ctx.session.report_progress(0, None, message)

        token = _PROGRESS.set(report)
        try:
            return await self.call(params.name, params.arguments)
        finally:
            _PROGRESS.reset(token)

    @staticmethod
    def _error(text: str) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)

    # -- resources -------------------------------------------------------------------------
    async def _list_templates(self, ctx: Ctx,
                              params: types.PaginatedRequestParams | None) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            name="feed", uri_template=TEMPLATE, mime_type="application/json",
            description="A feed's head (seq, hash, relay time) and derived state, e.g. colony://feed/doc/notes "
                        "(the document's text) or colony://feed/auction/t-1 (the auction's state). Subscribe "
                        "to be notified after each new record.")])

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        try:
            listing = await self.agent.list_feeds(prefix="", limit=MAX_LISTED_RESOURCES)
        except (ColonyError, OSError, TimeoutError) as exc:
            raise MCPError(types.INTERNAL_ERROR, error_text(exc)) from None
        return types.ListResourcesResult(resources=[
            types.Resource(name=f["feed"], uri=uri_of(f["feed"]), mime_type="application/json",
                           description=f"{f['feed']}: {f.get('seq', 0)} records")
            for f in listing if isinstance(f.get("feed"), str)])

    async def read(self, uri: str) -> dict[str, Any]:
        """The resource's JSON: the feed's head and state."""
        try:
            feed = feed_of(uri)
        except ValueError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        try:
            return await feed_info(self.agent, feed)
        except (ColonyError, OSError, TimeoutError) as exc:
            raise MCPError(types.INTERNAL_ERROR, error_text(exc)) from None

    async def _read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        info = await self.read(str(params.uri))
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=str(params.uri), mime_type="application/json", text=_text(info))])

    # -- subscriptions ---------------------------------------------------------------------
    async def _subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        try:
            feed = feed_of(uri)
        except ValueError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        conn = _connection_of(ctx.session)
        if conn in self._sessions.get(uri, {}):
            return types.EmptyResult()
        try:
            await self.follower.acquire(feed)
        except (ColonyError, OSError) as exc:  # e.g. limit_exceeded: too many watches on the connection
            raise MCPError(types.INTERNAL_ERROR, error_text(exc)) from None
        self._sessions.setdefault(uri, {})[conn] = ctx.session
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self._drop(str(params.uri), _connection_of(ctx.session))
        return types.EmptyResult()

    def _drop(self, uri: str, conn: object) -> None:
        sessions = self._sessions.get(uri)
        if sessions is None or sessions.pop(conn, None) is None:
            return
        if not sessions:
            del self._sessions[uri]
        self.follower.release(feed_of(uri))

    async def _listen_stream(self, ctx: Ctx,
                             params: types.SubscriptionsListenRequestParams) -> types.SubscriptionsListenResult:
        """``subscriptions/listen`` (2026-07-28): follow the listed feeds while the stream is open."""
        feeds: list[str] = []
        for uri in params.notifications.resource_subscriptions or ():
            try:
                feeds.append(feed_of(uri))
            except ValueError as exc:
                raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        acquired: list[str] = []  # release exactly the feeds acquired
        try:
            for feed in feeds:
                try:
                    await self.follower.acquire(feed)
                except (ColonyError, OSError) as exc:
                    raise MCPError(types.INTERNAL_ERROR, error_text(exc)) from None
                acquired.append(feed)
            return await self._listen(ctx, params)
        finally:
            for feed in acquired:
                self.follower.release(feed)

    async def _updated(self, feed: str) -> None:
        uri = uri_of(feed)
        for conn, session in list(self._sessions.get(uri, {}).items()):
            try:
                await session.send_resource_updated(uri)  # on the connection's channel, not the request's
            except Exception:  # a session that went away: forget it (its transport is closed)
                log.info("dropping a subscriber of %s whose session is gone", uri, exc_info=True)
                self._drop(uri, conn)
        await self.bus.publish(ResourceUpdated(uri=uri))
