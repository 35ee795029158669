"""ContextWindowMiddleware(strategy="summarise"): the summariser's replies stay out of
``stream``/``astream(stream_mode="messages")`` (they were streamed as if the agent said them)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import ContextWindowMiddleware


class _Scripted(BaseChatModel):
    """Replies with ``texts`` in turn (the last one again when they run out)."""

    texts: list[str]
    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = self.texts[min(self.calls, len(self.texts) - 1)]
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"


def _agent() -> tuple[Any, _Scripted]:
    summariser = _Scripted(texts=[f"SUMMARY-TEXT {k}" for k in range(20)])
    middleware = ContextWindowMiddleware(
        "gpt-4o", max_tokens=300, strategy="summarise", summariser=summariser
    )
    return create_agent(_Scripted(texts=["answer"]), system_prompt="SYS", middleware=[middleware]), summariser


def _input() -> dict[str, Any]:
    messages: list[tuple[str, str]] = []
    for turn in range(5):
        messages += [("user", f"turn {turn} " + "blah " * 60), ("assistant", "ok")]
    return {"messages": [*messages, ("user", "last")]}


def test_stream_messages_hold_the_answer_only() -> None:
    agent, summariser = _agent()
    streamed = [
        (chunk.content, meta["langgraph_node"])
        for chunk, meta in agent.stream(_input(), stream_mode="messages")
    ]
    assert summariser.calls >= 1  # the summary calls were made
    assert streamed == [("answer", "model")]


def test_astream_messages_hold_the_answer_only() -> None:
    agent, summariser = _agent()

    async def go() -> list[tuple[Any, str]]:
        return [
            (c.content, meta["langgraph_node"])
            async for c, meta in agent.astream(_input(), stream_mode="messages")
        ]

    streamed = asyncio.run(go())
    assert summariser.calls >= 1
    assert streamed == [("answer", "model")]


def test_summary_still_reaches_the_state() -> None:
    agent, _ = _agent()
    result = agent.invoke(_input())
    assert result["messages"][-1].content == "answer"
    assert str(result["tokenbudget_summary"]).startswith("SUMMARY-TEXT")
