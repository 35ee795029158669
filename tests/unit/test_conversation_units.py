"""Conversation units in fitting: legacy function calling (an assistant ``function_call`` and the
``function`` message answering it) is cut around, never through, like a tool call and its results."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import ContextOverflowError
from tokenbudget_core.fitting import fit_messages
from tokenbudget_core.messages import to_message
from tokenbudget_core.window import ConversationWindow

COUNTER = TokenCounter.for_model("gpt-4o")
FILLER = "word " * 60


def legacy_history() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"c":"P"}'},
        },
        {"role": "function", "name": "get_weather", "content": "sunny " * 5},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": FILLER},
    ]


@pytest.mark.parametrize("as_messages", [False, True], ids=["dicts", "Message objects"])
def test_a_function_result_is_kept_or_dropped_with_its_function_call(as_messages: bool) -> None:
    history: list[Any] = legacy_history()
    if as_messages:
        history = [to_message(m) for m in history]
    seen = set()
    for budget in range(90, 200, 5):
        kept = fit_messages(history, budget, COUNTER).kept
        assert (2 in kept) == (3 in kept), (budget, kept)
        seen.add(3 in kept)
    assert seen == {True, False}


def test_a_function_message_without_a_call_before_it_is_still_a_message_of_its_own() -> None:
    """Legacy function results carry no call id: one that answers nothing stays as before."""
    history = [
        {"role": "user", "content": "2+2?"},
        {"role": "function", "name": "calc", "content": "4"},
        {"role": "user", "content": FILLER},
    ]
    assert fit_messages(history, 1_000, COUNTER).kept == (0, 1, 2)
    newest_only = int(COUNTER.count_messages(history[2:]))
    assert fit_messages(history, newest_only, COUNTER).kept == (2,)


def test_oldest_first_fitting_keeps_a_function_result_with_its_call() -> None:
    history = legacy_history()
    history.insert(2, {"role": "user", "content": FILLER})  # so that the budget cuts inside the old turns
    history[3:3] = [{"role": "assistant", "content": "Let me check."}]
    seen = set()
    for budget in range(60, 260, 5):
        try:
            kept = fit_messages(history, budget, COUNTER, keep="oldest").kept
        except ContextOverflowError:
            continue
        call = next(i for i, m in enumerate(history) if m.get("function_call"))
        assert (call in kept) == (call + 1 in kept), (budget, kept)
        seen.add(call + 1 in kept)
    assert seen == {True, False}


def test_a_window_slides_a_function_result_out_with_its_call() -> None:
    for budget in range(90, 260, 10):
        window = ConversationWindow(model="gpt-4o", max_tokens=budget)
        try:
            for message in legacy_history():
                window.append(message)
        except ContextOverflowError:
            continue
        kept = window.messages()
        has_call = any(m.get("function_call") for m in kept)
        has_result = any(m["role"] == "function" for m in kept)
        assert has_call == has_result, (budget, [m["role"] for m in kept])
