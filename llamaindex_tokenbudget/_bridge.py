"""Plumbing shared by the LlamaIndex memories: translation only, no budget rules.

* :class:`Transcript`: a core window or summary buffer plus the LlamaIndex messages it was
  fed, so what the core keeps (the same objects, by identity) maps back to the host's own
  messages;
* :class:`LLMSummariser`: the core's summariser seam, filled by a LlamaIndex ``LLM``;
* :func:`host_error`: a pydantic validation error as the core's :class:`InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.bridge.pydantic import ValidationError
from llama_index.core.llms.llm import LLM

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.messages import Message, MessageLike, to_message
from tokenbudget_core.summary import summary_prompt

from .messages import to_countable_message

__all__ = ["Core", "LLMSummariser", "Transcript", "async_summaries", "host_error"]


class Core(Protocol):
    """What the memories need of a core ``ConversationWindow`` or ``SummaryBuffer``."""

    budget: int
    counter: TokenCounter

    def append(self, message: Message) -> None: ...

    async def aappend(self, message: Message) -> None: ...

    def messages(self) -> Sequence[MessageLike]: ...


class Transcript:
    """A core object and the host messages appended to it, in transcript order."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._host: list[ChatMessage] = []
        self._index: dict[int, int] = {}  # id(core message) -> transcript position

    def append(self, message: ChatMessage, *, where: str = "message") -> None:
        """Translate ``message`` and append it to the core (which validates and counts it once)."""
        core_message = to_countable_message(message, where=where)
        self.core.append(core_message)
        self._track(message, core_message)

    async def aappend(self, message: ChatMessage, *, where: str = "message") -> None:
        """Async twin of :meth:`append`."""
        core_message = to_countable_message(message, where=where)
        await self.core.aappend(core_message)
        self._track(message, core_message)

    def _track(self, message: ChatMessage, core_message: Message) -> None:
        self._index[id(core_message)] = len(self._host)
        self._host.append(message)

    @property
    def host(self) -> list[ChatMessage]:
        """The host messages appended so far, in order (read only)."""
        return self._host

    def to_host(self, item: MessageLike) -> ChatMessage:
        """The host message behind a core item; items the core made itself (a summary) are translated."""
        position = self._index.get(id(item))
        if position is not None:
            return self._host[position]
        made = to_message(item)
        return ChatMessage(role=made.role, content=made.text)


_ASYNC: ContextVar[bool] = ContextVar("tokenbudget_llamaindex_async", default=False)


@contextmanager
def async_summaries() -> Iterator[None]:
    """Inside this block (one task), :class:`LLMSummariser` uses ``llm.achat`` instead of ``llm.chat``."""
    token = _ASYNC.set(True)
    try:
        yield
    finally:
        _ASYNC.reset(token)


def _reply_text(response: ChatResponse) -> str:
    text = response.message.content
    if not text:
        # No text is no summary: fail, so that the core keeps the messages pending and retries.
        raise ValueError("the summariser LLM returned no text")
    return text


class LLMSummariser:
    """The core summariser ``(previous, messages) -> str`` backed by a LlamaIndex ``LLM``.

    It sends :func:`~tokenbudget_core.summary.summary_prompt` as chat messages: ``llm.chat``
    in the sync paths, ``llm.achat`` (awaited by the core) inside :func:`async_summaries`.

    Args:
        llm: The LlamaIndex LLM that writes the summary.
        max_tokens: The summary's token cap, quoted in the prompt (set once the core has chosen it).
    """

    def __init__(self, llm: LLM, max_tokens: int = 0) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    def __call__(self, previous: str | None, messages: list[Message]) -> str | Awaitable[str]:
        prompt = [
            ChatMessage(role=m["role"], content=m["content"])
            for m in summary_prompt(previous, messages, max_tokens=self.max_tokens)
        ]
        if _ASYNC.get():
            return self._achat(prompt)
        return _reply_text(self.llm.chat(prompt))

    async def _achat(self, prompt: list[ChatMessage]) -> str:
        return _reply_text(await self.llm.achat(prompt))


def host_error(error: ValidationError) -> InvalidInputError:
    """The first problem pydantic found, as the core's error naming the field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "memory"
    return InvalidInputError(field, str(first["msg"]), value=first.get("input"))
