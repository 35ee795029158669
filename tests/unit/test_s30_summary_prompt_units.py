"""What a fold shows the summariser: ``summary_prompt`` writes each message's tool calls in place,
right after its text, and labels every tool result with the call it answers (before: every call was
listed after all the chunk's messages, results were bare ``tool:`` lines and a tool-calling turn an
empty ``assistant:`` line); ``SummaryBuffer`` closes a chunk only between units, so a call and its
results reach the same summariser call (before: cut at ``chunk_tokens`` by message)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from langchain_tokenbudget import SummaryChatMessageHistory
from tokenbudget_core.messages import Message, to_messages
from tokenbudget_core.summary import SummaryBuffer, summary_prompt


def call(call_id: str, city: str) -> dict[str, Any]:
    arguments = json.dumps({"city": city})
    return {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": arguments}}


WEATHER: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [call("c1", "Paris")]},
    {"role": "tool", "tool_call_id": "c1", "content": "22C sunny"},
    {"role": "assistant", "content": "Paris: 22C and sunny."},
    {"role": "user", "content": "And Oslo and Rome?"},
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [call("c2", "Oslo"), call("c3", "Rome")],
    },
    {"role": "tool", "tool_call_id": "c2", "content": "-3C snow"},
    {"role": "tool", "tool_call_id": "c3", "content": "19C clear"},
    {"role": "assistant", "content": "Oslo: -3C with snow; Rome: 19C."},
]


def body(messages: list[dict[str, Any]]) -> list[str]:
    prompt = summary_prompt(None, to_messages(messages), max_tokens=100)
    return prompt[1]["content"].split("New messages:\n", 1)[1].split("\n")


def test_summary_prompt_writes_calls_in_place_and_labels_results_with_their_call() -> None:
    assert body(WEATHER) == [
        "user: Weather in Paris?",
        'assistant called weather({"city": "Paris"})',
        'tool result of weather({"city": "Paris"}): 22C sunny',
        "assistant: Paris: 22C and sunny.",
        "user: And Oslo and Rome?",
        "assistant: Checking both.",
        'assistant called weather({"city": "Oslo"})',
        'assistant called weather({"city": "Rome"})',
        'tool result of weather({"city": "Oslo"}): -3C snow',
        'tool result of weather({"city": "Rome"}): 19C clear',
        "assistant: Oslo: -3C with snow; Rome: 19C.",
    ]


def test_summary_prompt_labels_legacy_function_results_and_results_whose_call_was_folded() -> None:
    legacy: list[dict[str, Any]] = [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "function_call": {"name": "clock", "arguments": "{}"}},
        {"role": "function", "name": "clock", "content": "10:00"},
    ]
    assert body(legacy) == [
        "user: Time?",
        "assistant called clock({})",
        "function result of clock({}): 10:00",
    ]
    # a result whose call is not in these messages: named by the message's own name, else plainly
    alone = [Message(role="tool", content="42", tool_call_id="gone", name="answer")]
    assert summary_prompt(None, alone, max_tokens=10)[1]["content"].endswith("tool result of answer: 42")
    bare = [Message(role="tool", content="42", tool_call_id="gone")]
    assert summary_prompt(None, bare, max_tokens=10)[1]["content"].endswith("tool result: 42")


class Recorder:
    """A summariser that records the messages of each call."""

    def __init__(self) -> None:
        self.calls: list[list[Message]] = []

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        self.calls.append(list(messages))
        return "summary so far"


def cuts_a_unit(chunk: list[Message]) -> bool:
    """A chunk that opens on a result, or ends on a call whose results are not all in it."""
    answered = {m.tool_call_id for m in chunk if m.role == "tool"}
    made = {c.id for m in chunk for c in m.tool_calls}
    return chunk[0].role == "tool" or not made <= answered or not answered <= made


@pytest.mark.parametrize("chunk_tokens", [120, 200])
def test_chunks_close_only_between_units(chunk_tokens: int) -> None:
    filler = [{"role": "user", "content": "fact " * 40}, {"role": "assistant", "content": "noted " * 40}]
    for shift in range(12):  # padding moves the chunk_tokens cut around the calls
        summariser = Recorder()
        conversation: list[dict[str, Any]] = [
            {"role": "system", "content": "sys"},
            *filler * 2,
            *([{"role": "user", "content": "pad " * (10 * shift)}] if shift else []),
            *WEATHER,
            *filler * 6,
        ]
        buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
            summariser, "gpt-4o", max_tokens=500, chunk_tokens=chunk_tokens, low_water=None
        )
        buffer.extend(conversation)
        assert len(summariser.calls) > 2
        assert not [i for i, chunk in enumerate(summariser.calls) if cuts_a_unit(chunk)]
        folded = [m.text for chunk in summariser.calls for m in chunk]
        for text in ("22C sunny", "-3C snow", "19C clear", "Oslo: -3C with snow; Rome: 19C."):
            assert folded.count(text) == 1  # folded, once


def test_a_unit_larger_than_chunk_tokens_is_a_chunk_of_its_own() -> None:
    summariser = Recorder()
    big_result = {"role": "tool", "tool_call_id": "c1", "content": "row " * 300}
    conversation: list[dict[str, Any]] = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "Export the table."},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "Paris")]},
        big_result,
        {"role": "assistant", "content": "Done."},
        *[{"role": "user", "content": "more " * 60}, {"role": "assistant", "content": "ok " * 60}] * 4,
    ]
    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
        summariser, "gpt-4o", max_tokens=600, chunk_tokens=100, first_user="summarise", low_water=None
    )
    buffer.extend(conversation)
    units = [[(m.role, bool(m.tool_calls)) for m in chunk] for chunk in summariser.calls]
    assert [("assistant", True), ("tool", False)] in units  # the call and its large result, alone
    assert not [i for i, chunk in enumerate(summariser.calls) if cuts_a_unit(chunk)]


class RecordingWriter(GenericFakeChatModel):
    """A fake summariser chat model that records the prompts it received."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def test_the_langchain_summariser_reads_the_tool_steps_in_order() -> None:
    writer = RecordingWriter(messages=(AIMessage("Weather asked for Paris.") for _ in itertools.count()))
    history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=300)
    history.add_messages(
        [
            SystemMessage("You are the travel bot."),
            HumanMessage("Weather in Paris?"),
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}]),
            ToolMessage("22C sunny", tool_call_id="c1"),
            AIMessage("Paris: 22C and sunny."),
            *[HumanMessage("more " * 60), AIMessage("ok " * 60)] * 3,
        ]
    )
    prompts = [str(call[-1].content) for call in writer.received]
    [prompt] = [p for p in prompts if "22C sunny" in p]
    lines = prompt.split("\n")
    made = lines.index('assistant called weather({"city": "Paris"})')
    assert lines[made + 1] == 'tool result of weather({"city": "Paris"}): 22C sunny'
    assert lines[made + 2] == "assistant: Paris: 22C and sunny."
    assert "assistant: " not in lines  # no empty line for the tool-calling turn
