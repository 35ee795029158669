"""``to_core_request`` (what the budget handler, both agent middlewares and the router read an
agent's whole transcript with, on every model call) remembers the conversion of each message
object and reuses it only while every field the conversion reads is unchanged: a message edited
in place, even deep inside a content block or a tool call's arguments, is converted again.
Before, every tool call and tool result of the transcript was converted afresh on each call."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from langchain_tokenbudget import messages as lc_messages
from langchain_tokenbudget import to_core_request, to_countable_message
from tokenbudget_core.counting import TokenCounter


def _transcript() -> list[BaseMessage]:
    return [
        HumanMessage("What's the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("sunny, 21 degrees", tool_call_id="c1"),
        HumanMessage([{"type": "text", "text": "and this picture?"}]),
        AIMessage("It is sunny.", name="bot"),
    ]


def _fresh(messages: list[BaseMessage]) -> list[object]:
    return [to_countable_message(m, where=f"messages[{i}]") for i, m in enumerate(messages)]


def test_a_transcript_read_again_converts_as_a_fresh_conversion_would() -> None:
    messages = _transcript()
    first = to_core_request(messages)
    again = to_core_request(messages)
    assert again == first == _fresh(messages)
    assert again[1] is first[1]  # the tool call's conversion is reused, not made again


def _edit_args(m: list[BaseMessage]) -> None:
    m[1].tool_calls[0]["args"]["city"] = "Lyon, France, a much longer city name"  # type: ignore[attr-defined]


def _edit_block(m: list[BaseMessage]) -> None:
    m[3].content[0]["text"] = "and this much longer question about a picture?"  # type: ignore[index]


def _append_block(m: list[BaseMessage]) -> None:
    m[3].content.append({"type": "text", "text": "one more block"})  # type: ignore[union-attr]


def _reassign(m: list[BaseMessage]) -> None:
    m[2].content = "rain, 12 degrees, wind from the west at 40 km/h"


def _rename(m: list[BaseMessage]) -> None:
    m[4].name = "assistant_with_a_long_name"


def _new_call(m: list[BaseMessage]) -> None:
    m[1].tool_calls.append({"name": "time", "args": {}, "id": "c2", "type": "tool_call"})  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "edit",
    [_edit_args, _edit_block, _append_block, _reassign, _rename, _new_call],
    ids=["tool-args", "block-text", "block-appended", "content-reassigned", "name", "call-appended"],
)
def test_a_message_edited_in_place_is_converted_and_counted_again(
    edit: Callable[[list[BaseMessage]], None],
) -> None:
    counter = TokenCounter.for_model("gpt-4o")
    messages = _transcript()
    before = int(counter.count_messages(to_core_request(messages)))
    edit(messages)
    now = to_core_request(messages)
    assert now == _fresh(messages)
    assert int(counter.count_messages(now)) != before


def test_remembered_messages_are_not_kept_alive() -> None:
    messages = _transcript()
    to_core_request(messages)
    key = id(messages[2])
    assert key in lc_messages._memo
    del messages
    gc.collect()
    assert key not in lc_messages._memo
