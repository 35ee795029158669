"""The budget handler reserves the built-in (server) tools a Claude call carries.

The handler used to keep only function tools (``is_function_tool``) before counting, so a
Claude call with Anthropic's computer-use tool was reserved without its definition, which the
API counts (and bills) from the tool's ``type``: hundreds of tokens, unreserved. Claude's exact
count request carries built-in typed tools as the host sends them, so the handler now passes
them to a Claude counter. A counter that cannot count them (tiktoken's: OpenAI publishes no
count of its built-in tools) still gets function tools only, and the call goes out.

Real LangChain runs (``ChatAnthropic`` over a socket to the loopback provider server of
``this directory, the official Anthropic client counting on its ``count_tokens``), our
handlers, a real ledger.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from provider_server import AnthropicReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger

CLAUDE = "claude-haiku-4-5"
COMPUTER = {
    "type": "computer_20250124",
    "name": "computer",
    "display_width_px": 1024,
    "display_height_px": 768,
}
COMPUTER_TOKENS = 735
"""What Anthropic's count adds for the computer-use tool (its definition and system prompt)."""
PROMPT_TOKENS = 20
MAX_OUT = 100
WEATHER = {
    "name": "weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def anthropic_count(body: dict[str, Any]) -> int:
    """A stand-in for Anthropic's count: the prompt, plus each tool by its type."""
    tools = body.get("tools") or []
    computer = sum(COMPUTER_TOKENS for t in tools if str(t.get("type", "")).startswith("computer_"))
    return PROMPT_TOKENS + computer + 30 * sum(1 for t in tools if "input_schema" in t)


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    s = ProviderServer().start()
    s.count_tokens = anthropic_count
    try:
        yield s
    finally:
        errors = list(s.errors)
        s.stop()
        assert not errors, f"the provider server raised: {errors!r}"


def claude(server: ProviderServer) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model=CLAUDE, max_retries=0, max_tokens=MAX_OUT
    )


def count_requests(server: ProviderServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path.endswith("/count_tokens")]


def ledger(limit: int) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=limit))


def test_a_computer_use_tool_is_reserved_with_a_claude_model(server: ProviderServer) -> None:
    """Room for the prompt and the reply, not for the computer-use definition: refused, the
    reservation asked for names the tool's tokens; before, it went out reserved 735 tokens short."""
    led = ledger(PROMPT_TOKENS + MAX_OUT + 50)
    with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as client:
        counter = TokenCounter.for_model(CLAUDE, anthropic_client=client)
        handler = BudgetCallbackHandler(led, user="u", counter=counter)
        model = claude(server).bind_tools([COMPUTER])
        with pytest.raises(BudgetExceededError) as caught:
            model.invoke("Take a screenshot", config={"callbacks": [handler]})
    assert int(caught.value.requested) == PROMPT_TOKENS + COMPUTER_TOKENS + MAX_OUT
    (counted,) = count_requests(server)
    assert counted["tools"] == [COMPUTER]  # as the host sends it: the API counts it by its type
    assert all(r.path.endswith("/count_tokens") for r in server.requests)  # the call was never sent


@pytest.mark.parametrize("handler_class", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
async def test_a_claude_call_with_built_in_and_function_tools_counts_both_and_is_charged_the_bill(
    server: ProviderServer, handler_class: Any
) -> None:
    led = ledger(10_000)
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0) as aclient:
        with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as client:
            counter = TokenCounter.for_model(CLAUDE, anthropic_client=client, anthropic_async_client=aclient)
            handler = handler_class(led, user="u", counter=counter)
            server.queue(AnthropicReply(input_tokens=PROMPT_TOKENS + COMPUTER_TOKENS + 30, output_tokens=7))
            model = claude(server).bind_tools([COMPUTER, WEATHER])
            reply = await model.ainvoke("Take a screenshot", config={"callbacks": [handler]})
    assert isinstance(reply, AIMessage)
    (counted,) = count_requests(server)
    assert counted["tools"] == [COMPUTER, WEATHER]
    (row,) = led.store.rollup([led.day()])
    assert (row.values["input_tokens"], row.values["output_tokens"]) == (785, 7)
    assert row.values["estimated"] == 0


def test_an_openai_built_in_tool_is_left_to_the_reported_usage(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tiktoken's counter cannot count OpenAI's built-in tools (it would refuse one without a
    name): the call is reserved with its function tools and goes out."""
    from tokenbudget_core import counting

    monkeypatch.setattr(counting, "_UNCOUNTED_SEEN", set())  # said once a process: say it here
    weather = {"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}
    led = ledger(10_000)
    handler = BudgetCallbackHandler(led, model="gpt-4o", user="u", max_output_tokens=MAX_OUT)
    reply = AIMessage("done", usage_metadata={"input_tokens": 90, "output_tokens": 1, "total_tokens": 91})
    model = GenericFakeChatModel(messages=itertools.repeat(reply)).bind(
        tools=[weather, {"type": "web_search_preview"}]
    )
    with caplog.at_level("INFO", logger="tokenbudget"):
        assert model.invoke("Search the news", config={"callbacks": [handler]}).content == "done"
    (row,) = led.store.rollup([led.day()])
    assert (row.values["input_tokens"], row.values["output_tokens"]) == (90, 1)
    assert "web_search_preview" in caplog.text  # said: its tokens are not reserved


def test_budget_middleware_reserves_a_computer_use_tool_with_a_claude_model(server: ProviderServer) -> None:
    """The agent middleware kept only function tools too (and read a built-in dict as a function)."""
    from langchain.agents import create_agent

    from langchain_tokenbudget import BudgetMiddleware

    led = ledger(PROMPT_TOKENS + MAX_OUT + 50)
    with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as client:
        counter = TokenCounter.for_model(CLAUDE, anthropic_client=client)
        middleware = BudgetMiddleware(led, user="u", counter=counter)
        agent = create_agent(claude(server), tools=[COMPUTER], middleware=[middleware])
        with pytest.raises(BudgetExceededError) as caught:
            agent.invoke({"messages": [("user", "Take a screenshot")]})
    assert int(caught.value.requested) == PROMPT_TOKENS + COMPUTER_TOKENS + MAX_OUT
    (counted,) = count_requests(server)
    assert counted["tools"] == [COMPUTER]
    assert all(r.path.endswith("/count_tokens") for r in server.requests)  # the call was never sent


def test_llamaindex_handler_sends_a_call_with_an_openai_built_in_tool() -> None:
    """LlamaIndex's handler handed every tool to the counter: tiktoken's refused the nameless
    ``web_search_preview`` (``InvalidInputError``), and the call was never sent."""
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.llms import ChatMessage, MockLLM

    from llamaindex_tokenbudget import BudgetCallbackHandler as LlamaIndexHandler

    weather = {"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}
    led = ledger(10_000)
    handler = LlamaIndexHandler(led, model="gpt-4o-mini", user="u")
    llm = MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
    reply = llm.chat(
        [ChatMessage(role="user", content="Search the news")], tools=[weather, {"type": "web_search_preview"}]
    )
    assert reply.message.content
    (row,) = led.store.rollup([led.day()])
    assert row.values["requests"] == 1
    assert row.values["input_tokens"] > 0
