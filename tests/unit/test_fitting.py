"""fit_messages: budget, system and pinned messages, tool pairs, orphans, overflow."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
from conversations import assert_tool_pairs_intact, conversations
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError, InvalidMessageError
from tokenbudget_core.fitting import Keep, fit_messages
from tokenbudget_core.messages import Message, to_message

COUNTER = TokenCounter.for_model("gpt-4o")


def chat(n: int, words: int = 20) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a support bot for ACME."}]
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        history.append({"role": role, "content": f"message {i}: " + "lorem ipsum " * words})
    return history


def test_window_fits_keeps_system_and_newest_and_is_contiguous() -> None:
    history = chat(60)
    window = fit_messages(history, 1_000, COUNTER)
    assert COUNTER.count_messages(window) == window.tokens <= 1_000
    assert window[0] is history[0]
    assert window[-1] is history[-1]
    kept = [i for i in window.kept if i > 0]
    assert kept == list(range(kept[0], len(history)))
    assert history[kept[0]]["role"] == "user"  # never starts on an orphan assistant turn
    assert set(window.dropped) == set(range(len(history))) - set(window.kept)


def test_fills_the_budget_closely() -> None:
    history = chat(400, words=60)  # ~130 tokens per message
    window = fit_messages(history, 8_000, COUNTER)
    assert 0.95 * 8_000 <= window.tokens <= 8_000


def test_reserve_output_and_tools_count_against_the_budget() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "search", "description": "Search the docs", "parameters": {}},
        }
    ]
    history = chat(60)
    plain = fit_messages(history, 1_000, COUNTER)
    reserved = fit_messages(history, 1_000, COUNTER, reserve_output=300, tools=tools)
    assert reserved.budget == 700
    assert COUNTER.count_messages(reserved, tools) == reserved.tokens <= 700
    assert len(reserved) < len(plain)


def test_keep_oldest() -> None:
    history = chat(60)
    window = fit_messages(history, 1_000, COUNTER, keep="oldest")
    assert window[:3] == history[:3]
    assert window.tokens <= 1_000
    assert history[-1] not in window


def test_pinned_and_first_user_survive() -> None:
    history = chat(60)
    window = fit_messages(history, 1_000, COUNTER, pinned=[5], pin_first_user=True)
    assert history[1] in window  # the first user message
    assert history[5] in window
    assert window.tokens <= 1_000


def test_parallel_tool_calls_stay_with_all_their_results() -> None:
    history = chat(10)
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": f"c{k}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            for k in range(3)
        ],
    }
    results = [{"role": "tool", "tool_call_id": f"c{k}", "content": "result " * 30} for k in range(3)]
    history += [
        {"role": "user", "content": "look it up"},
        call,
        *results,
        {"role": "assistant", "content": "done"},
    ]
    full = COUNTER.count_messages(history)
    for budget in range(60, full + 1, 7):
        try:
            window = fit_messages(history, budget, COUNTER)
        except ContextOverflowError:
            continue
        assert_tool_pairs_intact(window)
        assert window.tokens <= budget


def test_overflow_raises_with_numbers_or_truncates_newest() -> None:
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "please " * 500}]
    with pytest.raises(ContextOverflowError) as info:
        fit_messages(history, 100, COUNTER)
    assert info.value.limit == 100
    assert info.value.required > 100
    assert isinstance(info.value, ValueError)
    window = fit_messages(history, 100, COUNTER, on_overflow="truncate")
    assert window.truncated == 1
    assert window.tokens == COUNTER.count_messages(window) <= 100
    assert window[1]["content"].endswith("please ")
    assert history[1]["content"] == "please " * 500  # the caller's message is not modified


def test_truncate_cuts_the_text_of_a_message_made_of_parts_and_keeps_its_image() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    text = [{"type": "text", "text": "please " * 300}, {"type": "text", "text": "what is this?"}]
    for content in (text, [*text, image]):
        history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
        window = fit_messages(history, 150, COUNTER, on_overflow="truncate")
        assert window.truncated == 1
        assert window.tokens == COUNTER.count_messages(window) <= 150
        cut = window[1]["content"]
        if content is text:
            assert cut.endswith("what is this?")
        else:
            assert cut[0]["text"].endswith("what is this?")
            assert cut[1:] == [image]
    core = [Message(role="user", content=to_message({"role": "user", "content": [*text, image]}).content)]
    [kept] = fit_messages(core, 150, COUNTER, on_overflow="truncate")
    assert kept.text.endswith("what is this?")
    assert kept.content[-1] == core[0].content[-1]  # type: ignore[index]


def test_core_messages_are_returned_as_given() -> None:
    history = [Message(role="user", content=f"hello {i} " * 10) for i in range(30)]
    window = fit_messages(history, 200, "gpt-4o")
    assert all(isinstance(m, Message) for m in window)
    assert window[-1] is history[-1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100, "reserve_output": -1}, "reserve_output"),
        ({"max_tokens": 100, "keep": "middle"}, "keep"),
        ({"max_tokens": 100, "pinned": [99]}, "pinned"),
        ({"max_tokens": 100, "on_overflow": "ignore"}, "on_overflow"),
        ({"max_tokens": 100, "model": 42}, "model"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        fit_messages(chat(3), **kwargs)
    assert info.value.field == field


def test_tool_result_without_its_call_is_a_clear_error() -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}]
    with pytest.raises(InvalidMessageError, match="tool result without its call") as info:
        fit_messages(history, 1_000)
    assert info.value.field == "messages[1].tool_call_id"


@settings(max_examples=150, deadline=None)
@given(history=conversations(), budget=st.integers(30, 1_500), pin_first=st.booleans())
def test_property_never_over_budget_never_orphans_keeps_pinned_and_newest(
    history: list[dict[str, Any]], budget: int, pin_first: bool
) -> None:
    try:
        window = fit_messages(history, budget, COUNTER, pin_first_user=pin_first)
    except ContextOverflowError as e:
        overflow = e
        assert overflow.required > overflow.limit == budget
        return
    assert COUNTER.count_messages(window) == window.tokens <= budget
    assert_tool_pairs_intact(window)
    assert window[-1] is history[-1]
    for i, m in enumerate(history):
        if m["role"] == "system":
            assert m in window
    if pin_first:
        assert next(m for m in history if m["role"] == "user") in window


def test_a_stand_in_is_never_truncated_and_counts_its_files() -> None:
    # an adapter's stand-in for a PDF: estimate text in place of the file, the file's tokens aside
    pdf = Message(role="user", content="[a PDF: two pages]", file_tokens=3_000)
    history = [Message(role="user", content="hi " * 200), pdf]
    for overflow in ("raise", "truncate"):
        with pytest.raises(ContextOverflowError) as err:
            fit_messages(history, 1_000, "gpt-4o", on_overflow=overflow)  # type: ignore[arg-type]
        assert err.value.required > 3_000
        # the advice fits what was asked: never "pass on_overflow='truncate'" to a caller who did
        assert ("on_overflow='truncate'" in str(err.value)) == (overflow == "raise")
    fit = fit_messages(history, 3_100, "gpt-4o")
    assert list(fit) == [pdf]  # the older turn made room for the file
    assert fit.tokens > 3_000
    assert not fit.exact
    assert Message(role="user", content="x", file_tokens=np.int64(7)).file_tokens == 7
    with pytest.raises(InvalidMessageError, match="file_tokens"):
        Message(role="user", content="x", file_tokens=-1)


def tool_history() -> list[dict[str, Any]]:
    call: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            for i in ("a", "b")
        ],
    }
    results: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": i, "content": "sunny " * 30} for i in ("a", "b")
    ]
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}, call, *results] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 60} for i in range(20)
    ]


@pytest.mark.parametrize("pin", [2, 3, 4, -22])
def test_pinning_any_message_of_a_tool_call_unit_keeps_the_whole_unit(pin: int) -> None:
    history = tool_history()
    for keep in ("newest", "oldest"):
        window = fit_messages(history, 700, COUNTER, pinned=[pin], keep=keep)
        assert {2, 3, 4} <= set(window.kept)
        assert_tool_pairs_intact(window)
        assert COUNTER.count_messages(window) == window.tokens <= 700
    window = fit_messages(history, 700, COUNTER, pinned=[3])
    assert window[-1] is history[-1]
    assert len(window) > 5  # newer turns still fill the rest


def test_a_pinned_newest_message_does_not_force_an_older_one_in() -> None:
    history = [{"role": "user", "content": "old " * 400}, {"role": "user", "content": "new question"}]
    window = fit_messages(history, 100, COUNTER, pinned=[1])
    assert list(window) == [history[1]]
    window = fit_messages(history, 100, COUNTER, pinned=[1], on_overflow="truncate")
    assert list(window) == [history[1]]
    assert window.truncated is None


def test_pinned_none_is_no_pins_and_a_bad_pinned_is_named() -> None:
    assert fit_messages(chat(3), 1_000, COUNTER, pinned=None).kept == (0, 1, 2, 3)
    for bad in (3, "1", [1.0]):
        with pytest.raises(InvalidInputError) as info:
            fit_messages(chat(3), 1_000, COUNTER, pinned=bad)  # type: ignore[arg-type]
        assert info.value.field == "pinned"


@pytest.mark.parametrize("budget", [1, 5, 11])
def test_truncate_when_the_system_message_alone_is_over_budget_says_so(budget: int) -> None:
    system = {"role": "system", "content": "You are the ACME support bot."}
    history = [system, {"role": "user", "content": "please " * 500}]
    need = COUNTER.count_messages([system])
    assert need > budget
    with pytest.raises(ContextOverflowError) as info:
        fit_messages(history, budget, COUNTER, on_overflow="truncate")
    assert (info.value.limit, info.value.required) == (budget, need)
    assert "system and pinned messages" in str(info.value)
    assert "newest message" not in str(info.value).split(";")[0]


def test_truncate_when_the_newest_message_cannot_be_cut_small_enough_says_why() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    newest = {"role": "user", "content": [{"type": "text", "text": "please " * 500}, image]}
    history: list[dict[str, Any]] = [{"role": "system", "content": "sys"}, newest]
    floor = COUNTER.count_messages([history[0], {"role": "user", "content": [image]}])
    with pytest.raises(ContextOverflowError) as info:
        fit_messages(history, floor - 1, COUNTER, on_overflow="truncate")
    assert (info.value.limit, info.value.required) == (floor - 1, floor)
    assert "its text cut to nothing" in str(info.value)
    window = fit_messages(history, floor + 5, COUNTER, on_overflow="truncate")
    assert window.truncated == 1
    assert COUNTER.count_messages(window) == window.tokens <= floor + 5


@settings(max_examples=150, deadline=None)
@given(
    history=conversations(),
    budget=st.integers(30, 1_500),
    picks=st.lists(st.integers(0, 10_000), max_size=3),
    keep=st.sampled_from(["newest", "oldest"]),
)
def test_property_pinned_messages_keep_their_whole_unit(
    history: list[dict[str, Any]], budget: int, picks: list[int], keep: str
) -> None:
    pinned = [p % len(history) for p in picks]
    try:
        window = fit_messages(history, budget, COUNTER, pinned=pinned, keep=cast(Keep, keep))
    except ContextOverflowError as e:
        overflow = e
        assert overflow.required > overflow.limit == budget
        return
    assert COUNTER.count_messages(window) == window.tokens <= budget
    assert_tool_pairs_intact(window)
    assert all(history[p] in window for p in pinned)
