"""An MCP server for one Colony agent (``colony mcp``): the agent's tools and feed resources
served to any MCP host over stdio or streamable HTTP, built on the official ``mcp`` SDK and on
:class:`collab.agent.Agent`. Needs the ``mcp`` package (a dependency of the ``colony`` install).

- :mod:`.spec`: what a tool is, the schema builders, argument checks
- :mod:`.tools_content`, :mod:`.tools_coord`: the tools (descriptions written for a model)
- :mod:`.advice`: failures as tool errors with the relay's code and what to do
- :mod:`.resources`: ``colony://feed/{feed}`` and following feeds for subscribers
- :mod:`.server`: :class:`ColonyMcp`, the SDK server around one agent
- :mod:`.run`: the stdio and streamable HTTP transports

docs/agents.md shows how an MCP host starts it and a worked example.
"""
