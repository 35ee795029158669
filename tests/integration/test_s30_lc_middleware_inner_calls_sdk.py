"""``BudgetMiddleware`` and the model runs made inside its model call, driven over sockets: the
real ``ChatOpenAI`` and ``ChatAnthropic`` against the loopback provider server (review s30,
findings 1-3; the same rules with fake models: tests/unit/test_s30_lc_middleware_inner_calls.py).

* 1: a routed tier call cut off by a read timeout once sent, before its fallback answered, is
  charged its flagged estimate on its own model, beside the fallback's reported usage;
* 2: a Claude guard model asked inside the agent model's call (streamed, as
  ``stream_mode="messages"`` streams every nested chat model) never supplies the call's usage;
* 3: a fallback model ``ModelFallbackMiddleware`` (listed after the budget) swaps in is charged
  once, on its own model.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from provider_server import AnthropicReply, OpenAIReply, ProviderServer
from pydantic import SecretStr

from agent_call_support import held_and_charged, rows
from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware, RouterChatModel
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

QUESTION = "What is the storage limit on the Team plan?"  # routed to the small tier
CONFIG: dict[str, Any] = {"metadata": {"feature": "f", "user": "u"}}


def ledger_at(tmp_path: Path) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**7), spool_path=tmp_path / "spool")


def gpt(url: str, model: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key=SecretStr("test"), model=model, max_retries=0, **kwargs)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


# -- finding 1 ---------------------------------------------------------------------------------------


def routed_agent(url: str, ledger: Ledger, **client: Any) -> Any:
    """``create_agent(RouterChatModel(...))``: the small tier times out after 0.5 s, its fallback answers."""
    tiers = {"small": gpt(url, "gpt-4o-mini", timeout=0.5, **client), "large": gpt(url, "gpt-4o", **client)}
    router = RouterChatModel(tiers, fallbacks={"small": [gpt(url, "gpt-4.1-mini", **client)]})
    return create_agent(router, middleware=[BudgetMiddleware(ledger)])


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_a_timed_out_tier_that_fell_back_is_charged_its_estimate(
    provider_server: ProviderServer, tmp_path: Path, how: str, with_handler: bool
) -> None:
    url = provider_server.url + "/v1"
    provider_server.queue(OpenAIReply(delay=3.0), OpenAIReply(prompt_tokens=100, completion_tokens=10))
    ledger = ledger_at(tmp_path)
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(ledger)]} if with_handler else CONFIG
    payload = {"messages": [HumanMessage(QUESTION)]}
    if how == "invoke":
        routed_agent(url, ledger).invoke(payload, config=config)
    else:

        async def call() -> None:
            # (a client of this event loop: LangChain's shared one belongs to the first loop that used it)
            async with httpx.AsyncClient() as client:
                await routed_agent(url, ledger, http_async_client=client).ainvoke(payload, config=config)

        asyncio.run(call())
    assert len(provider_server.requests) == 2  # the timed-out request reached the provider
    got = rows(ledger)
    assert got["gpt-4.1-mini"] == (1, 100, 10, 0)
    requests, input_tokens, output_tokens, estimated = got["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (1, 0, 1)
    assert input_tokens > 5
    assert set(got) == {"gpt-4o-mini", "gpt-4.1-mini"}
    used, charged = held_and_charged(ledger)
    assert used == charged  # nothing left held


# -- finding 2 ---------------------------------------------------------------------------------------


class GuardedGPT(ChatOpenAI):
    """``ChatOpenAI`` that asks a Claude guard model first (a call of its own, to another model)."""

    guard: Any = None

    def _ask(self) -> None:
        self.guard.invoke("is this request allowed?")

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self._ask()
        return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self._ask()
        yield from super()._stream(*args, **kwargs)


def guarded(server: ProviderServer, url: str, **kwargs: Any) -> GuardedGPT:
    claude = ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model="claude-haiku-4-5", max_retries=0, max_tokens=50
    )  # type: ignore[call-arg]
    return GuardedGPT(
        base_url=url, api_key=SecretStr("test"), model="gpt-4o", max_retries=0, guard=claude, **kwargs
    )


@pytest.mark.parametrize("with_handler", [False, True])
def test_a_streamed_agent_is_charged_its_own_usage_not_the_guards_running_total(
    provider_server: ProviderServer, tmp_path: Path, with_handler: bool
) -> None:
    provider_server.queue(
        AnthropicReply(input_tokens=50_000, output_tokens=10),
        OpenAIReply(prompt_tokens=120, completion_tokens=3),
    )
    ledger = ledger_at(tmp_path)
    model = guarded(provider_server, provider_server.url + "/v1", stream_usage=True)
    agent = create_agent(model, middleware=[BudgetMiddleware(ledger)])
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(ledger)]} if with_handler else CONFIG
    for _ in agent.stream(
        {"messages": [HumanMessage("Capital of France?")]}, config=config, stream_mode="messages"
    ):
        pass
    got = rows(ledger)
    assert got["gpt-4o"] == (1, 120, 3, 0)
    assert got.get("claude-haiku-4-5") == ((1, 50_000, 10, 0) if with_handler else None)


@pytest.mark.parametrize("with_handler", [False, True])
def test_a_timed_out_call_is_charged_its_own_estimate_not_the_guards_usage(
    provider_server: ProviderServer, tmp_path: Path, with_handler: bool
) -> None:
    provider_server.queue(AnthropicReply(input_tokens=50_000, output_tokens=10), OpenAIReply(delay=3.0))
    ledger = ledger_at(tmp_path)
    agent = create_agent(
        guarded(provider_server, provider_server.url + "/v1", timeout=0.5),
        middleware=[BudgetMiddleware(ledger)],
    )
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(ledger)]} if with_handler else CONFIG
    with pytest.raises(openai.APITimeoutError):
        agent.invoke({"messages": [HumanMessage("Capital of France?")]}, config=config)
    requests, input_tokens, output_tokens, estimated = rows(ledger)["gpt-4o"]
    assert (requests, output_tokens, estimated) == (1, 0, 1)
    assert 0 < input_tokens < 100


@pytest.mark.parametrize("with_handler", [False, True])
def test_a_refused_connection_is_released_whatever_the_guard_reported(
    provider_server: ProviderServer, tmp_path: Path, with_handler: bool
) -> None:
    provider_server.queue(AnthropicReply(input_tokens=50_000, output_tokens=10))
    ledger = ledger_at(tmp_path)
    agent = create_agent(guarded(provider_server, _closed_port()), middleware=[BudgetMiddleware(ledger)])
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(ledger)]} if with_handler else CONFIG
    with pytest.raises(openai.APIConnectionError):
        agent.invoke({"messages": [HumanMessage("Capital of France?")]}, config=config)
    assert "gpt-4o" not in rows(ledger)
    used, charged = held_and_charged(ledger)
    assert used == charged


# -- finding 3 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_handler", [False, True])
def test_the_fallback_model_swapped_in_further_in_is_charged_once_on_its_own_model(
    provider_server: ProviderServer, tmp_path: Path, with_handler: bool
) -> None:
    provider_server.queue(OpenAIReply(prompt_tokens=300_000, completion_tokens=30_000))
    ledger = ledger_at(tmp_path)
    fallback = ModelFallbackMiddleware(gpt(provider_server.url + "/v1", "gpt-4.1"))
    agent = create_agent(gpt(_closed_port(), "gpt-4o-mini"), middleware=[BudgetMiddleware(ledger), fallback])
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(ledger)]} if with_handler else CONFIG
    agent.invoke({"messages": [HumanMessage("Hi")]}, config=config)
    assert rows(ledger) == {"gpt-4.1": (1, 300_000, 30_000, 0)}
    used, charged = held_and_charged(ledger)
    assert used == charged
