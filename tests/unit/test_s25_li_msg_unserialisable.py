"""Messages the counting cannot take as they are give a named error or are counted, never a bare
TypeError: tool-call arguments holding values JSON cannot hold (a date, a Decimal) are counted as
their text, and a name that is not a string is an InvalidMessageError naming it."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ToolCallBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import (
    BudgetCallbackHandler,
    TokenBudgetChatMemory,
    to_core_message,
    to_countable_message,
)
from tokenbudget_core import Ledger
from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import ToolCall

KWARGS: dict[str, Any] = {"when": datetime.date(2026, 1, 1), "amount": Decimal("12.50")}
AS_TEXT = '{"when": "2026-01-01", "amount": "12.50"}'


def booking_call_block() -> ChatMessage:
    block = ToolCallBlock(tool_call_id="a", tool_name="book", tool_kwargs=KWARGS)
    return ChatMessage(role="assistant", blocks=[block])


def booking_call_kwargs() -> ChatMessage:
    """An Anthropic-shaped call whose input was replayed from Python objects."""
    call = {"id": "a", "input": KWARGS, "name": "book", "type": "tool_use"}
    return ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})


NAMED = ChatMessage(role="user", content="hi", additional_kwargs={"name": 123})


@pytest.mark.parametrize("message", [booking_call_block(), booking_call_kwargs()], ids=["block", "kwargs"])
def test_tool_arguments_json_cannot_hold_are_counted_as_their_text(message: ChatMessage) -> None:
    expected = (ToolCall(id="a", name="book", arguments=AS_TEXT),)
    assert to_core_message(message).tool_calls == expected
    assert to_countable_message(message).tool_calls == expected
    json.loads(AS_TEXT)  # still JSON text


def test_a_memory_takes_a_tool_call_with_a_date_argument() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=500)
    memory.put(ChatMessage(role="user", content="book it"))
    memory.put(booking_call_block())
    memory.put(ChatMessage(role="tool", content="booked", additional_kwargs={"tool_call_id": "a"}))
    assert [m.role.value for m in memory.get()] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("convert", [to_core_message, to_countable_message])
def test_a_name_that_is_not_a_string_is_named(convert: Any) -> None:
    with pytest.raises(
        InvalidMessageError, match=r"messages\[1\]\.additional_kwargs\.name: must be a string"
    ) as e:
        convert(NAMED, where="messages[1]")
    assert "str(" in (e.value.fix or "")


def test_a_memory_refuses_a_name_that_is_not_a_string_by_name() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=500)
    with pytest.raises(InvalidMessageError, match=r"additional_kwargs\.name"):
        memory.put(NAMED)
    assert memory.get_all() == []


class AnsweringLLM(MockLLM):
    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
        return ChatResponse(
            message=ChatMessage(role="assistant", content="done"),
            raw={"object": "chat.completion", "model": "gpt-4o-mini", "usage": usage},
        )


def budgeted_llm() -> AnsweringLLM:
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    return AnsweringLLM(callback_manager=CallbackManager([handler]))


def test_a_budgeted_call_with_a_date_argument_in_its_history_is_made() -> None:
    history = [
        ChatMessage(role="user", content="book it"),
        booking_call_block(),
        ChatMessage(role="tool", content="booked", additional_kwargs={"tool_call_id": "a"}),
    ]
    assert budgeted_llm().chat(history).message.content == "done"


def test_a_budgeted_call_with_a_name_that_is_not_a_string_is_refused_by_name() -> None:
    with pytest.raises(InvalidMessageError, match=r"messages\[1\]\.additional_kwargs\.name"):
        budgeted_llm().chat([ChatMessage(role="system", content="be brief"), NAMED])
