"""What the tests of agents' model calls share: a chat model answering one reply, whole or
streamed, and the ledger's books per model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from tokenbudget_core.ledger import Ledger


class ReplyingChatModel(BaseChatModel):
    """A chat model answering ``_reply()``: whole, or streamed as one chunk carrying its usage and
    metadata (as OpenAI's ``stream_usage`` does); it takes tools without using them."""

    model_name: str = "gpt-4o-mini"

    def _reply(self) -> AIMessage:
        raise NotImplementedError

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply())])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        m = self._reply()
        chunk = ChatGenerationChunk(
            message=AIMessageChunk(
                content=m.content, usage_metadata=m.usage_metadata, response_metadata=m.response_metadata
            )
        )
        if run_manager:
            run_manager.on_llm_new_token(str(m.content), chunk=chunk)
        yield chunk

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self


def rows(ledger: Ledger) -> dict[str, tuple[int, int, int, int]]:
    """model -> (requests, input, output, estimated) charged today."""
    out: dict[str, tuple[int, int, int, int]] = {}
    for r in ledger.store.rollup([ledger.day()]):
        v = r.values
        out[r.rollup_key.rsplit("/", 1)[-1]] = (
            v.get("requests", 0),
            v.get("input_tokens", 0),
            v.get("output_tokens", 0),
            v.get("estimated", 0),
        )
    return out


def held_and_charged(ledger: Ledger) -> tuple[int, int]:
    """Tokens counted against user ``u``'s daily budget in feature ``f`` (charged and still
    held), and tokens charged."""
    used = ledger.state(user="u", feature="f").used["user_daily_tokens (all features)"]
    return used, sum(v[1] + v[2] for v in rows(ledger).values())
