"""A fake chat model for the budget handler's cache tests: ``Echo`` answers ``'<n>: <text>'``
(``n``: its call count) with 100 input / 10 output tokens on gpt-4o-mini."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult

USAGE: UsageMetadata = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}


class Echo(BaseChatModel):
    """Answers '<n>: <text>' (n: its call count) with 100 / 10 tokens on gpt-4o-mini."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _reply(self, messages: list[BaseMessage]) -> str:
        self.calls += 1
        return f"{self.calls}: {messages[-1].content}"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        reply = AIMessage(
            self._reply(messages), usage_metadata=USAGE,
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=reply)])
