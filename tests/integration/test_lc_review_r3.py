"""Budget adapters in agent runs against the loopback provider server: routed calls to chat
models that go by their own names, and calls the agent fails after they were billed."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_openai import ChatOpenAI
from provider_server import OpenAIReply, ProviderServer
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
