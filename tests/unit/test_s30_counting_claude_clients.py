"""The Claude counter's clients are checked when it is made, not at the first count.

``for_model(anthropic_client=..., anthropic_async_client=...)`` and ``AnthropicTokenCounter`` took
anything: an API key string, or a sync client given as the async one, failed at every count
(``AttributeError`` / ``TypeError``), which was taken for an outage: every count was a silent
estimate, and the sync client's request even reached the API, its answer thrown away.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tokenbudget_core.anthropic_counting import AnthropicTokenCounter
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.registry import get_model

CLAUDE = "claude-sonnet-4-5"
KEY = "sk-ant-api03-not-a-real-key"
SYNC = anthropic.Anthropic(api_key="test", base_url="http://127.0.0.1:9", max_retries=0)
ASYNC = anthropic.AsyncAnthropic(api_key="test", base_url="http://127.0.0.1:9", max_retries=0)

BAD_SYNC: list[tuple[str, Any]] = [
    ("key", KEY),
    ("bytes", KEY.encode()),
    ("async", ASYNC),
    ("object", object()),
]
BAD_ASYNC: list[tuple[str, Any]] = [("key", KEY), ("sync", SYNC), ("object", object()), ("number", 3)]


@pytest.mark.parametrize(("kind", "client"), BAD_SYNC, ids=[k for k, _ in BAD_SYNC])
def test_for_model_refuses_a_bad_sync_client(kind: str, client: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        TokenCounter.for_model(CLAUDE, anthropic_client=client)
    assert info.value.field == "anthropic_client"
    assert info.value.fix
    assert KEY not in repr(info.value.value)  # a key is never kept on the error


@pytest.mark.parametrize(("kind", "client"), BAD_ASYNC, ids=[k for k, _ in BAD_ASYNC])
def test_for_model_refuses_a_bad_async_client(kind: str, client: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        TokenCounter.for_model(CLAUDE, anthropic_async_client=client)
    assert info.value.field == "anthropic_async_client"
    assert info.value.fix


def test_the_constructor_names_its_own_arguments() -> None:
    model = get_model(CLAUDE)
    with pytest.raises(InvalidInputError) as info:
        AnthropicTokenCounter(model, client=KEY)
    assert info.value.field == "client"
    with pytest.raises(InvalidInputError) as info:
        AnthropicTokenCounter(model, async_client=SYNC)
    assert info.value.field == "async_client"
    assert "sync" in info.value.problem


def test_a_sync_client_given_for_an_openai_model_is_still_checked() -> None:
    with pytest.raises(InvalidInputError):
        TokenCounter.for_model("gpt-4o", anthropic_client=KEY)


def test_real_clients_are_accepted() -> None:
    counter = TokenCounter.for_model(CLAUDE, anthropic_client=SYNC, anthropic_async_client=ASYNC)
    assert isinstance(counter, AnthropicTokenCounter)
    assert AnthropicTokenCounter(get_model(CLAUDE), client=SYNC, async_client=ASYNC).strict is False
    assert isinstance(TokenCounter.for_model(CLAUDE, anthropic_client=None), AnthropicTokenCounter)
