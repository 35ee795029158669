"""LlamaIndex messages and responses go through the core unchanged in meaning."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, TextBlock
from llama_index.core.llms import MockLLM
from test_images import png_data_url

from llamaindex_tokenbudget import cost_of_response, to_core_messages, usage_of
from tokenbudget_core import InvalidInputError, InvalidMessageError, TokenCounter, Usage, cost_of


def test_llamaindex_history_counts_like_the_equivalent_dicts() -> None:
    history = [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Weather in Paris?"),
        ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ]
            },
        ),
        ChatMessage(role="tool", content="18C", additional_kwargs={"tool_call_id": "c1"}),
    ]
    as_dicts = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]
    counter = TokenCounter.for_model("gpt-4o")
    assert counter.count_messages(to_core_messages(history)) == counter.count_messages(as_dicts)


def test_image_blocks_are_translated() -> None:
    msg = ChatMessage(
        role="user",
        blocks=[TextBlock(text="What is this?"), ImageBlock(url="https://example.com/a.png", detail="low")],
    )
    [core] = to_core_messages([msg])
    assert isinstance(core.content, tuple)
    assert TokenCounter.for_model("gpt-4o").count_messages([core]).exact


def test_an_image_block_with_a_path_counts_as_that_image(tmp_path: Path) -> None:
    png = base64.b64decode(png_data_url(1024, 1024).split(",", 1)[1])
    (tmp_path / "chart.png").write_bytes(png)
    by_path = ChatMessage(
        role="user", blocks=[TextBlock(text="Explain."), ImageBlock(path=tmp_path / "chart.png")]
    )
    by_data = ChatMessage(role="user", blocks=[TextBlock(text="Explain."), ImageBlock(image=png)])
    counter = TokenCounter.for_model("gpt-4o")
    count = counter.count_messages(to_core_messages([by_path]))
    assert count.exact
    assert count == counter.count_messages(to_core_messages([by_data]))  # high detail: 765 + text
    missing = ChatMessage(role="user", blocks=[ImageBlock(path=tmp_path / "chart.png")])
    (tmp_path / "chart.png").unlink()  # deleted after the message was made
    with pytest.raises(InvalidMessageError, match="path"):
        to_core_messages([missing])


def test_usage_and_cost_from_response_raw() -> None:
    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {
            "prompt_tokens": 2000,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 500},
        },
    }
    response = ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=raw)
    usage = usage_of(response)
    assert usage == Usage(input_tokens=2000, output_tokens=100, cache_read_tokens=500)
    assert cost_of_response(response) == cost_of(usage, "gpt-4o-mini")


def test_mock_llm_response_without_raw_is_a_clear_error() -> None:
    response = MockLLM().chat([ChatMessage(role="user", content="hi")])
    with pytest.raises(InvalidInputError, match=r"response\.raw"):
        usage_of(response)


def test_a_tool_call_carried_as_a_block_and_in_additional_kwargs_is_one_call() -> None:
    from llama_index.core.base.llms.types import ToolCallBlock

    call = ToolCallBlock(tool_call_id="call_1", tool_name="get_weather", tool_kwargs={"city": "Paris"})
    raw = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    both = ChatMessage(role="assistant", blocks=[call], additional_kwargs={"tool_calls": [raw]})
    [core] = to_core_messages([both])
    assert [c.id for c in core.tool_calls] == ["call_1"]
