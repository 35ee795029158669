"""LangChain messages and replies go through the core unchanged in meaning."""

from __future__ import annotations

import base64
import struct
import zlib
from decimal import Decimal

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_tokenbudget import cost_of_message, to_core_messages, to_core_request, usage_of
from tokenbudget_core import InvalidInputError, InvalidMessageError, TokenCounter, Usage, cost_of
from tokenbudget_core.counting import add_file_tokens


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


def _png(width: int, height: int) -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return base64.b64encode(png + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")).decode()


def test_every_image_block_format_is_counted_from_the_images_size() -> None:
    """OpenAI's image_url, LangChain's v1 and v0 standard blocks and Anthropic's own image block
    all count the same, exactly (not as an unknown file's estimate)."""
    data = _png(1024, 1024)
    blocks = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image", "base64": data, "mime_type": "image/png"},
        {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/png"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
    ]
    counter = TokenCounter.for_model("gpt-4o")
    counts = []
    for block in blocks:
        core = to_core_request([HumanMessage(content=[{"type": "text", "text": "What is this?"}, block])])
        n = add_file_tokens(counter.count_messages(core), core)
        assert n.exact
        counts.append(int(n))
    assert len(set(counts)) == 1
    assert counts[0] < 1_000  # 765 image tokens at high detail, not a 4,600-token file guess
    for url_block in (
        {"type": "image", "source_type": "url", "url": "https://example.com/a.png"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    ):
        [core] = to_core_messages([HumanMessage(content=[url_block])])
        assert core.content[0].url == "https://example.com/a.png"  # type: ignore[union-attr,index]


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


def test_a_list_is_required() -> None:
    for convert in (to_core_messages, to_core_request):
        for bad in (None, "hello", HumanMessage("hi")):
            with pytest.raises(InvalidMessageError) as info:
                convert(bad)  # type: ignore[arg-type]
            assert info.value.field == "messages"
