"""A budget handler's claim on a TokenBudgetLLMCache lookup belongs to its own call: a call cut
off after its lookup (a timeout), or stopped by another handler, never scopes a later call's
lookup or store, so no user is served another user's cached answer (review s21r findings 1, 2,
4 and 7); an attribute() block in force always wins over a claim."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from langchain_tokenbudget.llm_cache import claim_run
from tokenbudget_core import attribute
from tokenbudget_core.attribution import Attribution
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.usage import Usage

USAGE = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]


def _reply(text: str) -> ChatResult:
    message = AIMessage(
        text, usage_metadata=USAGE,  # type: ignore[arg-type]
        response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "stop"},
    )  # fmt: skip
    return ChatResult(generations=[ChatGeneration(message=message)])


class Private(BaseChatModel):
    """Answers with data private to the user its run's metadata names; ``hang`` makes the next
    async call wait forever (until cancelled)."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0
    hang: bool = False

    @property
    def _llm_type(self) -> str:
        return "private"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls += 1
        return _reply(f"private data of {(run_manager.metadata or {}).get('user_id')}")

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        return _reply(f"private data of {(run_manager.metadata or {}).get('user_id')}")


def _config(handler: Any, user: str, *others: Any) -> Any:
    return {"callbacks": [*others, handler], "metadata": {"feature": "chat", "user_id": user}}


def _hits(ledger: Ledger) -> dict[str | None, tuple[int, int]]:
    return {r.key: (r.requests, r.cache_hits) for r in build_report(ledger).breakdown("user").rows}


@pytest.mark.parametrize("blocks", [False, True], ids=["metadata", "attribute-blocks"])
@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_call_timed_out_after_its_lookup_never_scopes_a_later_callers_store(
    handler_class: type, blocks: bool
) -> None:
    async def main() -> tuple[str, str, bool, Ledger]:
        ledger = Ledger("memory://")
        model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
        handler = handler_class(ledger)

        async def ask(user: str) -> AIMessage:
            if blocks:
                with attribute(feature="chat", user=user):
                    return await model.ainvoke("What is my balance?", config=_config(handler, user))  # type: ignore[return-value]
            return await model.ainvoke("What is my balance?", config=_config(handler, user))  # type: ignore[return-value]

        model.hang = True
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # cut off after its lookup, while "sending"
                await ask("u-1")
        await asyncio.sleep(0)
        model.hang = False
        second = await ask("u-2")  # the same task goes on serving requests
        third = await ask("u-1")
        return str(second.content), str(third.content), "tokenbudget_cache" in third.response_metadata, ledger

    second, third, from_cache, ledger = asyncio.run(main())
    assert second == "private data of u-2"
    assert third == "private data of u-1"  # never u-2's answer
    assert not from_cache
    assert _hits(ledger) == {"u-1": (1, 0), "u-2": (1, 0)}


class AsyncGuardrail(AsyncCallbackHandler):
    raise_error = True
    blocked = False

    async def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if self.blocked:
            raise ValueError("guardrail: blocked")


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_an_async_guardrail_stop_leaves_no_claim_another_user_can_take(handler_class: type) -> None:
    async def main() -> tuple[AIMessage, Ledger]:
        ledger = Ledger("memory://")
        model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
        guardrail, handler = AsyncGuardrail(), handler_class(ledger)
        await model.ainvoke("What is my balance?", config=_config(handler, "u-1", guardrail))
        guardrail.blocked = True  # listed first, yet LangChain runs the inline budget handler first
        with pytest.raises(ValueError, match="blocked"):
            await model.ainvoke("What is my balance?", config=_config(handler, "u-1", guardrail))
        with attribute(feature="chat", user="u-2"):
            answer = await model.ainvoke("What is my balance?")
        return answer, ledger  # type: ignore[return-value]

    answer, ledger = asyncio.run(main())
    assert answer.content == "private data of None"  # u-2's own call, sent: not u-1's answer
    assert "tokenbudget_cache" not in answer.response_metadata
    assert _hits(ledger) == {"u-1": (1, 0)}


class Guardrail(BaseCallbackHandler):
    raise_error = True
    blocked = False

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if self.blocked or "forbidden" in str(messages[0][-1].content):
            raise ValueError("guardrail: blocked")


def test_a_guardrail_after_the_budget_handler_leaves_no_claim_another_user_can_take() -> None:
    ledger = Ledger("memory://")
    model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler, guardrail = BudgetCallbackHandler(ledger), Guardrail()
    config = {"callbacks": [handler, guardrail], "metadata": {"feature": "chat", "user_id": "u-1"}}
    model.invoke("What is my balance?", config=config)
    guardrail.blocked = True
    with pytest.raises(ValueError, match="blocked"):
        model.invoke("What is my balance?", config=config)
    with attribute(feature="chat", user="u-2"):
        answer = model.invoke("What is my balance?")
    assert "tokenbudget_cache" not in answer.response_metadata  # a miss in u-2's scope
    assert model.calls == 2
    assert _hits(ledger) == {"u-1": (1, 0)}


def _at_the_limit(model: Private) -> tuple[Ledger, BudgetCallbackHandler]:
    """u-1 (feature chat) asked "How do I export?" (cached), then spent past its hard limit."""
    ledger = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.05")}))
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger))
    handler = BudgetCallbackHandler(ledger)
    model.invoke("How do I export?", config=_config(handler, "u-1"))
    with attribute(feature="chat", user="u-1"):
        r = ledger.reserve(model="gpt-4o-mini", input_tokens=1000, max_output_tokens=10)
        ledger.commit(r, Usage(input_tokens=400_000, output_tokens=10))
    return ledger, handler


def test_a_refusal_left_to_the_cache_outlives_no_call_a_guardrail_stopped() -> None:
    model = Private()
    ledger, handler = _at_the_limit(model)
    with pytest.raises(ValueError, match="blocked"):
        model.invoke(
            "forbidden words", config={**_config(handler, "u-1"), "callbacks": [handler, Guardrail()]}
        )
    with attribute(feature="chat", user="u-2"):
        answer = model.invoke("How do I export?")  # not u-1's cached answer
        fresh = model.invoke("a new question")  # not refused with u-1's budget
    assert "tokenbudget_cache" not in answer.response_metadata
    assert answer.content == "private data of None"
    assert fresh.content == "private data of None"
    assert _hits(ledger).get("u-1") == (2, 0)


def test_a_refused_call_is_still_refused_or_served_by_its_own_lookup() -> None:
    model = Private()
    _ledger, handler = _at_the_limit(model)
    hit = model.invoke("How do I export?", config=_config(handler, "u-1"))
    assert "tokenbudget_cache" in hit.response_metadata  # served at $0
    with pytest.raises(BudgetExceededError):
        model.invoke("a question never asked", config=_config(handler, "u-1"))
    assert model.calls == 1


class OtherPayer(BaseCallbackHandler):
    """A handler that claims the run's lookup for u-1 whatever the call (as a misconfigured
    budget handler would)."""

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        claim_run(Attribution(feature="chat", user="u-1"), messages[0], run=run_id)


def test_an_attribute_block_naming_another_payer_wins_over_the_claim() -> None:
    model = Private(cache=TokenBudgetLLMCache(ExactCache()))
    with attribute(feature="chat", user="u-2"):
        model.invoke("What is my balance?", config={"callbacks": [OtherPayer()]})
        again = model.invoke("What is my balance?")  # u-2's scope: the answer is there
    with attribute(feature="chat", user="u-1"):
        other = model.invoke("What is my balance?")  # u-1's scope: nothing stored there
    assert "tokenbudget_cache" in again.response_metadata
    assert "tokenbudget_cache" not in other.response_metadata
    assert model.calls == 2
