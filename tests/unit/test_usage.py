"""Usage: validation and arithmetic, the provider parsers, and the stream accumulators.

Expected figures are written as arithmetic on the provider's raw numbers, so each
test states the provider semantics it relies on.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message as AnthropicMessage
from langchain_core.messages import AIMessage
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from tokenbudget_core.errors import InvalidInputError, TokenBudgetError
from tokenbudget_core.streams import AnthropicStreamUsage, OpenAIStreamUsage, estimate_output_tokens
from tokenbudget_core.usage import Usage
from tokenbudget_core.usage_sources import (
    usage_from_anthropic,
    usage_from_langchain,
    usage_from_llamaindex,
    usage_from_openai_chat,
    usage_from_openai_responses,
)

# --- Usage -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_tokens": -1}, "usage.input_tokens"),
        ({"output_tokens": True}, "usage.output_tokens"),
        ({"input_tokens": 1.5}, "usage.input_tokens"),
        ({"input_tokens": "10"}, "usage.input_tokens"),
        ({"input_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 3}, "usage.cache_write_tokens"),
        ({"input_tokens": 10, "cache_read_tokens": 11}, "usage.cache_read_tokens"),
        (
            {"input_tokens": 10, "cache_write_tokens": 2, "cache_write_1h_tokens": 3},
            "usage.cache_write_1h_tokens",
        ),
        ({"output_tokens": 5, "reasoning_tokens": 6}, "usage.reasoning_tokens"),
        ({"requests": -1}, "usage.requests"),
    ],
)
def test_usage_rejects_bad_figures_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Usage(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_usage_arithmetic_and_derived_figures() -> None:
    a = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000, reasoning_tokens=100)
    b = Usage(
        input_tokens=50, output_tokens=5, cache_write_tokens=40, cache_write_1h_tokens=10, estimated=True
    )
    total = a + b
    assert (total.input_tokens, total.output_tokens, total.requests) == (1250, 305, 2)
    assert (total.cache_read_tokens, total.cache_write_tokens, total.cache_write_1h_tokens) == (1000, 40, 10)
    assert total.uncached_input_tokens == 1250 - 1000 - 40
    assert total.total_tokens == 1250 + 305
    assert total.estimated
    assert not a.estimated
    assert sum([a, b]) == total
    assert a.as_dict()["cache_read_tokens"] == 1000
    with pytest.raises(TypeError):
        _ = a + 5


# --- OpenAI Chat Completions ---------------------------------------------------------------


def _chat(usage: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "hi"}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
    }


CHAT_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 500,
    "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1536},
    "completion_tokens_details": {"reasoning_tokens": 320},
}


@pytest.mark.parametrize(
    "response",
    [_chat(CHAT_USAGE), ChatCompletion.model_validate(_chat(CHAT_USAGE)), CHAT_USAGE],
    ids=["dict", "sdk-object", "usage-only"],
)
def test_openai_chat_prompt_tokens_already_include_cached_tokens(response: Any) -> None:
    u = Usage.from_openai(response)
    assert (u.input_tokens, u.cache_read_tokens, u.uncached_input_tokens) == (2000, 1536, 2000 - 1536)
    assert (u.output_tokens, u.reasoning_tokens) == (500, 320)
    assert (u.requests, u.estimated) == (1, False)


def test_openai_chat_null_details_and_cache_writes() -> None:
    u = usage_from_openai_chat(
        _chat({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None})
    )
    assert (u.input_tokens, u.cache_read_tokens, u.reasoning_tokens) == (10, 0, 0)
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cache_write_tokens": 60},
    }
    assert usage_from_openai_chat(usage).cache_write_tokens == 60


@pytest.mark.parametrize("response", [_chat(None), {k: v for k, v in _chat(None).items() if k != "usage"}])
def test_openai_chat_without_usage_says_how_to_get_it(response: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_openai_chat(response)
    assert info.value.field == "response.usage"
    assert "include_usage" in str(info.value)


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"completion_tokens": 1}, "response.usage.prompt_tokens"),
        ({"prompt_tokens": -3, "completion_tokens": 1}, "response.usage.prompt_tokens"),
        ({"prompt_tokens": 3, "completion_tokens": True}, "response.usage.completion_tokens"),
        ({"prompt_tokens": "3", "completion_tokens": 1}, "response.usage.prompt_tokens"),
        (
            {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2.0}},
            "response.usage.prompt_tokens_details.cached_tokens",
        ),
        (
            {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": 7},
            "response.usage.prompt_tokens_details",
        ),
        (
            {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}},
            "response.usage",
        ),
    ],
)
def test_openai_chat_bad_figures_name_the_field(usage: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_openai_chat(_chat(usage))
    assert info.value.field == field


def test_not_a_response_is_an_invalid_input_not_a_type_error() -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_openai_chat(42)
    assert info.value.field == "response"
    assert isinstance(info.value, TokenBudgetError)


# --- OpenAI Responses --------------------------------------------------------------------


def _response(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-4.1",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "status": "completed",
        "usage": usage,
    }


RESP_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 0},
    "output_tokens": 210,
    "output_tokens_details": {"reasoning_tokens": 150},
    "total_tokens": 1110,
}


@pytest.mark.parametrize(
    "response",
    [
        _response(RESP_USAGE),
        Response.model_validate(_response(RESP_USAGE)),
        {"type": "response.completed", "sequence_number": 9, "response": _response(RESP_USAGE)},
    ],
    ids=["dict", "sdk-object", "completed-event"],
)
def test_openai_responses_input_includes_cached_and_output_includes_reasoning(response: Any) -> None:
    u = Usage.from_openai_responses(response)
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (900, 512, 210, 150)


def test_openai_responses_missing_output_tokens() -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_openai_responses(_response({"input_tokens": 3}))
    assert info.value.field == "response.usage.output_tokens"


# --- Anthropic -----------------------------------------------------------------------------


def _message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "hi"}],
        "model": "claude-haiku-4-5",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "output_tokens": 410,
    "cache_read_input_tokens": 3000,
    "cache_creation_input_tokens": 1200,
    "cache_creation": {"ephemeral_5m_input_tokens": 800, "ephemeral_1h_input_tokens": 400},
    "service_tier": "standard",
}


@pytest.mark.parametrize(
    "response",
    [_message(ANTHROPIC_USAGE), AnthropicMessage.model_validate(_message(ANTHROPIC_USAGE)), ANTHROPIC_USAGE],
    ids=["dict", "sdk-object", "usage-only"],
)
def test_anthropic_input_tokens_exclude_cache_so_they_are_added(response: Any) -> None:
    u = Usage.from_anthropic(response)
    assert u.input_tokens == 25 + 3000 + 1200
    assert (u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (3000, 1200, 400)
    assert u.uncached_input_tokens == 25
    assert (u.output_tokens, u.reasoning_tokens) == (410, 0)


def test_anthropic_split_only_null_cache_fields_and_thinking() -> None:
    split_only = {"input_tokens": 5, "output_tokens": 9, "cache_creation": {"ephemeral_1h_input_tokens": 70}}
    u = usage_from_anthropic(split_only)
    assert (u.input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (5 + 70, 70, 70)
    nulls = {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": None, "cache_creation": None}
    assert usage_from_anthropic(nulls).input_tokens == 5
    thinking = {"input_tokens": 5, "output_tokens": 90, "output_tokens_details": {"thinking_tokens": 60}}
    assert usage_from_anthropic(thinking).reasoning_tokens == 60


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"output_tokens": 1}, "response.usage.input_tokens"),
        (
            {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": -5},
            "response.usage.cache_read_input_tokens",
        ),
        (
            {"input_tokens": 1, "output_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": "x"}},
            "response.usage.cache_creation.ephemeral_1h_input_tokens",
        ),
    ],
)
def test_anthropic_bad_figures_name_the_field(usage: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_anthropic(_message(usage))
    assert info.value.field == field


# --- LangChain ---------------------------------------------------------------------------


def test_langchain_usage_metadata_from_a_real_ai_message() -> None:
    metadata = {
        "input_tokens": 4225,
        "output_tokens": 410,
        "total_tokens": 4635,
        "input_token_details": {"cache_read": 3000, "cache_creation": 1200, "audio": 0},
        "output_token_details": {"reasoning": 100},
    }
    message = AIMessage(content="hi", usage_metadata=metadata)
    for source in (message.usage_metadata, message):
        u = Usage.from_langchain(source)
        assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (4225, 3000, 1200)
        assert (u.output_tokens, u.reasoning_tokens) == (410, 100)


def test_langchain_service_tier_prefixed_keys() -> None:
    metadata = {
        "input_tokens": 1000,
        "output_tokens": 200,
        "total_tokens": 1200,
        "input_token_details": {"priority_cache_read": 600, "priority": 400},
        "output_token_details": {"priority_reasoning": 50, "priority": 150},
    }
    u = usage_from_langchain(AIMessage(content="", usage_metadata=metadata).usage_metadata)
    assert (u.cache_read_tokens, u.reasoning_tokens, u.cache_write_tokens) == (600, 50, 0)


@pytest.mark.parametrize("generic", [900, 0], ids=["cache_creation-is-total", "cache_creation-zeroed"])
def test_langchain_anthropic_ttl_split_is_not_double_counted(generic: int) -> None:
    details = {
        "cache_read": 100,
        "cache_creation": generic,
        "ephemeral_5m_input_tokens": 600,
        "ephemeral_1h_input_tokens": 300,
    }
    metadata = {
        "input_tokens": 1020,
        "output_tokens": 5,
        "total_tokens": 1025,
        "input_token_details": details,
    }
    u = usage_from_langchain(metadata)
    assert (u.cache_write_tokens, u.cache_write_1h_tokens, u.uncached_input_tokens) == (
        900,
        300,
        1020 - 100 - 900,
    )


def test_langchain_without_usage_and_with_bad_figures() -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_langchain(AIMessage(content="hi"))
    assert info.value.field == "message.usage_metadata"
    with pytest.raises(InvalidInputError) as info:
        usage_from_langchain(
            {"input_tokens": 5, "output_tokens": 1, "input_token_details": {"cache_read": -1}}
        )
    assert info.value.field == "usage_metadata.input_token_details.cache_read"


# --- LlamaIndex --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected_input"),
    [
        (ChatCompletion.model_validate(_chat(CHAT_USAGE)), 2000),
        (_chat(CHAT_USAGE), 2000),
        (AnthropicMessage.model_validate(_message(ANTHROPIC_USAGE)), 25 + 3000 + 1200),
        # llama-index-llms-anthropic keeps dict(message): top level a dict, usage still an SDK object
        (dict(AnthropicMessage.model_validate(_message(ANTHROPIC_USAGE))), 25 + 3000 + 1200),
        ({"usage": ANTHROPIC_USAGE}, 25 + 3000 + 1200),
        ({"usage": CHAT_USAGE}, 2000),
        (_response(RESP_USAGE), 900),
        ({"usage": RESP_USAGE}, 900),
    ],
    ids=[
        "openai-obj",
        "openai-dict",
        "anthropic-obj",
        "anthropic-dict-of-obj",
        "anthropic-usage",
        "chat-usage",
        "responses",
        "responses-usage",
    ],
)
def test_llamaindex_raw_is_dispatched_by_shape(raw: Any, expected_input: int) -> None:
    assert Usage.from_llamaindex(raw).input_tokens == expected_input
    response = ChatResponse(message=ChatMessage(role="assistant", content="hi"), raw=raw)
    assert usage_from_llamaindex(response).input_tokens == expected_input


@pytest.mark.parametrize(
    ("raw", "field"),
    [(None, "raw"), ({"id": "x"}, "raw.usage"), ({"usage": {"tokens": 3}}, "raw.usage"), ("text", "raw")],
)
def test_llamaindex_unusable_raw(raw: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        usage_from_llamaindex(raw)
    assert info.value.field == field


# --- Streams -----------------------------------------------------------------------------


def _chunk(
    content: str | None = None, *, usage: dict[str, Any] | None = None, **delta: Any
) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": {"content": content, **delta}, "finish_reason": None}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": choices,
        "usage": usage,
    }


class WordCounter:
    def count(self, text: str) -> int:
        return len(text.split())


def test_openai_stream_uses_the_usage_chunk_exactly() -> None:
    acc = OpenAIStreamUsage()
    chunks = [_chunk("Hello "), _chunk("world"), _chunk(usage=CHAT_USAGE)]
    passed = list(acc.wrap(ChatCompletionChunk.model_validate(c) for c in chunks))
    assert [p.choices[0].delta.content if p.choices else None for p in passed] == ["Hello ", "world", None]
    assert acc.exact
    assert acc.text == "Hello world"
    u = acc.result(prompt_tokens_estimate=1)  # the estimate is ignored: usage arrived
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.estimated) == (2000, 1536, 500, False)


def test_openai_stream_without_usage_is_an_estimate() -> None:
    acc = OpenAIStreamUsage()
    call = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q"'}}
    ]
    for chunk in (_chunk("one two three"), _chunk(None, tool_calls=call)):
        acc.add(chunk)
    assert not acc.exact
    with pytest.raises(InvalidInputError) as info:
        acc.result()
    assert info.value.field == "prompt_tokens_estimate"
    rough = acc.result(prompt_tokens_estimate=40)
    text = "one two three" + "lookup" + '{"q"'
    assert (rough.input_tokens, rough.output_tokens, rough.estimated) == (40, -(-len(text) // 4), True)
    assert acc.result(prompt_tokens_estimate=40, counter=WordCounter()).output_tokens == len(text.split())


def test_estimate_output_tokens_rejects_a_bad_counter() -> None:
    class Bad:
        def count(self, text: str) -> int:
            return -1

    assert estimate_output_tokens("") == 0
    with pytest.raises(InvalidInputError):
        estimate_output_tokens("abc", counter=Bad())


async def test_awrap_passes_chunks_through() -> None:
    async def source() -> Any:
        for c in (_chunk("a"), _chunk(usage={"prompt_tokens": 3, "completion_tokens": 1})):
            yield c

    acc = OpenAIStreamUsage()
    seen = [c async for c in acc.awrap(source())]
    assert len(seen) == 2
    assert acc.items == 2
    assert acc.result().total_tokens == 3 + 1


def _start(**usage: Any) -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": "m", "type": "message", "usage": usage}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def test_anthropic_stream_takes_the_latest_running_total() -> None:
    acc = AnthropicStreamUsage()
    events = [
        _start(input_tokens=30, cache_read_input_tokens=500, cache_creation_input_tokens=0, output_tokens=1),
        _text("Hi"),
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 40}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 95}},
        {"type": "message_stop"},
    ]
    for e in events:
        acc.add(e)
    u = acc.result()
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.estimated) == (30 + 500, 500, 95, False)


def test_anthropic_stream_delta_may_update_input_figures() -> None:
    acc = AnthropicStreamUsage()
    acc.add(_start(input_tokens=30, output_tokens=1))
    acc.add(
        {
            "type": "message_delta",
            "usage": {"input_tokens": 35, "cache_read_input_tokens": 10, "output_tokens": 7},
        }
    )
    u = acc.result()
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (35 + 10, 10, 7)


def test_anthropic_stream_cut_short_or_headless() -> None:
    acc = AnthropicStreamUsage()
    acc.add(_start(input_tokens=30, output_tokens=1))
    acc.add(_text("several words of text"))
    u = acc.result(counter=WordCounter())
    assert (u.input_tokens, u.output_tokens, u.estimated) == (30, 4, True)

    headless = AnthropicStreamUsage()
    headless.add(_text("abcdefgh"))
    with pytest.raises(InvalidInputError) as info:
        headless.result()
    assert info.value.field == "prompt_tokens_estimate"
    u = headless.result(prompt_tokens_estimate=12)
    assert (u.input_tokens, u.output_tokens, u.estimated) == (12, 8 // 4, True)


def test_anthropic_stream_bad_usage_names_the_event() -> None:
    acc = AnthropicStreamUsage()
    with pytest.raises(InvalidInputError) as info:
        acc.add(_start(output_tokens=1))
    assert info.value.field == "message_start.message.usage.input_tokens"
    with pytest.raises(InvalidInputError) as info:
        acc.add({"type": "message_delta", "usage": {"output_tokens": -2}})
    assert info.value.field == "message_delta.usage.output_tokens"
