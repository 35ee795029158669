"""Lone surrogates (half an emoji cut upstream) through the Claude counter, offline and online."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import pytest

from integration.provider_server import ProviderServer, default_count_tokens
from tokenbudget_core import TokenCounter, truncate_text
from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.prompt_builder import PromptBuilder

BROKEN = json.loads('"broken emoji \\ud83d here. More text follows in this sentence."')
CLAUDE = "claude-sonnet-4-5"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    srv = ProviderServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.usefixtures("offline")
def test_offline_claude_counts_text_with_lone_surrogates() -> None:
    counter = TokenCounter.for_model(CLAUDE)
    n = counter.count(BROKEN)
    assert not n.exact
    assert int(n) > 0
    many = counter.count_messages([{"role": "user", "content": BROKEN}, {"role": "user", "content": BROKEN}])
    assert int(many) > int(n)
    assert truncate_text(BROKEN * 50, 20, model=CLAUDE)
    assert PromptBuilder(CLAUDE, max_tokens=2000).build(user=BROKEN)


def test_online_count_sends_u_fffd_and_flags_the_count(server: ProviderServer) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0)
    counter = TokenCounter.for_model(CLAUDE, anthropic_client=client)
    assert isinstance(counter, AnthropicTokenCounter)
    n = counter.count_messages([{"role": "user", "content": BROKEN}])
    [request] = [r for r in server.requests if r.path.endswith("/count_tokens")]
    [block] = request.body["messages"][0]["content"]
    assert block == {"type": "text", "text": BROKEN.replace("\ud83d", "\ufffd")}
    assert int(n) == default_count_tokens(request.body)
    assert n.method == "anthropic-api"
    assert not n.exact
    assert counter.last_error is not None
    assert "U+FFFD" in counter.last_error
    # The same request again is served from the cache, still flagged.
    again = counter.count_messages([{"role": "user", "content": BROKEN}])
    assert again == n
    assert not again.exact
    assert counter.api_calls == 1
    # Clean text is exact as before.
    clean = counter.count_messages([{"role": "user", "content": "fine text"}])
    assert clean.exact
    assert counter.last_error is None


@pytest.mark.usefixtures("offline")
def test_a_tool_call_id_with_a_lone_surrogate_is_counted() -> None:
    # A call id the Messages API refuses is sent hashed (toolu_...): hashing it must not fail.
    bad_id = json.loads('"call_\\udc80"')
    messages = [
        {"role": "user", "content": "What is the weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": bad_id, "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": bad_id, "content": "sunny"},
    ]
    assert int(TokenCounter.for_model(CLAUDE).count_messages(messages)) > 0
