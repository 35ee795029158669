"""LangChain messages and replies go through the core unchanged in meaning."""

from __future__ import annotations

from decimal import Decimal

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_tokenbudget import cost_of_message, to_core_messages, usage_of
from tokenbudget_core import InvalidInputError, InvalidMessageError, TokenCounter, Usage, cost_of


def test_langchain_history_counts_like_the_equivalent_dicts() -> None:
    history = [
        SystemMessage("You are terse."),
        HumanMessage("Weather in Paris?", name="alice"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("18C", tool_call_id="call_1"),
    ]
    as_dicts = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?", "name": "alice"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    counter = TokenCounter.for_model("gpt-4o")
    assert counter.count_messages(to_core_messages(history)) == counter.count_messages(as_dicts)


def test_image_blocks_are_translated() -> None:
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        ]
    )
    [core] = to_core_messages([msg])
    assert isinstance(core.content, tuple)
    assert core.content[1].url == "https://example.com/a.png"  # type: ignore[union-attr]
    n = TokenCounter.for_model("gpt-4o").count_messages([core])
    assert n.exact  # low detail costs a flat fee, no size needed


def test_usage_and_cost_of_a_fake_model_reply() -> None:
    reply = AIMessage(
        "Sure.",
        usage_metadata={
            "input_tokens": 1500,
            "output_tokens": 40,
            "total_tokens": 1540,
            "input_token_details": {"cache_read": 1000},
        },
        response_metadata={"model_name": "gpt-4o"},
    )
    answer = GenericFakeChatModel(messages=iter([reply])).invoke([HumanMessage("hi")])
    usage = usage_of(answer)
    assert usage == Usage(input_tokens=1500, output_tokens=40, cache_read_tokens=1000)
    assert cost_of_message(answer) == cost_of(usage, "gpt-4o")
    assert isinstance(cost_of_message(answer), Decimal)


def test_missing_usage_and_unsupported_blocks_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="usage_metadata"):
        usage_of(AIMessage("no usage"))
    with pytest.raises(InvalidMessageError, match="unsupported content block"):
        to_core_messages([HumanMessage(content=[{"type": "video", "url": "x"}])])
    with pytest.raises(InvalidInputError, match="model"):
        cost_of_message(
            AIMessage("x", usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2})
        )
