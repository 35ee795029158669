"""ConversationWindow: sliding, pinning, hysteresis, tool pairs, overflow, cached counts."""

from __future__ import annotations

from typing import Any, cast

import pytest
from conversations import assert_tool_pairs_intact, conversations
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError, InvalidMessageError
from tokenbudget_core.window import ConversationWindow

COUNTER = TokenCounter.for_model("gpt-4o")


def turn(i: int, words: int = 30) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "lorem ipsum " * words}


def test_window_slides_within_budget_and_keeps_the_whole_transcript() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=1_500)
    window.append({"role": "system", "content": "You are the ACME support bot."})
    for i in range(200):
        window.append(turn(i))
        current = window.messages()
        assert COUNTER.count_messages(current) == window.tokens <= 1_500
        assert current[-1] is window.transcript()[-1]
    assert len(window.transcript()) == 201
    current = window.messages()
    assert current[0]["role"] == "system"
    assert current[1]["content"].startswith("turn 0 ")  # the first user message is pinned
    assert current[2]["role"] == "user"  # the sliding part starts on a user turn
    assert window.tokens >= 0.95 * 1_500


def test_budget_from_the_model_window_minus_reserved_output() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o")
    assert window.budget == 128_000 - 16_384
    window = ConversationWindow("gpt-4o", reserve_output=1_000)
    assert window.budget == 127_000


def test_first_user_may_slide_but_it_is_reported() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=600, first_user="slide"
    )
    for i in range(30):
        window.append(turn(i))
    assert window.first_user_dropped
    assert window.transcript()[0] not in window.messages()


def test_hysteresis_changes_the_prefix_rarely_and_stays_between_the_marks() -> None:
    sliding: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=2_000)
    stable: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=2_000, low_water=0.6)
    biggest = 0
    for i in range(300):
        m = turn(i)
        biggest = max(biggest, int(COUNTER.count_message(m)))
        sliding.append(m)
        stable.append(m)
        if i > 40:
            assert 0.6 * 2_000 - 2 * biggest <= stable.tokens <= 2_000
    assert stable.prefix_changes * 5 < sliding.prefix_changes


def test_tool_results_stay_with_their_call_when_sliding() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=400)
    for i in range(20):
        window.append({"role": "user", "content": f"question {i} " * 10})
        window.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": f"{i}-a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": f"{i}-b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                ],
            }
        )
        window.append({"role": "tool", "tool_call_id": f"{i}-a", "content": "A " * 20})
        window.append({"role": "tool", "tool_call_id": f"{i}-b", "content": "B " * 20})
        assert_tool_pairs_intact(window.messages())
        assert window.tokens <= 400


def test_overflow_leaves_the_window_unchanged() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=200)
    window.append({"role": "user", "content": "hello"})
    before = (window.messages(), window.tokens)
    with pytest.raises(ContextOverflowError) as info:
        window.append({"role": "assistant", "content": "word " * 400})
    assert info.value.limit == 200
    assert "on_overflow" not in str(info.value)  # a window has no such option: the fix says what works
    assert "truncate_text" in str(info.value)
    assert (window.messages(), window.tokens) == before
    assert len(window.transcript()) == 1


def test_pin_brings_a_message_back() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=800)
    for i in range(40):
        window.append(turn(i))
    third = window.transcript()[3]
    assert third not in window.messages()
    window.pin(3)
    assert third in window.messages()
    assert window.tokens <= 800


def test_each_message_is_counted_once() -> None:
    calls: list[object] = []
    real = TokenCounter.for_model("gpt-4o")
    original = real.count_message

    def spy(message: Any) -> Any:
        calls.append(message)
        return original(message)

    real.count_message = spy  # type: ignore[method-assign]
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(real, max_tokens=1_000)
    for i in range(500):
        window.append(turn(i))
        window.messages()
    assert len(calls) == 500


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="low_water"):
        ConversationWindow("gpt-4o", max_tokens=100, low_water=1.5)
    with pytest.raises(InvalidInputError, match="min_messages"):
        ConversationWindow("gpt-4o", max_tokens=100, min_messages=0)
    with pytest.raises(InvalidInputError, match="reserve_output"):
        ConversationWindow("gpt-4o", max_tokens=100, reserve_output=100)
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=1_000)
    with pytest.raises(InvalidMessageError, match="tool result without its call"):
        window.append({"role": "tool", "tool_call_id": "x", "content": "r"})
    with pytest.raises(InvalidMessageError, match="role"):
        window.append({"role": "robot", "content": "r"})
    assert window.transcript() == []


@settings(max_examples=100, deadline=None)
@given(
    history=conversations(max_turns=40),
    budget=st.integers(150, 1_200),
    low=st.one_of(st.none(), st.floats(0.3, 1.0)),
)
def test_property_every_turn_fits_keeps_pins_and_newest(
    history: list[dict[str, Any]], budget: int, low: float | None
) -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=budget, low_water=low
    )
    pinned = [
        *[m for m in history if m["role"] == "system"][:1],
        next(m for m in history if m["role"] == "user"),
    ]
    for m in history:
        try:
            window.append(m)
        except ContextOverflowError:
            if m["role"] in ("assistant", "tool"):
                break  # a tool call or result the window refused: the conversation cannot go on
            continue
        current = window.messages()
        assert COUNTER.count_messages(current) == window.tokens <= budget
        assert_tool_pairs_intact(current)
        assert current[-1] is m
        for p in pinned:
            if p in window.transcript():
                assert p in current


def call(*ids: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": i,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
            for i in ids
        ],
    }


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "sunny " * 30}


def test_pin_that_cannot_fit_beside_the_newest_message_raises_and_changes_nothing() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=300, first_user="slide"
    )
    window.append({"role": "user", "content": "old fact " * 60})
    window.append({"role": "assistant", "content": "ok"})
    window.append({"role": "user", "content": "newest question " * 90})  # the old fact slides out
    before = (window.messages(), window.tokens, window.start, window.prefix_changes)
    with pytest.raises(ContextOverflowError) as info:
        window.pin(0)  # the newest message can never be trimmed: both do not fit
    assert info.value.limit == 300
    assert info.value.required == COUNTER.count_messages([window.transcript()[0], window.transcript()[2]])
    assert (window.messages(), window.tokens, window.start, window.prefix_changes) == before
    window.append({"role": "assistant", "content": "a short answer"})  # still a working window
    assert window.transcript()[0] not in window.messages()
    assert COUNTER.count_messages(window.messages()) == window.tokens <= 300


def test_clear_keeps_the_tools_and_the_options() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather. " * 50,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    window: ConversationWindow[dict[str, Any]] = ConversationWindow(
        "gpt-4o", max_tokens=1_500, tools=tools, low_water=0.7
    )
    empty = window.tokens
    assert empty == COUNTER.count_messages([], tools)
    for i in range(10):
        window.append(turn(i))
    window.clear()
    assert (window.tokens, window.transcript(), window.messages()) == (empty, [], [])
    assert (window.budget, window.low_water, window.prefix_changes) == (1_500, 0.7, 0)
    for i in range(40):
        window.append(turn(i))
        assert COUNTER.count_messages(window.messages(), tools) == window.tokens <= 1_500


def test_pinning_a_tool_call_pins_its_results_even_those_appended_later() -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=800)
    window.append({"role": "system", "content": "sys"})
    window.append({"role": "user", "content": "q"})
    window.append(call("a", "b"))
    window.pin(2)  # before its results arrive
    window.append(result("a"))
    window.append(result("b"))
    for i in range(20):
        window.append(turn(i, 20))
        current = window.messages()
        assert_tool_pairs_intact(current)
        assert COUNTER.count_messages(current) == window.tokens <= 800
    current = window.messages()
    assert window.transcript()[:5] == current[:5]  # system, first user, the call and both results
    assert window.start > 5  # the rest slides on


@pytest.mark.parametrize("index", [2, 3, 4, -18])
def test_pinning_any_message_of_a_tool_call_unit_pins_the_whole_unit(index: int) -> None:
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=800)
    window.append({"role": "system", "content": "sys"})
    window.append({"role": "user", "content": "q"})
    window.append(call("a", "b"))
    window.append(result("a"))
    window.append(result("b"))
    for i in range(16):
        window.append(turn(i, 20))
    assert window.start >= 5  # the unit slid out
    window.pin(index)
    current = window.messages()
    assert window.transcript()[:5] == current[:5]
    assert_tool_pairs_intact(current)
    assert COUNTER.count_messages(current) == window.tokens <= 800
    for i in range(16, 30):
        window.append(turn(i, 20))
        assert window.transcript()[:5] == window.messages()[:5]


def test_a_window_of_none_or_of_bad_types_is_a_named_error() -> None:
    assert ConversationWindow("gpt-4o", max_tokens=100, messages=None).transcript() == []
    for bad in (5, "hello", {"role": "user", "content": "hi"}):
        with pytest.raises(InvalidInputError) as info:
            ConversationWindow("gpt-4o", max_tokens=100, messages=cast(Any, bad))
        assert info.value.field == "messages"
    with pytest.raises(InvalidInputError, match="low_water"):
        ConversationWindow("gpt-4o", max_tokens=100, low_water=True)
    window: ConversationWindow[dict[str, Any]] = ConversationWindow("gpt-4o", max_tokens=100)
    window.append({"role": "user", "content": "hi"})
    for index in (1, -2, True, "0"):
        with pytest.raises(InvalidInputError) as info:
            window.pin(index)  # type: ignore[arg-type]
        assert info.value.field == "index"
