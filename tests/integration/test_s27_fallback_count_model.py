"""``for_model(name, fallback="claude-...")`` asks Anthropic's counting API about the fallback
model: Anthropic answers 404 for a name it does not know, so sending the caller's name made every
count raise."""

from __future__ import annotations

import anthropic
import pytest
from provider_server import ProviderServer, default_count_tokens

from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


def sent_models(provider_server: ProviderServer) -> list[str]:
    return [r.body["model"] for r in provider_server.requests if r.path.endswith("/count_tokens")]


@pytest.mark.parametrize(
    ("fallback", "sent"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),  # not its price id
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ],
)
def test_fallback_counts_are_asked_about_the_fallback_model(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, fallback: str, sent: str
) -> None:
    counter = TokenCounter.for_model(
        "acme-claude-proxy", fallback=fallback, anthropic_client=anthropic_client
    )
    assert isinstance(counter, AnthropicTokenCounter)
    n = counter.count_messages(MESSAGES)
    assert sent_models(provider_server) == [sent]
    assert n.exact
    assert n.method == "anthropic-api"
    assert int(n) == default_count_tokens(provider_server.requests[-1].body)
    assert n.model == "acme-claude-proxy"  # reported under the caller's name


def test_a_named_model_is_still_sent_as_named(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5-20250929", anthropic_client=anthropic_client)
    counter.count_messages(MESSAGES)
    assert sent_models(provider_server) == ["claude-sonnet-4-5-20250929"]


async def test_async_fallback_count_is_asked_about_the_fallback_model(
    provider_server: ProviderServer, async_anthropic_client: anthropic.AsyncAnthropic
) -> None:
    counter = TokenCounter.for_model(
        "acme-claude-proxy", fallback="claude-sonnet-4-5", anthropic_async_client=async_anthropic_client
    )
    n = await counter.acount_messages(MESSAGES)  # type: ignore[attr-defined]
    assert n.exact
    assert sent_models(provider_server) == ["claude-sonnet-4-5"]
