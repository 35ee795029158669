"""Shared pieces of the LangChain adapter tests: a fake chat model that records what it received,
a real tool, a long conversation with tool calls, and the checks every model input must pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core._api import suppress_langchain_deprecation_warning
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from langchain_tokenbudget import to_core_messages
from tokenbudget_core import TokenCounter

COUNTER = TokenCounter.for_model("gpt-4o")


class RecordingChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that records every input it received and accepts tools."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RecordingChatModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def replies(*items: AIMessage | str) -> RecordingChatModel:
    return RecordingChatModel(messages=iter(items))


@tool
def get_weather(city: str) -> str:
    """Look up today's weather for a city, in degrees Celsius, with wind and rain forecasts."""
    return f"18C and sunny in {city}"


WEATHER_TOOL = convert_to_openai_tool(get_weather)


def weather_call(call_id: str, city: str = "Paris") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": city}, "id": call_id}])


def conversation(turns: int, *, first: str = "Hi, I am Ada and I live in Lyon.") -> list[BaseMessage]:
    """A first user message, then ``turns`` turns; every third turn calls the weather tool."""
    out: list[BaseMessage] = [HumanMessage(first)]
    out.append(AIMessage("Nice to meet you, Ada."))
    for t in range(turns):
        out.append(HumanMessage(f"Question {t}: " + "tell me more about the weather " * 4))
        if t % 3 == 0:
            out.append(weather_call(f"call_{t}", city=f"City{t}"))
            out.append(ToolMessage(f"18C in City{t}", tool_call_id=f"call_{t}"))
        out.append(AIMessage(f"Answer {t}: " + "it is mild and sunny today " * 4))
    return out


def tokens(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None = None) -> int:
    return int(COUNTER.count_messages(to_core_messages(messages), tools))


def assert_tool_pairs_intact(messages: Sequence[BaseMessage]) -> None:
    """Every tool result follows its call, and every call is followed by all its results."""
    for i, m in enumerate(messages):
        if isinstance(m, AIMessage) and m.tool_calls:
            ids = {c["id"] for c in m.tool_calls}
            following = set()
            j = i + 1
            while j < len(messages) and isinstance(messages[j], ToolMessage):
                following.add(messages[j].tool_call_id)  # type: ignore[union-attr]
                j += 1
            assert ids <= following, f"call at {i} lost its results"
        if isinstance(m, ToolMessage):
            j = i - 1
            while j >= 0 and isinstance(messages[j], ToolMessage):
                j -= 1
            prev = messages[j] if j >= 0 else None
            assert isinstance(prev, AIMessage), f"tool result at {i} has no call before it"
            assert m.tool_call_id in {c["id"] for c in prev.tool_calls}


def memory(messages: Sequence[BaseMessage] = ()) -> InMemoryChatMessageHistory:
    """A backing store, made the way an app would (its deprecation warning silenced here)."""
    with suppress_langchain_deprecation_warning():
        return InMemoryChatMessageHistory(messages=list(messages))


def system_of(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
