"""Claude's exact count of a request with Anthropic built-in tools (computer use, code execution,
web fetch, memory, MCP toolsets, tool search...).

The API counts a built-in tool's definition and system-prompt tokens from its ``type``, so the
count request must carry each such tool as the host sends it (langchain-anthropic's ``bind_tools``),
never rewritten into an empty custom tool.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from langchain_anthropic import ChatAnthropic
from provider_server import ProviderServer

from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.integration

BUILTIN_TOOLS: list[dict[str, Any]] = [
    {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
    {"type": "code_execution_20250522", "name": "code_execution"},
    {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 5},
    {"type": "memory_20250818", "name": "memory"},
    {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
    {"type": "mcp_toolset", "mcp_server_name": "github"},
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "bash_20250124", "name": "bash"},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_builtin_tools_are_counted_as_the_host_sends_them(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic_client)
    n = counter.count_messages(
        [{"role": "user", "content": "Take a screenshot"}], tools=[*BUILTIN_TOOLS, WEATHER]
    )
    assert n.exact
    sent = provider_server.requests[-1].body["tools"]
    assert sent[:-1] == BUILTIN_TOOLS
    assert sent[-1] == {
        "name": "weather",
        "description": "Current weather for a city",
        "input_schema": WEATHER["function"]["parameters"],
    }
    host = ChatAnthropic(model="claude-sonnet-4-5", api_key="test").bind_tools(BUILTIN_TOOLS)
    assert sent[:-1] == host.kwargs["tools"]


def test_a_builtin_tool_changes_the_cache_key(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic_client)
    messages = [{"role": "user", "content": "Take a screenshot"}]
    small = {
        "type": "computer_20250124",
        "name": "computer",
        "display_width_px": 800,
        "display_height_px": 600,
    }
    counter.count_messages(messages, tools=[small])
    counter.count_messages(messages, tools=[BUILTIN_TOOLS[0]])
    assert counter.api_calls == 2  # the display size is part of the tool, not dropped
