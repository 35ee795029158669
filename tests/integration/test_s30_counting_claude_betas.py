"""Claude counts of requests holding beta built-in tools carry the betas the host sends.

The API refuses a beta tool type (computer use, code execution, MCP toolsets, memory, web fetch,
tool search...) without its beta (a 400, which the counter raised as ``TokenCountError``: a budget
handler then blocked a call the host sends fine). The count now goes through
``client.beta.messages.count_tokens(betas=[...])`` with the betas langchain-anthropic adds to the
real call. The loopback server, with ``count_tokens_rules`` on, refuses a beta tool sent without its
beta as the API does, and records the ``anthropic-beta`` header.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_anthropic.chat_models import _TOOL_TYPE_TO_BETA
from provider_server import ProviderServer, RecordedRequest, default_count_tokens
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import TokenCountError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"  # (not deprecated: the SDK warns on a host call to a deprecated one)
COMPUTER = {
    "type": "computer_20250124",
    "name": "computer",
    "display_width_px": 1024,
    "display_height_px": 768,
}
HI = [{"role": "user", "content": "Take a screenshot"}]
# One tool of each type langchain-anthropic adds a beta for (its own table, not ours).
BETA_TOOLS: list[dict[str, Any]] = [
    {"type": kind, "mcp_server_name": "github"} if kind == "mcp_toolset" else {"type": kind, "name": "t"}
    for kind in _TOOL_TYPE_TO_BETA
]


def _counter(**kwargs: Any) -> AnthropicTokenCounter:
    counter = TokenCounter.for_model(CLAUDE, **kwargs)
    assert isinstance(counter, AnthropicTokenCounter)
    return counter


def _counts(server: ProviderServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path == "/v1/messages/count_tokens"]


def _betas(request: RecordedRequest) -> set[str]:
    headers = {k.lower(): v for k, v in request.headers.items()}
    return {b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()}


@pytest.mark.parametrize("tool", BETA_TOOLS, ids=[t["type"] for t in BETA_TOOLS])
def test_a_beta_tool_is_counted_with_its_beta(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, tool: dict[str, Any]
) -> None:
    provider_server.count_tokens_rules = True  # the API's 400 for a beta tool without its beta
    counter = _counter(anthropic_client=anthropic_client)
    n = counter.count_messages(HI, tools=[tool])
    assert n.exact
    assert n.method == "anthropic-api"
    [request] = _counts(provider_server)
    assert _TOOL_TYPE_TO_BETA[tool["type"]] in _betas(request)
    assert request.body["tools"] == [tool]
    assert int(n) == default_count_tokens(request.body)


def test_the_count_carries_the_betas_the_host_call_carries(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens_rules = True
    tools: list[dict[str, Any]] = [COMPUTER, {"type": "web_fetch_20250910", "name": "web_fetch"}]
    llm = ChatAnthropic(model=CLAUDE, api_key=SecretStr("test"), base_url=provider_server.url, max_retries=0)  # type: ignore[call-arg]
    llm.bind_tools(tools).invoke("Take a screenshot")
    [host] = [r for r in provider_server.requests if r.path == "/v1/messages"]
    n = _counter(anthropic_client=anthropic_client).count_messages(HI, tools=tools)
    assert n.exact
    [count] = _counts(provider_server)
    assert _betas(host) == {"computer-use-2025-01-24", "web-fetch-2025-09-10"}
    assert _betas(host) <= _betas(count)


def test_a_tool_with_input_examples_is_counted_with_the_advanced_tool_use_beta(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    tool = {
        "name": "lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "input_examples": [{"q": "weather"}],
    }
    assert _counter(anthropic_client=anthropic_client).count_messages(HI, tools=[tool]).exact
    [count] = _counts(provider_server)
    assert "advanced-tool-use-2025-11-20" in _betas(count)


def test_without_a_beta_tool_the_plain_route_is_used(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    weather = {"name": "weather", "input_schema": {"type": "object", "properties": {}}}
    web_search = {"type": "web_search_20250305", "name": "web_search"}  # generally available
    assert _counter(anthropic_client=anthropic_client).count_messages(HI, tools=[weather, web_search]).exact
    [count] = _counts(provider_server)
    assert not _betas(count)  # the plain messages.count_tokens: no beta header at all


async def test_async_twins_carry_the_beta_too(
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    provider_server.count_tokens_rules = True
    for counter in (
        _counter(anthropic_async_client=async_anthropic_client),
        _counter(anthropic_client=anthropic_client),  # the sync client in a worker thread
    ):
        n = await counter.acount_messages(HI, tools=[COMPUTER])
        assert n.exact
        assert n.method == "anthropic-api"
    for count in _counts(provider_server):
        assert "computer-use-2025-01-24" in _betas(count)
    assert len(_counts(provider_server)) == 2


def test_a_budget_handler_lets_a_computer_use_call_out(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens_rules = True
    handler = BudgetCallbackHandler(Ledger("memory://"), counter=_counter(anthropic_client=anthropic_client))
    llm = ChatAnthropic(model=CLAUDE, api_key=SecretStr("test"), base_url=provider_server.url, max_retries=0)  # type: ignore[call-arg]
    llm.bind_tools([COMPUTER]).invoke("Take a screenshot", config={"callbacks": [handler]})
    assert len([r for r in provider_server.requests if r.path == "/v1/messages"]) == 1
    assert _counts(provider_server)


def test_a_400_naming_a_tool_type_of_the_request_is_estimated_not_raised(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    newer = {"type": "computer_20990101", "name": "computer"}  # a type newer than the beta table
    provider_server.count_tokens_error = 400
    provider_server.count_tokens_error_message = (
        "tools.0: Input tag 'computer_20990101' found using 'type' does not match any of the expected "
        "tags: 'bash_20250124', 'custom', 'text_editor_20250124', 'web_search_20250305'"
    )
    counter = _counter(anthropic_client=anthropic_client)
    n = counter.count_messages(HI, tools=[newer])
    assert not n.exact
    assert n.method == "estimate"
    assert int(n) > 0
    assert counter.last_error is not None
    assert "computer_20990101" in counter.last_error
    strict = AnthropicTokenCounter(counter.model, client=anthropic_client, strict=True)
    with pytest.raises(TokenCountError):
        strict.count_messages(HI, tools=[newer])


def test_other_400s_still_raise(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client=anthropic_client)
    provider_server.count_tokens_error = 400
    # a tag the request does not hold: not ours to guess about
    provider_server.count_tokens_error_message = (
        "tools.0: Input tag 'bogus' found using 'type' does not match"
    )
    with pytest.raises(TokenCountError):
        counter.count_messages(HI, tools=[COMPUTER])
    provider_server.count_tokens_error_message = "messages.0.content: bad"
    with pytest.raises(TokenCountError):
        counter.count_messages(HI, tools=[COMPUTER])
