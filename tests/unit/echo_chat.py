"""Fake chat models for the budget handler's cache tests, with 100 input / 10 output tokens on
gpt-4o-mini: ``Echo`` answers ``'<n>: <text>'`` (``n``: its call count), ``Private`` answers for
the user its run's metadata names."""

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


class Private(BaseChatModel):
    """Answers "for <user>" (the user its run's metadata names); "boom" fails (a provider 500)."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "private"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        if messages[-1].content == "boom":
            raise RuntimeError("provider 500")
        self.calls += 1
        message = AIMessage(
            f"for {(run_manager.metadata or {}).get('user_id')}", usage_metadata=USAGE,  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=message)])
