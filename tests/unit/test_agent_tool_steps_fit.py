"""An agent's run (one request, then many tool-call steps) fitted to a budget keeps the newest
tool steps that fit. The "never start on an orphaned assistant turn" rule used to drop every
leading tool step one after another, looking for a user message that never came: the window
kept the request and the newest step only (or the newest step alone), about 90 of ~950 tokens
a budget of 986 could hold, throwing the agent's work away."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_tokenbudget import TrimMessagesRunnable
from tokenbudget_core import ConversationWindow, TokenCounter, fit_messages

COUNTER = TokenCounter.for_model("gpt-4o")
STEPS = 30


def agent_run() -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Investigate the outage and report."},
    ]
    for i in range(STEPS):
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "search", "arguments": f'{{"q": "{i}"}}'},
        }
        msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}: " + "log line " * 20})
    return msgs


MSGS = agent_run()
BUDGET = int(COUNTER.count_messages(MSGS)) // 2


def newest_steps_that_fit(head: list[dict[str, Any]]) -> int:
    """How many of the newest tool steps fit beside ``head`` (counted independently)."""
    return max(
        k for k in range(STEPS + 1) if int(COUNTER.count_messages(head + MSGS[len(MSGS) - 2 * k :])) <= BUDGET
    )


@pytest.mark.parametrize("pin", [True, False], ids=["request pinned", "request slid out"])
def test_fit_messages_keeps_the_newest_tool_steps_that_fit(pin: bool) -> None:
    fit = fit_messages(MSGS, BUDGET, "gpt-4o", pin_first_user=pin)
    head = MSGS[:2] if pin else MSGS[:1]
    steps = newest_steps_that_fit(head)
    assert steps > 10
    assert list(fit) == head + MSGS[len(MSGS) - 2 * steps :]
    assert fit.tokens <= BUDGET


@pytest.mark.parametrize("first_user", ["pin", "slide"])
def test_conversation_window_keeps_the_newest_tool_steps_that_fit(first_user: Any) -> None:
    window = ConversationWindow("gpt-4o", max_tokens=BUDGET, first_user=first_user)
    window.extend(MSGS)
    head = MSGS[:2] if first_user == "pin" else MSGS[:1]
    kept = window.messages()
    assert kept[: len(head)] == head
    assert len(kept) - len(head) >= 2 * newest_steps_that_fit(head) - 2  # at most one step of slack
    assert len(kept) - len(head) > 20
    assert window.tokens <= window.budget


def test_a_langchain_trim_before_an_agents_model_keeps_its_tool_steps() -> None:
    msgs: list[Any] = [SystemMessage("You are an agent."), HumanMessage("Investigate the outage and report.")]
    for i in range(STEPS):
        msgs.append(AIMessage("", tool_calls=[{"id": f"c{i}", "name": "search", "args": {"q": str(i)}}]))
        msgs.append(ToolMessage(f"result {i}: " + "log line " * 20, tool_call_id=f"c{i}"))
    kept = TrimMessagesRunnable("gpt-4o", max_tokens=1000, pin_first_user=True).invoke(msgs)
    assert kept[:2] == msgs[:2]
    assert len(kept) > 20  # the newest steps, not the newest one alone
    assert kept[-1] is msgs[-1]


def test_a_chat_still_starts_on_a_user_turn() -> None:
    # The rule still holds where it can: a cut-off exchange's reply does not lead the window.
    chat = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 30}
        for i in range(20)
    ]
    fit = fit_messages(chat, 200, "gpt-4o")
    assert fit[0]["role"] == "user"
