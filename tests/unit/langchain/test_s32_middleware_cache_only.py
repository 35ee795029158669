"""``BudgetMiddleware`` serves a refused call from the model's ``TokenBudgetLLMCache`` (issue 4,
section 6): from the ladder's ``cache_only`` step the ledger refuses every call, and the
middleware refused before LangChain looked the cache up, so an agent's question answered before
was refused too, though ``BudgetCallbackHandler`` serves it. Now a hit is served at $0 and a miss
is refused before anything is sent, whatever the model's cache: a run nothing is sure to look a
``TokenBudgetLLMCache`` up for (``cache=False``, LangChain's own cache) is refused at its start.
Real ``create_agent`` runs, a real memory ledger and response cache; the model counts the calls
that reach it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.caches import InMemoryCache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import Field

from langchain_tokenbudget import BudgetMiddleware, TokenBudgetLLMCache
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, Usage, build_report
from tokenbudget_core.errors import BudgetExceededError

PAYER = {"feature": "chat", "user": "u1"}


class CountingModel(GenericFakeChatModel):
    """LangChain's fake chat model, named, noting each call that reaches it (one sent)."""

    model_name: str = "gpt-4o-mini"
    sent: list[int] = Field(default_factory=list)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.sent.append(len(messages))
        return super()._generate(messages, *args, **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def reply(i: int) -> AIMessage:
    usage = {"input_tokens": 1_000, "output_tokens": 100, "total_tokens": 1_100}
    return AIMessage(f"answer {i}", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"})


def setup(cache: Any = "ours", on_exceeded: str = "raise") -> tuple[Ledger, CountingModel, Any]:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    chosen = TokenBudgetLLMCache(ExactCache(ledger=ledger)) if cache == "ours" else cache
    model = CountingModel(messages=iter([reply(i) for i in range(10)]), cache=chosen)
    agent = create_agent(
        model, middleware=[BudgetMiddleware(ledger, on_exceeded=on_exceeded, max_output_tokens=100)]
    )
    return ledger, model, agent


def ask(agent: Any, text: str, use_async: bool = False) -> AIMessage:
    payload = {"messages": [HumanMessage(text)]}
    config = {"metadata": PAYER}
    out = asyncio.run(agent.ainvoke(payload, config)) if use_async else agent.invoke(payload, config)
    message = out["messages"][-1]
    assert isinstance(message, AIMessage)
    return message


def push_to_cache_only(ledger: Ledger) -> None:
    used = sum(ledger.state(**PAYER).used.values())
    ledger.record(Usage(input_tokens=9_100 - int(used)), model="gpt-4o-mini", **PAYER)
    assert ledger.state(**PAYER).step == "cache_only"


@pytest.mark.parametrize("use_async", [False, True])
def test_at_cache_only_a_cached_question_is_served_and_a_new_one_refused_unsent(use_async: bool) -> None:
    ledger, model, agent = setup()
    assert ask(agent, "What is my plan?", use_async).content == "answer 0"  # sent, cached
    push_to_cache_only(ledger)

    assert ask(agent, "What is my plan?", use_async).content == "answer 0"  # from the cache
    with pytest.raises(BudgetExceededError) as refused:
        ask(agent, "A new question", use_async)

    assert refused.value.step == "cache_only"
    assert len(model.sent) == 1  # only the first question reached the model
    assert build_report(ledger).totals.cache_hits == 1
    assert ledger.state(**PAYER).used == {"user_daily_tokens": 9_100}  # the hit and refusal spent nothing


def test_on_exceeded_end_ends_the_run_on_a_miss_and_serves_a_hit() -> None:
    ledger, model, agent = setup(on_exceeded="end")
    ask(agent, "What is my plan?")
    push_to_cache_only(ledger)
    assert ask(agent, "What is my plan?").content == "answer 0"
    ended = ask(agent, "A new question")
    assert "tokenbudget_refusal" in ended.response_metadata
    assert len(model.sent) == 1


@pytest.mark.parametrize("cache", [False, InMemoryCache()], ids=["no cache", "langchain's cache"])
def test_a_model_no_budget_aware_cache_answers_for_is_refused_unsent(cache: Any) -> None:
    """Nothing is sure to look a ``TokenBudgetLLMCache`` up first for this model: its run is
    refused at its start, never sent (a ``TokenBudgetLLMCache`` exists in the process)."""
    TokenBudgetLLMCache(ExactCache())
    ledger, model, agent = setup(cache=cache)
    ask(agent, "What is my plan?")
    push_to_cache_only(ledger)
    with pytest.raises(BudgetExceededError):
        ask(agent, "What is my plan?")
    with pytest.raises(BudgetExceededError):
        ask(agent, "A new question")
    assert len(model.sent) == 1


@pytest.mark.parametrize("use_async", [False, True])
def test_an_answer_cached_for_one_user_is_not_served_to_another(use_async: bool) -> None:
    """Under ``BudgetMiddleware`` alone the run's payer was not in force while the model ran, so
    a ``TokenBudgetLLMCache`` (scoped by the payer in force) kept its entries in the shared scope:
    one user's answer was served to another. The middleware now puts the payer it charges (and
    the run's tenant) in force around the call."""
    _, model, agent = setup()

    def ask_as(**metadata: str) -> str:
        payload = {"messages": [HumanMessage("What is my balance?")]}
        config = {"metadata": {"feature": "chat", **metadata}}
        out = asyncio.run(agent.ainvoke(payload, config)) if use_async else agent.invoke(payload, config)
        return str(out["messages"][-1].content)

    assert ask_as(user="u1") == "answer 0"
    assert ask_as(user="u2") == "answer 1"  # not u1's
    assert ask_as(user="u1") == "answer 0"  # u1's own, from the cache
    assert ask_as(user="u1", tenant="acme") == "answer 2"  # another tenant's u1
    assert len(model.sent) == 3


class TeamBudgetMiddleware(BudgetMiddleware):
    """The same middleware under another name (``create_agent`` takes one of each name)."""


@pytest.mark.parametrize("use_async", [False, True])
def test_an_inner_middleware_with_room_does_not_send_what_an_outer_one_refused(use_async: bool) -> None:
    """(regression review s32) The inner middleware's own scope replaced the outer one's refusal:
    a new question the org budget refused was sent, charged to the team ledger only."""
    org = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)}))
    team = Ledger("memory://")
    model = CountingModel(
        messages=iter([reply(i) for i in range(10)]), cache=TokenBudgetLLMCache(ExactCache(ledger=org))
    )
    agent = create_agent(
        model,
        middleware=[
            BudgetMiddleware(org, max_output_tokens=100),
            TeamBudgetMiddleware(team, max_output_tokens=100),
        ],
    )
    push_to_cache_only(org)
    with pytest.raises(BudgetExceededError):
        ask(agent, "A new question", use_async)
    assert model.sent == []
    assert team.state(**PAYER).used == {}


def test_a_hit_its_cache_recorded_nowhere_is_recorded_in_the_ledger() -> None:
    """(regression review s32) At cache_only a hit from a cache keeping no ledger was served and
    recorded nowhere (the call not refused records it)."""
    ledger, model, agent = setup(cache=TokenBudgetLLMCache(ExactCache()))
    ask(agent, "What is my plan?")
    push_to_cache_only(ledger)
    before = build_report(ledger).totals.cache_hits
    assert ask(agent, "What is my plan?").content == "answer 0"
    assert build_report(ledger).totals.cache_hits == before + 1
    assert len(model.sent) == 1


def test_a_refused_call_sent_anyway_from_a_thread_without_the_context_is_charged() -> None:
    """(regression review s32) A middleware inside that runs the model call in a plain thread (no
    context copied) lets the call out though the budget refused it: it is charged, not lost."""
    import concurrent.futures

    from langchain.agents.middleware import AgentMiddleware

    class Threaded(AgentMiddleware):  # type: ignore[type-arg]
        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(handler, request).result(timeout=30)

    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    model = CountingModel(
        messages=iter([reply(i) for i in range(10)]), cache=TokenBudgetLLMCache(ExactCache(ledger=ledger))
    )
    agent = create_agent(model, middleware=[BudgetMiddleware(ledger, max_output_tokens=100), Threaded()])
    push_to_cache_only(ledger)
    ask(agent, "A new question")
    assert len(model.sent) == 1
    assert ledger.state(**PAYER).used == {"user_daily_tokens": 9_100 + 1_100}  # its reported usage


def test_without_a_budget_aware_cache_the_run_tenant_is_not_read() -> None:
    """(regression review s32) The tenant was read (and refused when not an id) for every call,
    with no cache to scope: a run whose metadata holds another library's tenant object failed."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from langchain.agents import create_agent
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        from langchain_core.messages import AIMessage, HumanMessage
        from langchain_tokenbudget import BudgetMiddleware, llm_cache
        from tokenbudget_core import Ledger
        class Named(GenericFakeChatModel):
            model_name: str = "gpt-4o-mini"
            def bind_tools(self, tools, **kw):
                return self
        model = Named(messages=iter([AIMessage("ok")]))
        agent = create_agent(model, middleware=[BudgetMiddleware(Ledger("memory://"), max_output_tokens=10)])
        meta = {"feature": "chat", "user": "u1", "tenant": {"id": "acme"}}
        out = agent.invoke({"messages": [HumanMessage("hi")]}, {"metadata": meta})
        assert not llm_cache.cache_in_use()
        print(out["messages"][-1].content)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
