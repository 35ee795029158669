"""The structured-output schema create_agent sends beside ``request.tools`` (a ``ToolStrategy``'s
tools, a ``ProviderStrategy``'s response format, a bare schema) counts in BudgetMiddleware's
reservation and in RoutingMiddleware's decision (its context-window check): it was left out, so a
40-field schema's ~1,800 tokens were neither reserved nor checked against the window."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, Field, create_model

from langchain_tokenbudget import BudgetMiddleware, RoutingMiddleware
from langchain_tokenbudget._bridge import response_format_tools
from tokenbudget_core.ledger import Ledger

Report: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Report",
    **{
        f"field_{i}": (str, Field(description=f"The {i}th finding of the incident report, in one sentence."))
        for i in range(40)
    },
)


class _Model(BaseChatModel):
    model_name: str = "gpt-4o"
    structured: bool = False  # answers with the Report tool call (ToolStrategy)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        usage = {"input_tokens": 10, "output_tokens": 1, "total_tokens": 11}
        calls = [{"name": "Report", "args": {f"field_{i}": "x" for i in range(40)}, "id": "c1"}]
        reply = AIMessage("ok", tool_calls=calls if self.structured else [], usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "model"


def _requested(response_format: Any) -> int:
    """What BudgetMiddleware asked the run cap for (input + output worst case), from its refusal."""
    budget = BudgetMiddleware(
        Ledger("memory://"), max_run_tokens=1, max_output_tokens=10, on_exceeded="end", user="u"
    )
    agent = create_agent(_Model(), middleware=[budget], response_format=response_format)
    state = agent.invoke({"messages": [("user", "Summarise the incident.")]})
    return int(state["messages"][-1].response_metadata["tokenbudget_refusal"]["requested"])


@pytest.mark.parametrize(
    "response_format",
    [ToolStrategy(Report), ProviderStrategy(Report), Report],
    ids=["tool-strategy", "provider-strategy", "bare-schema"],
)
def test_budget_middleware_reserves_the_schema(response_format: Any) -> None:
    plain = _requested(None)
    with_schema = _requested(response_format)
    assert with_schema - plain > 500  # the 40 fields' schema (~1,800 tokens), not 0


def test_routing_middleware_counts_the_schema() -> None:
    def routed_input(response_format: Any) -> int:
        structured = response_format is not None
        tiers = {
            "small": _Model(model_name="gpt-4o-mini", structured=structured),
            "large": _Model(model_name="gpt-4o", structured=structured),
        }
        routing = RoutingMiddleware(tiers, max_output_tokens=10)
        agent = create_agent(_Model(), middleware=[routing], response_format=response_format)
        state = agent.invoke({"messages": [("user", "Summarise the incident.")]}, {"recursion_limit": 10})
        ai = [m for m in state["messages"] if isinstance(m, AIMessage)][-1]
        return int(ai.response_metadata["tokenbudget_route"]["input_tokens"])

    assert routed_input(ToolStrategy(Report)) - routed_input(None) > 500


def test_helper_matches_what_the_agent_binds() -> None:
    def tools_of(response_format: Any) -> list[dict[str, Any]]:
        return response_format_tools(
            SimpleNamespace(response_format=response_format, model=_Model(), tools=[])
        )

    tools = tools_of(ToolStrategy(Report))
    assert [t["function"]["name"] for t in tools] == ["Report"]
    assert len(tools[0]["function"]["parameters"]["properties"]) == 40
    (provider,) = tools_of(ProviderStrategy(Report))
    assert provider["function"]["parameters"] == Report.model_json_schema()
    assert tools_of(None) == []
