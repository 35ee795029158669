"""OpenAI counting: figures the OpenAI API reported for the counting guide's examples."""

from __future__ import annotations

import pytest
import tiktoken

from tokenbudget_core.counting import TokenCount, TokenCounter
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.messages import Message, ToolCall

# The counting guide's example conversation; the API reported these prompt_tokens for it.
GUIDE_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-3.5-turbo-0301", 127),
    ],
)
def test_chat_overhead_matches_api_reported_prompt_tokens(model: str, api_prompt_tokens: int) -> None:
    assert TokenCounter.for_model(model).count_messages(GUIDE_MESSAGES) == api_prompt_tokens


@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_tool_definitions_match_api_reported_prompt_tokens(model: str, api_prompt_tokens: int) -> None:
    assert TokenCounter.for_model(model).count_messages(WEATHER_MESSAGES, WEATHER_TOOLS) == api_prompt_tokens


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
    ],
)
def test_encoding_per_model_family(model: str, encoding: str) -> None:
    count = TokenCounter.for_model(model).count("hello world")
    assert count.encoding == encoding
    assert count == len(tiktoken.get_encoding(encoding).encode("hello world"))


def test_count_is_an_int_that_says_how_it_was_made() -> None:
    n = TokenCounter.for_model("gpt-4o").count("The quick brown fox")
    assert isinstance(n, int)
    assert isinstance(n, TokenCount)
    assert n.exact
    assert n.method == "tiktoken"
    assert n + 1 == int(n) + 1
    assert n.as_dict()["tokens"] == int(n)


def test_special_token_text_is_counted_as_plain_text() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    enc = tiktoken.get_encoding("o200k_base")
    assert counter.count("<|endoftext|>") == len(enc.encode_ordinary("<|endoftext|>")) > 1


def test_core_messages_and_dicts_count_the_same() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    as_core = [Message(role=m["role"], content=m["content"], name=m.get("name")) for m in GUIDE_MESSAGES]
    assert counter.count_messages(as_core) == counter.count_messages(GUIDE_MESSAGES)


def test_tool_calls_and_results_are_counted() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    enc = tiktoken.get_encoding("o200k_base")
    args = '{"location": "Paris, France", "unit": "celsius"}'
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}
    base = counter.count_messages(WEATHER_MESSAGES)
    with_call = counter.count_messages([*WEATHER_MESSAGES, call])
    # message framing (3) + role + framing of the call (3) + name + arguments
    expected_call = (
        3 + len(enc.encode("assistant")) + 3 + len(enc.encode("get_weather")) + len(enc.encode(args))
    )
    assert with_call - base == expected_call
    with_result = counter.count_messages([*WEATHER_MESSAGES, call, result])
    assert with_result - with_call == 3 + len(enc.encode("tool")) + len(enc.encode("18C and sunny"))
    # A core Message with the same call counts the same.
    core_call = Message(
        role="assistant", tool_calls=(ToolCall(id="call_1", name="get_weather", arguments=args),)
    )
    assert counter.count_messages([*WEATHER_MESSAGES, core_call]) == with_call


def test_recount_uses_cache_but_changed_content_is_recounted() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    history = [{"role": "user", "content": f"message number {i}"} for i in range(50)]
    first = counter.count_messages(history)
    assert counter.count_messages(history) == first
    history[10] = {"role": "user", "content": "message number 10 now says something much longer than before"}
    assert counter.count_messages(history) > first


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"content": "no role"}], "messages[0].role"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "audio", "data": "..."}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": "ok"}, {"role": "tool", "content": "r"}], "messages[1].tool_call_id"),
        ([{"role": "user", "content": "ok"}, "just a string"], "messages[1]"),
    ],
)
def test_bad_messages_name_the_field(messages: list[object], field: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        TokenCounter.for_model("gpt-4o").count_messages(messages)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_bad_text_and_tools_are_rejected_clearly() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    with pytest.raises(InvalidInputError, match="text"):
        counter.count(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="messages"):
        counter.count_messages("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"tools\[0\]"):
        counter.count_messages(WEATHER_MESSAGES, [{"type": "function", "function": {}}])
    with pytest.raises(ValueError, match="timeout"):
        TokenCounter.for_model("gpt-4o", timeout=0)


async def test_async_twins_agree() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    assert await counter.acount_messages(GUIDE_MESSAGES) == counter.count_messages(GUIDE_MESSAGES)
    assert await counter.acount("hi there") == counter.count("hi there")
