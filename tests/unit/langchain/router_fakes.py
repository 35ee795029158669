"""Fake tier models for the router tests: named, tool-calling, recording, optionally failing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


class ProviderError(Exception):
    """What an SDK raises on a rate limit: an exception with ``status_code``."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class TierModel(GenericFakeChatModel):
    """A named fake chat model with tool calling; records what it received and the tools bound.

    Replies cycle through ``answers`` (strings or AIMessages) forever; ``fail_with`` makes every
    call raise that error before answering.
    """

    model_name: str = "gpt-4o-mini"
    answers: list[Any] = Field(default_factory=lambda: ["ok"])
    messages: Any = None
    received: list[list[BaseMessage]] = Field(default_factory=list)
    bound_tools: list[list[dict[str, Any]]] = Field(default_factory=list)
    tool_choices: list[Any] = Field(default_factory=list)
    fail_with: Any = None

    def model_post_init(self, context: Any) -> None:
        self.messages = self._cycle()

    def _cycle(self) -> Iterator[Any]:
        while True:
            yield from self.answers

    def _check(self, messages: list[BaseMessage]) -> None:
        self.received.append(list(messages))
        if self.fail_with is not None:
            raise self.fail_with

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self._check(messages)
        return super()._generate(messages, *args, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._check(messages)
        yield from super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop, None, **kwargs):
            yield chunk

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        self.bound_tools.append(formatted)
        self.tool_choices.append(tool_choice)
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)


def tiers(**answers: Any) -> dict[str, TierModel]:
    """small (gpt-4o-mini), medium (gpt-4.1-mini), large (gpt-4o), each answering ``answers[tier]``."""
    names = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}
    return {
        tier: TierModel(model_name=name, answers=list(answers.get(tier, [f"{tier} answer"])))
        for tier, name in names.items()
    }
