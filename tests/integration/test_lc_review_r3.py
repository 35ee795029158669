"""Budget adapters against the loopback provider server: routed calls to chat models that go by
their own names, streamed Claude replies under mixed cache TTL markers."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from provider_server import AnthropicReply, OpenAIReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware, RoutingMiddleware
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {"metadata": {"user": "alice", "feature": "qa"}}


def chat(server: ProviderServer, name: str) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=server.url + "/v1", api_key=SecretStr("t"), max_retries=0)


def rows(ledger: Ledger) -> dict[str, int]:
    return {r.rollup_key: r.values["cost_nanos"] for r in ledger.store.rollup([ledger.day()])}


@pytest.mark.parametrize("setup", ["handler(model=gpt-4o)", "handler()", "middleware"])
def test_routed_call_to_a_deployment_alias_is_charged_on_the_tier_pricing_model(
    provider_server: ProviderServer, setup: str
) -> None:
    ledger = Ledger("memory://")
    routing = RoutingMiddleware(
        {
            "small": chat(provider_server, "acme-small-deploy"),
            "large": chat(provider_server, "acme-large-deploy"),
        },
        models={"small": "gpt-4o-mini", "large": "gpt-4o"},
    )
    middleware: list[Any] = [routing]
    config = dict(CONFIG)
    if setup == "middleware":
        middleware.append(BudgetMiddleware(ledger, model="gpt-4o"))
    else:
        kw = {"model": "gpt-4o"} if "gpt-4o" in setup else {}
        config["callbacks"] = [BudgetCallbackHandler(ledger, **kw)]
    agent = create_agent(chat(provider_server, "acme-large-deploy"), middleware=middleware)
    provider_server.queue(OpenAIReply(text="Paris.", prompt_tokens=1000, completion_tokens=100))
    out = agent.invoke({"messages": [("user", "Capital of France?")]}, config=config)  # type: ignore[arg-type]
    assert out["messages"][-1].response_metadata["tokenbudget_route"]["model"] == "gpt-4o-mini"
    assert list(rows(ledger)) == ["qa/alice/gpt-4o-mini"]
    assert build_report(ledger).totals.routed_requests == 1


MIXED = [
    SystemMessage(
        content=[
            {
                "type": "text",
                "text": "Our policy. " * 2000,
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ]
    ),
    HumanMessage(
        content=[
            {
                "type": "text",
                "text": "The thread. " * 1500,
                "cache_control": {"type": "ephemeral", "ttl": "5m"},
            },
            {"type": "text", "text": "Can I get a refund?"},
        ]
    ),
]


def test_a_streamed_claude_reply_under_mixed_ttl_markers_costs_what_the_same_reply_does_unstreamed(
    provider_server: ProviderServer,
) -> None:
    """Anthropic reports the 1h block read and the 5m block written; a stream reports no split."""
    cost, estimated = {}, {}
    for how in ("invoke", "stream"):
        ledger = Ledger("memory://")
        handler = BudgetCallbackHandler(ledger, model="claude-haiku-4-5")
        provider_server.queue(
            AnthropicReply(
                input_tokens=12,
                output_tokens=7,
                cache_read_input_tokens=8000,
                ephemeral_5m_input_tokens=6000,
                ephemeral_1h_input_tokens=0,
            )
        )
        claude = ChatAnthropic(
            base_url=provider_server.url,
            api_key=SecretStr("t"),
            model_name="claude-haiku-4-5",
            max_retries=0,
            max_tokens_to_sample=100,
            timeout=None,
            stop=None,
        )
        if how == "invoke":
            claude.invoke(MIXED, config={"callbacks": [handler]})
        else:
            list(claude.stream(MIXED, config={"callbacks": [handler]}))
        values = [r.values for r in ledger.store.rollup([ledger.day()])]
        cost[how] = sum(v["cost_nanos"] for v in values)
        estimated[how] = sum(v.get("estimated", 0) for v in values)
    assert cost["stream"] == cost["invoke"]
    assert estimated == {"invoke": 0, "stream": 1}
