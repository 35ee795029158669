"""Claude counts never send a body the Messages API refuses by its own rules.

``count_messages([], tools)`` (the request's framing, which ``fit_messages``, ``ConversationWindow``,
the LlamaIndex memories and ``explain`` measure) sent ``messages: []``, and ``count("  ")`` sent a
user turn with no content (its whitespace-only block dropped): the API answers both with a 400,
which the counter raised as ``TokenCountError``, so fitting and memory could not be used with a live
key. The loopback server, with ``count_tokens_rules`` on, refuses those bodies as the API does.
Now the framing is the estimate's, the tools and system prompt measured by the API (with a one-word
user turn, counted with them and alone), and whitespace-only text is the flagged estimate.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from provider_server import ProviderServer, count_tokens_refusal, default_count_tokens

from tokenbudget_core import ConversationWindow, fit_messages
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.integration

CLAUDE = "claude-sonnet-4-5"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HISTORY: list[dict[str, Any]] = [{"role": "system", "content": "You are the ACME bot."}] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: details details"}
    for i in range(10)
]


def _counter(client: Any, **kwargs: Any) -> AnthropicTokenCounter:
    counter = TokenCounter.for_model(
        CLAUDE, anthropic_client=client, calibration=Calibration(prior=1.0), **kwargs
    )
    assert isinstance(counter, AnthropicTokenCounter)
    return counter


def _count_bodies(server: ProviderServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == "/v1/messages/count_tokens"]


@pytest.fixture
def api_rules(provider_server: ProviderServer) -> ProviderServer:
    provider_server.count_tokens_rules = True
    return provider_server


def test_the_framing_without_tools_is_the_estimate_and_sends_nothing(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client)
    n = counter.count_messages([])
    assert not n.exact
    assert n.method == "estimate"
    assert int(n) == int(counter._estimator.count_messages([]))
    assert counter.last_error is not None
    assert "no message" in counter.last_error
    assert not _count_bodies(api_rules)


def test_the_framing_with_tools_is_measured_with_a_placeholder_turn(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client)
    n = counter.count_messages([], [WEATHER])
    assert not n.exact
    assert n.method == "anthropic-api"
    bodies = _count_bodies(api_rules)
    assert len(bodies) == 2
    assert all(body["messages"] for body in bodies)  # never an empty list
    assert all(count_tokens_refusal(body, {}) is None for body in bodies)
    with_tools, alone = bodies
    assert "tools" in with_tools
    assert "tools" not in alone
    tools_cost = default_count_tokens(with_tools) - default_count_tokens(alone)
    assert tools_cost > 0
    assert int(n) == tools_cost + int(counter._estimator.count_messages([]))
    # both probes are cached: the framing again costs no API call
    again = counter.count_messages([], [WEATHER])
    assert int(again) == int(n)
    assert not again.exact
    assert counter.api_calls == 2


def test_a_system_prompt_alone_is_measured_too(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client)
    n = counter.count_messages([{"role": "system", "content": "You are the ACME bot."}])
    assert not n.exact
    assert n.method == "anthropic-api"
    with_system, alone = _count_bodies(api_rules)
    assert with_system["system"] == "You are the ACME bot."
    assert int(n) == default_count_tokens(with_system) - default_count_tokens(alone) + int(
        counter._estimator.count_messages([])
    )


def test_fit_messages_and_a_window_work_with_claude_and_a_client(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client)
    fitted = fit_messages(HISTORY, 2000, counter, tools=[WEATHER])
    assert list(fitted) == HISTORY
    assert not fitted.exact
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(counter, max_tokens=4000, tools=[WEATHER])
    for m in HISTORY:
        window.append(m)
    assert window.messages() == HISTORY
    assert api_rules.errors == []


@pytest.mark.parametrize("text", ["\n\n", "   ", "\t \n"])
def test_whitespace_only_text_is_the_flagged_estimate(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic, text: str
) -> None:
    counter = _counter(anthropic_client)
    n = counter.count(text)
    assert not n.exact
    assert n.method == "estimate"
    assert int(n) > 0
    assert counter.last_error is not None
    assert "no content" in counter.last_error
    assert not _count_bodies(api_rules)
    assert int(counter.count("")) == 0  # unchanged


def test_a_last_user_turn_left_empty_is_estimated_not_sent(
    api_rules: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = _counter(anthropic_client)
    messages = [*HISTORY[:3], {"role": "user", "content": "  "}]
    n = counter.count_messages(messages)
    assert not n.exact
    assert n.method == "estimate"
    assert not _count_bodies(api_rules)
    # a request the API accepts is still exact
    assert counter.count_messages(HISTORY[:2]).exact


async def test_async_twins_answer_the_same(
    api_rules: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    sync = _counter(anthropic_client)
    expected = sync.count_messages([], [WEATHER])
    for counter in (
        TokenCounter.for_model(
            CLAUDE, anthropic_async_client=async_anthropic_client, calibration=Calibration(prior=1.0)
        ),
        _counter(anthropic_client),  # the sync client in a worker thread
    ):
        assert isinstance(counter, AnthropicTokenCounter)
        n = await counter.acount_messages([], [WEATHER])
        assert (int(n), n.exact, n.method) == (int(expected), False, "anthropic-api")
        empty = await counter.acount_messages([])
        assert not empty.exact
        assert empty.method == "estimate"
        blank = await counter.acount("  \n")
        assert not blank.exact
        assert blank.method == "estimate"
    assert all(body["messages"] for body in _count_bodies(api_rules))


def test_an_outage_while_measuring_the_tools_is_the_estimate_of_the_request(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens_error = 529
    counter = _counter(anthropic_client)
    n = counter.count_messages([], [WEATHER])
    assert not n.exact
    assert n.method == "estimate"
    assert int(n) == int(counter._estimator.count_messages([], [WEATHER]))
    assert counter.last_error is not None
    assert "529" in counter.last_error
