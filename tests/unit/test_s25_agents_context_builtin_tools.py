"""ContextWindowMiddleware with a provider's built-in (server) tool among the agent's tools
(``{"type": "web_search_preview"}``, Anthropic's typed server tools): the call goes out (it
raised "tools[0]: a tool needs a name; use {"type": "function", ...}"), the tool is counted by a
counter that counts built-in tools (Claude's) and left out by one that cannot (tiktoken), as
BudgetMiddleware does; the function tools beside it still count."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import Field

from langchain_tokenbudget import ContextWindowMiddleware

OPENAI_SEARCH = {"type": "web_search_preview"}
CLAUDE_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
CLAUDE_CODE = {"type": "code_execution_20250522", "name": "code_execution"}
# a built-in tool big enough to matter in the budget
CLAUDE_BIG_SEARCH = {
    **CLAUDE_SEARCH,
    "allowed_domains": [f"docs-{i}.example-documentation-site.com" for i in range(120)],
}


class _Recording(BaseChatModel):
    """Replies "done" and records the messages of each call."""

    received: list[list[BaseMessage]] = Field(default_factory=list)
    tools_bound: list[Any] = Field(default_factory=list)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.received.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        self.tools_bound.extend(tools)
        return self

    @property
    def _llm_type(self) -> str:
        return "recording"


@tool
def lookup(query: str) -> str:
    """Look something up in the company wiki and return the best matching paragraph."""
    return query


def _conversation(turns: int = 20) -> list[Any]:
    out: list[Any] = []
    for t in range(turns):
        out += [("user", f"question {t}: " + "words " * 40), ("assistant", f"answer {t}: " + "reply " * 40)]
    return [*out, ("user", "and now?")]


def _run(middleware: ContextWindowMiddleware, tools: list[Any]) -> _Recording:
    model = _Recording(received=[], tools_bound=[])
    agent = create_agent(model, tools=tools, system_prompt="Be brief.", middleware=[middleware])
    result = agent.invoke({"messages": _conversation()})
    assert result["messages"][-1].content == "done"
    return model


@pytest.mark.parametrize("strategy", ["trim", "summarise"])
@pytest.mark.parametrize(
    "builtin", [OPENAI_SEARCH, CLAUDE_SEARCH, CLAUDE_CODE], ids=["openai", "claude", "code"]
)
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_a_builtin_tool_does_not_stop_the_call(model: str, builtin: dict[str, Any], strategy: str) -> None:
    summariser = _Recording(received=[], tools_bound=[])
    middleware = ContextWindowMiddleware(
        model,
        max_tokens=1_500,
        strategy=strategy,  # type: ignore[arg-type]
        summariser=summariser if strategy == "summarise" else None,
    )
    recorded = _run(middleware, [builtin, lookup])
    assert recorded.received  # the agent's call went out
    assert builtin in recorded.tools_bound  # sent as it is, not rewritten


def test_tiktoken_leaves_an_openai_builtin_tool_out_and_counts_the_function_tools() -> None:
    alone = _run(ContextWindowMiddleware("gpt-4o", max_tokens=1_500), [lookup])
    both = _run(ContextWindowMiddleware("gpt-4o", max_tokens=1_500), [OPENAI_SEARCH, lookup])
    none = _run(ContextWindowMiddleware("gpt-4o", max_tokens=1_500), [])
    assert len(both.received[0]) == len(alone.received[0])
    assert len(alone.received[0]) < len(none.received[0])  # the function tool still counts


def test_a_claude_counter_counts_the_builtin_tool() -> None:
    without = _run(ContextWindowMiddleware("claude-sonnet-4-5", max_tokens=3_000), [lookup])
    with_builtin = _run(
        ContextWindowMiddleware("claude-sonnet-4-5", max_tokens=3_000), [CLAUDE_BIG_SEARCH, lookup]
    )
    assert len(with_builtin.received[0]) < len(without.received[0])


def test_summarise_with_a_claude_counter_counts_the_builtin_tool() -> None:
    def run(tools: list[Any]) -> int:
        summariser = _Recording(received=[], tools_bound=[])
        middleware = ContextWindowMiddleware(
            "claude-sonnet-4-5", max_tokens=3_000, strategy="summarise", summariser=summariser
        )
        return len(_run(middleware, tools).received[0])

    assert run([CLAUDE_BIG_SEARCH, lookup]) < run([lookup])
