"""ContextWindowMiddleware counts the structured-output schema of ``create_agent(response_format=...)``:
a ``ToolStrategy``'s schema goes to the model as a tool and a ``ProviderStrategy``'s as the response
format, neither in ``request.tools``; with a 40-field schema ``max_tokens=3000`` sent ~4,757 tokens."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, create_model

from langchain_tokenbudget import ContextWindowMiddleware
from langchain_tokenbudget.messages import to_core_request
from tokenbudget_core import TokenCounter

BUDGET = 3_000
FIELDS: dict[str, Any] = {
    f"field_{i}": (str, Field(description=f"The {i}th attribute of the report, described at length " * 3))
    for i in range(40)
}
Report: type[BaseModel] = create_model("Report", **FIELDS)
ARGS = {f"field_{i}": "x" for i in range(40)}
COUNTER = TokenCounter.for_model("gpt-4o")


class _Model(BaseChatModel):
    """Answers with the structured output (a ``Report`` tool call, or its JSON as text for a
    provider response format); records what each call sent."""

    model_name: str = "gpt-4o"
    provider_json: bool = False
    received: list[list[BaseMessage]] = Field(default_factory=list)
    bound: list[Any] = Field(default_factory=list)
    bound_kwargs: dict[str, Any] = Field(default_factory=dict)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.received.append(list(messages))
        if self.provider_json:
            import json

            reply = AIMessage(json.dumps(ARGS))
        elif self.bound:
            reply = AIMessage("", tool_calls=[{"name": "Report", "args": ARGS, "id": "c1"}])
        else:
            reply = AIMessage("summary of earlier turns")
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        self.bound = list(tools)
        self.bound_kwargs = dict(kw)
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"


def _input() -> dict[str, Any]:
    return {"messages": [("user", f"note {i}: " + "blah " * 50) for i in range(60)]}


def _sent_tokens(model: _Model) -> int:
    """The tokens of the agent's last call: its messages, the tools bound, and the JSON schema of
    a provider response format counted as a tool definition."""
    tools = [convert_to_openai_tool(t) for t in model.bound]
    response_format = model.bound_kwargs.get("response_format")
    if response_format is not None:
        spec = response_format["json_schema"]
        function = {"name": spec["name"], "description": "", "parameters": spec["schema"]}
        tools.append({"type": "function", "function": function})
    return COUNTER.count_messages(to_core_request(model.received[-1]), tools or None)


def _middleware(strategy: str) -> ContextWindowMiddleware:
    summariser = _Model()
    return ContextWindowMiddleware(
        "gpt-4o",
        max_tokens=BUDGET,
        strategy=strategy,  # type: ignore[arg-type]
        summariser=summariser if strategy == "summarise" else None,
    )


@pytest.mark.parametrize("strategy", ["trim", "summarise"])
def test_tool_strategy_schema_counts_against_max_tokens(strategy: str) -> None:
    model = _Model()
    agent = create_agent(model, response_format=ToolStrategy(Report), middleware=[_middleware(strategy)])
    result = agent.invoke(_input())
    assert [convert_to_openai_tool(t)["function"]["name"] for t in model.bound] == ["Report"]
    assert result["structured_response"].field_0 == "x"  # type: ignore[attr-defined]
    assert _sent_tokens(model) <= BUDGET


@pytest.mark.parametrize("strategy", ["trim", "summarise"])
def test_provider_strategy_schema_counts_against_max_tokens(strategy: str) -> None:
    model = _Model(provider_json=True)
    agent = create_agent(model, response_format=ProviderStrategy(Report), middleware=[_middleware(strategy)])
    result = agent.invoke(_input())
    assert model.bound_kwargs.get("response_format") is not None  # sent as the response format
    assert result["structured_response"].field_0 == "x"  # type: ignore[attr-defined]
    assert _sent_tokens(model) <= BUDGET


@pytest.mark.parametrize(("name", "provider"), [("gpt-4o", True), ("my-local-model", False)])
def test_a_raw_schema_counts_as_the_agent_resolves_it(name: str, provider: bool) -> None:
    model = _Model(model_name=name, provider_json=provider)
    agent = create_agent(model, response_format=Report, middleware=[_middleware("trim")])
    agent.invoke(_input())
    assert (model.bound_kwargs.get("response_format") is not None) is provider
    assert _sent_tokens(model) <= BUDGET


def test_no_response_format_sends_as_many_messages_as_before() -> None:
    model = _Model()
    create_agent(model, middleware=[_middleware("trim")]).invoke(_input())
    sent = COUNTER.count_messages(to_core_request(model.received[-1]))
    assert BUDGET - 100 < sent <= BUDGET  # the window is filled, nothing reserved for a schema
