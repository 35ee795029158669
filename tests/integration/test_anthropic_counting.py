"""Claude counts through the real anthropic SDK against the loopback server."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import pytest
from provider_server import ProviderServer, default_count_tokens

from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import TokenCountError

pytestmark = pytest.mark.integration

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "toolu_2",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lyon"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"},
    {"role": "tool", "tool_call_id": "toolu_2", "content": "15C rain"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def counter_for(client: Any, **kwargs: Any) -> AnthropicTokenCounter:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=client, **kwargs)
    assert isinstance(counter, AnthropicTokenCounter)
    return counter


def test_exact_count_sends_system_tools_and_tool_blocks(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = counter_for(anthropic_client)
    n = counter.count_messages(CONVERSATION, TOOLS)
    assert n.exact
    assert n.method == "anthropic-api"
    [request] = [r for r in provider_server.requests if r.path.endswith("/count_tokens")]
    body = request.body
    assert int(n) == default_count_tokens(body)
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == "You are a weather bot."
    assert body["tools"] == [
        {
            "name": "weather",
            "description": "Current weather for a city",
            "input_schema": TOOLS[0]["function"]["parameters"],
        }
    ]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"]  # both tool results merged in one user turn
    tool_uses = [b for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
    assert [(b["id"], b["input"]) for b in tool_uses] == [
        ("toolu_1", {"city": "Paris"}),
        ("toolu_2", {"city": "Lyon"}),
    ]
    results = body["messages"][2]["content"]
    assert [(b["type"], b["tool_use_id"]) for b in results] == [
        ("tool_result", "toolu_1"),
        ("tool_result", "toolu_2"),
    ]


def test_images_are_sent_as_image_blocks(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    data = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
    counter_for(anthropic_client).count_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                ],
            }
        ]
    )
    block = provider_server.requests[-1].body["messages"][0]["content"][1]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def test_repeated_request_is_served_from_cache(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = counter_for(anthropic_client)
    first = counter.count_messages(CONVERSATION, TOOLS)
    again = counter.count_messages(list(CONVERSATION), TOOLS)
    assert again == first
    assert again.exact
    assert counter.api_calls == 1
    assert len(provider_server.requests) == 1
    counter.count_messages([*CONVERSATION, {"role": "user", "content": "And tomorrow?"}], TOOLS)
    assert counter.api_calls == 2


@pytest.mark.parametrize("status", [529, 500, 429])
def test_overloaded_api_degrades_to_a_flagged_estimate(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, status: int
) -> None:
    provider_server.count_tokens_error = status
    counter = counter_for(anthropic_client)
    n = counter.count_messages(CONVERSATION)
    assert not n.exact
    assert n.method == "estimate"
    assert n > 0
    assert counter.last_error is not None
    assert str(status) in counter.last_error
    # Estimates are never cached as exact: once the API is back, the count is exact.
    provider_server.count_tokens_error = None
    assert counter.count_messages(CONVERSATION).exact


def test_a_gateway_without_count_tokens_is_estimated_but_an_unknown_model_raises(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    """A proxy that forwards /v1/messages but not count_tokens answers 404: the call can still go
    out, so the count is a flagged estimate; Anthropic's own 404 for an unknown model is the
    caller's error and raises."""
    provider_server.count_tokens_error = 404
    provider_server.count_tokens_error_message = "Not Found"
    n = counter_for(anthropic_client).count_messages(CONVERSATION)
    assert not n.exact
    assert n > 0
    provider_server.count_tokens_error_message = "model: claude-nope"
    with pytest.raises(TokenCountError, match="404"):
        counter_for(anthropic_client).count_messages(CONVERSATION)


def test_timeout_degrades_to_estimate_quickly(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens_delay = 5.0
    counter = counter_for(anthropic_client, timeout=0.3)
    n = counter.count_messages(CONVERSATION)
    assert not n.exact
    assert counter.last_error is not None
    assert "Timeout" in counter.last_error


def test_strict_mode_and_caller_errors_raise(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.count_tokens_error = 529
    strict = AnthropicTokenCounter(counter_for(anthropic_client).model, client=anthropic_client, strict=True)
    with pytest.raises(TokenCountError, match="529"):
        strict.count_messages(CONVERSATION)
    provider_server.count_tokens_error = 400  # a bad request is the caller's bug: never hidden by an estimate
    with pytest.raises(TokenCountError, match="400"):
        counter_for(anthropic_client).count_messages(CONVERSATION)


def test_without_a_client_or_key_counts_are_flagged_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    counter = TokenCounter.for_model("claude-sonnet-4-5")
    n = counter.count_messages(CONVERSATION)
    assert not n.exact
    assert "ANTHROPIC_API_KEY" in (counter.last_error or "")  # type: ignore[attr-defined]


def test_estimate_calibrates_from_reported_usage(provider_server: ProviderServer) -> None:
    cal = Calibration(prior=1.0, alpha=0.5)
    counter = TokenCounter.for_model("claude-sonnet-4-5", calibration=cal)
    assert isinstance(counter, AnthropicTokenCounter)
    messages = [
        {"role": "user", "content": "Explain the difference between a budget and a forecast in detail."}
    ]
    raw = counter.count_messages(messages)
    for _ in range(15):
        counter.observe(messages, actual_input_tokens=int(raw) * 2)
    calibrated = counter.count_messages(messages)
    assert not calibrated.exact
    assert abs(calibrated - 2 * raw) <= 1


async def test_async_count_uses_the_async_client(
    provider_server: ProviderServer, async_anthropic_client: anthropic.AsyncAnthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_async_client=async_anthropic_client)
    n = await counter.acount_messages(CONVERSATION, TOOLS)
    assert n.exact
    assert int(n) == default_count_tokens(provider_server.requests[-1].body)
    assert (await counter.acount_messages(CONVERSATION, TOOLS)) == n
    assert len(provider_server.requests) == 1
