"""An agent on a RouterChatModel with BudgetMiddleware: a call that fails after the tier model
answered (structured output that does not parse) or a stream that breaks off after output is
charged on the tier that answered (the tier run's ``metadata["tokenbudget_route"]``), not on the
premium model the call was reserved on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel

from langchain_tokenbudget import BudgetMiddleware, RouterChatModel
from tokenbudget_core.ledger import Ledger


class _Tier(BaseChatModel):
    model_name: str
    text: str = "not json"
    break_stream: bool = False
    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        usage = {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100}
        reply = AIMessage(self.text, usage_metadata=usage, response_metadata={"model_name": self.model_name})  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.calls += 1
        for word in ("Paris is ", "the city ", "you want"):
            chunk = ChatGenerationChunk(message=AIMessageChunk(word))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        if self.break_stream:
            raise ConnectionError("connection reset mid-stream")

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "tier"


class _City(BaseModel):
    city: str


def _rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    return {r.rollup_key: dict(r.values) for r in ledger.store.rollup([ledger.day()])}


def _router(**tier: Any) -> tuple[RouterChatModel, _Tier, _Tier]:
    small, large = _Tier(model_name="gpt-4o-mini", **tier), _Tier(model_name="gpt-4o", **tier)
    return RouterChatModel({"small": small, "large": large}), small, large


def test_structured_output_failure_is_charged_on_the_tier_that_answered() -> None:
    ledger = Ledger("memory://")
    router, small, large = _router()
    agent = create_agent(
        router,
        response_format=ProviderStrategy(_City),
        middleware=[BudgetMiddleware(ledger, user="u", max_output_tokens=200)],
    )
    with pytest.raises(Exception, match=r"(?i)structured|parse|valid"):
        agent.invoke({"messages": [("user", "where?")]})
    assert (small.calls, large.calls) == (1, 0)
    rows = _rows(ledger)
    assert set(rows) == {"/u/gpt-4o-mini"}
    assert rows["/u/gpt-4o-mini"]["cost_nanos"] == 1000 * 150 + 100 * 600
    assert rows["/u/gpt-4o-mini"]["routed_requests"] == 1


@pytest.mark.asyncio
async def test_async_structured_output_failure_is_charged_on_the_tier_that_answered() -> None:
    ledger = Ledger("memory://")
    router, _small, _large = _router()
    agent = create_agent(
        router,
        response_format=ProviderStrategy(_City),
        middleware=[BudgetMiddleware(ledger, user="u", max_output_tokens=200)],
    )
    with pytest.raises(Exception, match=r"(?i)structured|parse|valid"):
        await agent.ainvoke({"messages": [("user", "where?")]})
    assert set(_rows(ledger)) == {"/u/gpt-4o-mini"}


def test_stream_broken_after_output_is_charged_on_the_tier_that_streamed() -> None:
    ledger = Ledger("memory://")
    router, small, large = _router(break_stream=True)
    agent = create_agent(router, middleware=[BudgetMiddleware(ledger, user="u", max_output_tokens=200)])
    with pytest.raises(ConnectionError):
        for _ in agent.stream({"messages": [("user", "where?")]}, stream_mode="messages"):
            pass
    assert (small.calls, large.calls) == (1, 0)
    rows = _rows(ledger)
    assert set(rows) == {"/u/gpt-4o-mini"}
    assert rows["/u/gpt-4o-mini"]["estimated"] == 1
