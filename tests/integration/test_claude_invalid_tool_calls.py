"""A Claude conversation holding a malformed tool call keeps going under a budget.

When Claude's tool arguments are not valid JSON (a ``tool_use`` cut off by ``max_tokens``),
LangChain keeps the call in ``AIMessage.invalid_tool_calls`` and ``create_agent`` answers it with an
error ``ToolMessage``; LlamaIndex keeps the partial JSON as a string ``tool_kwargs``.
langchain-anthropic sends such a call as a ``tool_use`` block with ``input: {}``; the Claude count
must do the same (the budget adapters used to refuse every later call of the thread with
``InvalidMessageError``) and flag the count inexact (another integration may send otherwise).
Ids another provider minted (``functions.get_weather:0``), which the API refuses, are rewritten as
langchain-anthropic rewrites them. The counts come from the loopback server's ``count_tokens``
through the real anthropic SDK; the chat models are the real integrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from provider_server import AnthropicReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware
from llamaindex_tokenbudget import BudgetCallbackHandler as LlamaBudgetCallbackHandler
from tokenbudget_core import TokenCounter
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"
QUESTION = "What is the weather in Oslo?"
MALFORMED = '{"city": "Os'


def malformed_call(call_id: str = "toolu_01") -> AIMessage:
    invalid = {
        "name": "get_weather",
        "args": MALFORMED,
        "id": call_id,
        "error": "truncated",
        "type": "invalid_tool_call",
    }
    return AIMessage(content="", invalid_tool_calls=[invalid])  # type: ignore[list-item]


def history(call_id: str = "toolu_01") -> list[BaseMessage]:
    error = ToolMessage("Error: the arguments were not valid JSON.", tool_call_id=call_id, status="error")
    return [HumanMessage(QUESTION), malformed_call(call_id), error]


def claude(server: ProviderServer) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model=CLAUDE, max_retries=0, max_tokens=100
    )


def counter(client: anthropic.Anthropic) -> AnthropicTokenCounter:
    c = TokenCounter.for_model(CLAUDE, anthropic_client=client)
    assert isinstance(c, AnthropicTokenCounter)
    return c


def tool_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_use`` and ``tool_result`` blocks of a request body, as the model reads them."""
    keep = {"tool_use": ("type", "id", "name", "input"), "tool_result": ("type", "tool_use_id")}
    return [
        {k: block[k] for k in keep[block["type"]]}
        for turn in body["messages"]
        if isinstance(turn["content"], list)
        for block in turn["content"]
        if block.get("type") in keep
    ]


def sent(server: ProviderServer, path: str) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == path]


def requests_of(ledger: Ledger) -> int:
    return sum(r.values.get("requests", 0) for r in ledger.store.rollup([ledger.day()]))


@pytest.mark.parametrize("call_id", ["toolu_01", "functions.get_weather:0"])
def test_the_callback_counts_a_malformed_claude_call_as_langchain_anthropic_sends_it(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, call_id: str
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    exact = counter(anthropic_client)
    handler = BudgetCallbackHandler(ledger, counter=exact)
    provider_server.queue(AnthropicReply(input_tokens=30, output_tokens=5))
    reply = claude(provider_server).invoke(history(call_id), config={"callbacks": [handler]})
    assert reply.content == AnthropicReply().text
    [counted] = sent(provider_server, "/v1/messages/count_tokens")
    [billed] = sent(provider_server, "/v1/messages")
    assert tool_blocks(counted) == tool_blocks(billed)  # the count is of what is billed
    [use, result] = tool_blocks(counted)
    assert use["input"] == {}
    assert use["id"] == result["tool_use_id"]
    assert (use["id"] == call_id) is (call_id == "toolu_01")  # an id the API refuses is rewritten
    assert exact.last_error is not None
    assert "messages[1].tool_calls[0].arguments" in exact.last_error
    assert requests_of(ledger) == 1


def test_the_count_of_a_guessed_call_is_flagged_inexact_also_from_the_cache(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    from langchain_tokenbudget.messages import to_core_request

    exact = counter(anthropic_client)
    messages = to_core_request(history())
    first, again = exact.count_messages(messages), exact.count_messages(messages)
    assert (first.exact, again.exact, first.method) == (False, False, "anthropic-api")
    assert int(first) == int(again)
    assert exact.api_calls == 1
    # The same call with arguments that are a JSON object is exact.
    call = AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {}, "id": "toolu_01"}])
    fine = exact.count_messages(to_core_request([HumanMessage(QUESTION), call, history()[2]]))
    assert fine.exact
    assert exact.last_error is None
    assert int(fine) == int(first)  # input {} either way: the same request, the same count


def test_an_agent_turn_after_a_malformed_claude_call_goes_through_the_middleware(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    budget = BudgetMiddleware(ledger, counter=counter(anthropic_client))
    agent = create_agent(claude(provider_server), middleware=[budget])
    provider_server.queue(AnthropicReply(input_tokens=30, output_tokens=5))
    out = agent.invoke({"messages": [*history(), HumanMessage("Please try again.")]})
    assert out["messages"][-1].content == AnthropicReply().text
    [counted] = sent(provider_server, "/v1/messages/count_tokens")
    [billed] = sent(provider_server, "/v1/messages")
    assert tool_blocks(counted) == tool_blocks(billed)
    assert requests_of(ledger) == 1


def test_the_llamaindex_handler_counts_partial_tool_kwargs_for_claude(
    tmp_path: Path, provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler's own counter reaches the loopback server through the SDK's environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", provider_server.url)
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = LlamaBudgetCallbackHandler(ledger, model=CLAUDE)
    llm = MockLLM(max_tokens=3, callback_manager=CallbackManager([handler]))
    call = ToolCallBlock(tool_call_id="t1", tool_name="get_weather", tool_kwargs=MALFORMED)
    messages = [
        ChatMessage(role="user", content=QUESTION),
        ChatMessage(role="assistant", blocks=[call]),
        ChatMessage(role="tool", content="Error: bad arguments", additional_kwargs={"tool_call_id": "t1"}),
    ]
    llm.chat(messages)
    counted = sent(provider_server, "/v1/messages/count_tokens")[0]  # the input (then MockLLM's echo)
    assert tool_blocks(counted) == [
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
        {"type": "tool_result", "tool_use_id": "t1"},
    ]
    assert requests_of(ledger) == 1
