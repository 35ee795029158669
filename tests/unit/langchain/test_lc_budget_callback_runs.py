"""BudgetCallbackHandler and its async twin across runs: streams broken off on the generate() path,
routes of RoutingMiddleware, cancelled calls, two handlers on one ledger, and the payer of
nested runs. Real LangChain runs on fake chat models, checked against the ledger."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from langchain_tokenbudget import (
    AsyncBudgetCallbackHandler,
    BudgetCallbackHandler,
    BudgetMiddleware,
    RoutingMiddleware,
)
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.attribution import attribute, overhead
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.routing import TierRouter, using_route
from tokenbudget_core.streams import estimate_output_tokens

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
WORDS = [
    "The",
    "weather",
    "in",
    "Oslo",
    "is",
    "mild",
    "today",
    "with",
    "light",
    "winds",
    "from",
    "the",
    "west",
]


def usage(inp: int, out: int) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}


def reply(inp: int = 40, out: int = 9) -> AIMessage:
    return AIMessage("It is sunny.", usage_metadata=usage(inp, out))


def make_ledger(tmp_path: Path, **options: Any) -> Ledger:
    policy = options.pop("policy", None)
    return Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl", **options)


def rows(ledger: Ledger) -> dict[str, dict[str, int]]:
    return {r.rollup_key: dict(r.values) for r in ledger.store.rollup([ledger.day()])}


def total(ledger: Ledger, key: str) -> int:
    return sum(r.get(key, 0) for r in rows(ledger).values())


class Named(GenericFakeChatModel):
    """A fake chat model that names its model (``model_name``), as provider models do."""

    model_name: str = "gpt-4o-mini"


# -- 1. a stream that breaks off on the generate() path (invoke with streaming=True) ---------------


class BreakingStream(GenericFakeChatModel):
    """Streams ``WORDS[:after]`` word by word, then the connection drops (no usage reported).

    With ``streaming=True`` LangChain's ``invoke`` / ``ainvoke`` consume this stream through
    ``generate()``, whose ``on_llm_error`` carries no partial reply."""

    streaming: bool = False
    after: int = 6
    messages: Any = None

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for word in WORDS[: self.after]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        raise ConnectionError("peer closed connection without sending complete message body")


STREAMED = "".join(w + " " for w in WORDS[:6])


def call(model: Any, how: str, prompt: str, config: RunnableConfig) -> Any:
    if how == "invoke":
        return model.invoke(prompt, config=config)
    if how == "ainvoke":
        return asyncio.run(model.ainvoke(prompt, config=config))
    return list(model.stream(prompt, config=config))


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_stream_that_breaks_off_is_charged_the_text_streamed_whatever_the_path(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    """The request was sent: the ledger's rule charges a flagged estimate, the counted input plus
    the output streamed so far, be the stream read with stream() or through invoke()."""
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini", user="u-1", max_output_tokens=100)
    model = BreakingStream() if how == "stream" else BreakingStream(streaming=True)
    with pytest.raises(ConnectionError):
        call(model, how, "What is the weather in Oslo?", {"callbacks": [handler]})
    counter = TokenCounter.for_model("gpt-4o-mini")
    prompt = int(counter.count_messages([{"role": "user", "content": "What is the weather in Oslo?"}]))
    expected_out = estimate_output_tokens(STREAMED, counter=counter)
    assert expected_out > 0
    charged = rows(ledger)["/u-1/gpt-4o-mini"]
    assert (charged["requests"], charged["estimated"]) == (1, 1)
    assert (charged["input_tokens"], charged["output_tokens"]) == (prompt, expected_out)
    assert handler._runs == {}  # the streamed text went with the run


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_call_that_fails_before_streaming_anything_is_still_released(
    tmp_path: Path, handler_class: type
) -> None:
    ledger = make_ledger(tmp_path, policy=BudgetPolicy(user_daily_tokens=1_000))
    handler = handler_class(ledger, model="gpt-4o-mini", user="u-1", max_output_tokens=100)
    with pytest.raises(ConnectionError):
        BreakingStream(streaming=True, after=0).invoke("hi", config={"callbacks": [handler]})
    assert rows(ledger) == {}
    assert set(ledger.state(user="u-1").shares.values()) == {0.0}  # released


# -- 3. a call RoutingMiddleware routes records what routing saved ----------------------------------


def routed_agent_run(ledger: Ledger, how: str) -> None:
    small = Named(model_name="gpt-4o-mini", messages=iter([AIMessage("Paris.", usage_metadata=usage(50, 5))]))
    large = Named(model_name="gpt-4o", messages=iter([AIMessage("essay", usage_metadata=usage(50, 5))]))
    middleware: list[Any] = [RoutingMiddleware({"small": small, "large": large})]
    config: RunnableConfig = {"metadata": {"user": "u"}}
    if how == "middleware":
        middleware.append(BudgetMiddleware(ledger))
    else:
        config["callbacks"] = [BudgetCallbackHandler(ledger)]
    create_agent(small, middleware=middleware).invoke({"messages": [("user", "Capital of France?")]}, config)


def test_the_handler_records_a_call_routing_middleware_routed_as_budget_middleware_does(
    tmp_path: Path,
) -> None:
    by_middleware, by_handler = make_ledger(tmp_path), make_ledger(tmp_path)
    routed_agent_run(by_middleware, "middleware")
    routed_agent_run(by_handler, "handler")
    expected = cost_of(Usage(input_tokens=50, output_tokens=5), "gpt-4o") - cost_of(
        Usage(input_tokens=50, output_tokens=5), "gpt-4o-mini"
    )
    for ledger in (by_middleware, by_handler):
        t = build_report(ledger, last_days=1).totals
        assert (t.requests, t.routed_requests, t.routing_saved_usd) == (1, 1, expected)
        assert list(rows(ledger)) == ["/u/gpt-4o-mini"]


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_under_a_route_only_the_call_to_the_routed_model_is_the_routed_call(
    tmp_path: Path, handler_class: type
) -> None:
    """A call to another model made inside the route (a summary, a guard) is charged on its own
    model and records no routing; the call to the routed model records the saving."""
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, user="u")
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"})
    decision = router.route([{"role": "user", "content": "Capital of France?"}])
    assert decision.model == "gpt-4o-mini"
    routed = Named(model_name="gpt-4o-mini", messages=iter([reply(50, 5)]))
    other = Named(model_name="gpt-4.1-nano", messages=iter([reply(50, 5)]))

    async def both() -> None:
        with using_route(decision, model="gpt-4o-mini"):
            await other.ainvoke("summarise", config={"callbacks": [handler]})
            await routed.ainvoke("Capital of France?", config={"callbacks": [handler]})

    asyncio.run(both())
    charged = rows(ledger)
    assert (charged["/u/gpt-4.1-nano"]["requests"], charged["/u/gpt-4.1-nano"].get("routed_requests", 0)) == (
        1,
        0,
    )
    assert (charged["/u/gpt-4o-mini"]["requests"], charged["/u/gpt-4o-mini"].get("routed_requests", 0)) == (
        1,
        1,
    )


# -- 4. cancelled async calls do not stay in the handler ---------------------------------------------


class Slow(GenericFakeChatModel):
    messages: Any = None

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(10)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("late"))])


def test_cancelled_async_calls_are_forgotten_once_their_lease_is_over(tmp_path: Path) -> None:
    """LangChain never ends a cancelled ``ainvoke``. Cancelled under ``asyncio.timeout()`` in a
    task that goes on (so the task's end cannot end it: see test_lc_cancelled_calls), its run is
    dropped once idle for ten leases, when later calls start, instead of being held by a
    long-lived handler forever."""
    ledger = make_ledger(tmp_path, lease_seconds=0.05)
    handler = AsyncBudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u")
    slow, fast = Slow(), GenericFakeChatModel(messages=iter([reply(), reply()]))

    async def main() -> None:
        for i in range(30):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.001):
                    await slow.ainvoke(f"question {i}", config={"callbacks": [handler]})
        assert 0 < len(handler._runs) <= 30
        await asyncio.sleep(0.12)  # every lease is over: the runs are kept for ten leases
        await fast.ainvoke("one more", config={"callbacks": [handler]})
        assert 0 < len(handler._runs) <= 30
        await asyncio.sleep(0.5)  # ten leases idle (and the handler's once-a-lease sweep is due)
        await fast.ainvoke("one more", config={"callbacks": [handler]})

    asyncio.run(main())
    assert handler._runs == {}
    assert total(ledger, "requests") == 2


@pytest.mark.parametrize("fails", [False, True])
def test_a_chain_leaves_no_payer_behind(tmp_path: Path, fails: bool) -> None:
    handler = BudgetCallbackHandler(make_ledger(tmp_path), model="gpt-4o-mini")
    model = GenericFakeChatModel(messages=iter([reply()]))

    def step(x: Any) -> Any:
        if fails:
            raise ValueError("no")
        return x

    chain = RunnableLambda(step) | model
    if fails:
        with pytest.raises(ValueError):
            chain.invoke("hi", config={"callbacks": [handler], "metadata": {"user": "u"}})
    else:
        chain.invoke("hi", config={"callbacks": [handler], "metadata": {"user": "u"}})
    assert handler._payers == {}


# -- 5. two handlers on one ledger charge a call once ------------------------------------------------


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_two_handlers_that_see_the_same_call_charge_it_once(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    ledger = make_ledger(tmp_path, policy=BudgetPolicy(user_daily_tokens=10_000))
    on_model = handler_class(ledger, model="gpt-4o-mini", user="u", max_output_tokens=50)
    per_call = handler_class(ledger, model="gpt-4o-mini", user="u", max_output_tokens=50)
    model = GenericFakeChatModel(messages=iter([reply(500, 100)]), callbacks=[on_model])
    call(model, how, "hi", {"callbacks": [per_call]})
    used = total(ledger, "input_tokens") + total(ledger, "output_tokens")
    assert (total(ledger, "requests"), used) == (1, 600 if how != "stream" else used)
    assert ledger.state(user="u").shares["user_daily_tokens (all features)"] == used / 10_000  # none held
    assert on_model._runs == per_call._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_two_handlers_hold_one_reservation_while_the_call_runs(tmp_path: Path, handler_class: type) -> None:
    """The second handler's reserve returns the first one's live reservation: the worst case is
    held once, so two handlers do not refuse a call one budget can hold."""
    ledger = make_ledger(tmp_path, policy=BudgetPolicy(user_daily_tokens=150))
    first, second = (
        handler_class(ledger, model="gpt-4o-mini", user="u", max_output_tokens=100) for _ in "ab"
    )
    model = GenericFakeChatModel(messages=iter([reply(8, 4)]), callbacks=[first])
    model.invoke("hi", config={"callbacks": [second]})  # ~108 tokens reserved once: fits 150
    assert total(ledger, "requests") == 1


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_a_run_id_reused_by_a_later_call_is_another_call_for_two_handlers_too(
    tmp_path: Path, handler_class: type, is_async: bool
) -> None:
    """The reused run id names a call settled already: both handlers reserve the new call under
    the same next id (``<run id>#1``, ``#2``...), so it is charged once."""
    ledger = make_ledger(tmp_path)
    on_model = handler_class(ledger, model="gpt-4o-mini", user="u")
    per_call = handler_class(ledger, model="gpt-4o-mini", user="u")
    model = GenericFakeChatModel(messages=iter([reply(), reply(), reply()]), callbacks=[on_model])
    config: RunnableConfig = {"callbacks": [per_call], "run_id": uuid.uuid4()}
    for n, text in enumerate(("first", "second", "third"), 1):
        run_sync_or_async(model, text, config, is_async)
        assert total(ledger, "requests") == n
    assert on_model._runs == per_call._runs == {}


# -- 6. the outermost run's payer wins ----------------------------------------------------------------

OUTER = {"feature": "support", "user": "u-outer"}
CHARGED_OUTER = ["support/u-outer/gpt-4o-mini"]


def run_sync_or_async(runnable: Any, value: Any, config: RunnableConfig, is_async: bool) -> Any:
    if is_async:
        return asyncio.run(runnable.ainvoke(value, config=config))
    return runnable.invoke(value, config=config)


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_an_outer_runs_payer_wins_over_a_models_own_metadata(
    tmp_path: Path, handler_class: type, is_async: bool
) -> None:
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini")
    tool_model = GenericFakeChatModel(
        messages=iter([reply()]), metadata={"feature": "lookup", "user": "service"}
    )
    chain = RunnableLambda(lambda x: x) | tool_model
    run_sync_or_async(chain, "hi", {"callbacks": [handler], "metadata": OUTER}, is_async)
    assert sorted(rows(ledger)) == CHARGED_OUTER
    assert handler._payers == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_an_outer_runs_payer_wins_over_a_nested_calls_metadata(
    tmp_path: Path, handler_class: type, is_async: bool
) -> None:
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini")
    inner = GenericFakeChatModel(messages=iter([reply()]))

    async def astep(x: Any) -> Any:
        return await inner.ainvoke(x, config={"metadata": {"user": "u-inner", "feature": "inner"}})

    step = RunnableLambda(
        lambda x: inner.invoke(x, config={"metadata": {"user": "u-inner", "feature": "inner"}}), afunc=astep
    )
    run_sync_or_async(step, "hi", {"callbacks": [handler], "metadata": OUTER}, is_async)
    assert sorted(rows(ledger)) == CHARGED_OUTER


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_an_outer_runs_payer_wins_over_an_attribute_block_inside_it(
    tmp_path: Path, handler_class: type, is_async: bool
) -> None:
    """A library the run calls opens an ``attribute()`` block of its own: the outer run's payer is
    charged, as with two nested blocks; an ``overhead()`` marker inside still marks the call, and
    a field the outer run does not name is the block's."""
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini")
    inner = GenericFakeChatModel(messages=iter([reply()]))

    def step(x: Any) -> Any:
        with attribute(user="u-inner", conversation="c-1"), overhead("summariser"):
            return inner.invoke(x)

    async def astep(x: Any) -> Any:
        with attribute(user="u-inner", conversation="c-1"), overhead("summariser"):
            return await inner.ainvoke(x)

    run_sync_or_async(
        RunnableLambda(step, afunc=astep), "hi", {"callbacks": [handler], "metadata": OUTER}, is_async
    )
    assert sorted(rows(ledger)) == CHARGED_OUTER
    [row] = rows(ledger).values()
    assert row["overhead_nanos"] == row["cost_nanos"] > 0


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_an_enclosing_attribute_block_still_wins_over_the_outer_runs_metadata(
    tmp_path: Path, handler_class: type
) -> None:
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini")
    inner = GenericFakeChatModel(messages=iter([reply()]))

    def step(x: Any) -> Any:
        with attribute(user="u-inner"):
            return inner.invoke(x, config={"metadata": {"feature": "inner"}})

    with attribute(user="u-enclosing"):
        RunnableLambda(step).invoke("hi", config={"callbacks": [handler], "metadata": OUTER})
    assert sorted(rows(ledger)) == ["support/u-enclosing/gpt-4o-mini"]


def test_tags_of_the_outer_run_name_the_payer_too(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    inner = GenericFakeChatModel(messages=iter([reply()]), metadata={"user": "service"})
    chain = RunnableLambda(lambda x: x) | inner
    chain.invoke("hi", config={"callbacks": [handler], "tags": ["feature:support", "user:u-outer"]})
    assert sorted(rows(ledger)) == CHARGED_OUTER


def test_without_an_outer_payer_the_calls_own_metadata_pays(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", feature="default")
    inner = GenericFakeChatModel(messages=iter([reply()]), metadata={"user": "service"})
    (RunnableLambda(lambda x: x) | inner).invoke("hi", config={"callbacks": [handler]})
    assert sorted(rows(ledger)) == ["default/service/gpt-4o-mini"]


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_an_outer_runs_payer_wins_inside_a_tool_and_a_retriever(tmp_path: Path, handler_class: type) -> None:
    """Model calls made inside a tool (an agent's tool that asks a model) or a retriever (a
    query-rewriting one) are runs inside the outer run too."""
    ledger = make_ledger(tmp_path)
    handler = handler_class(ledger, model="gpt-4o-mini")
    inner = GenericFakeChatModel(messages=iter([reply(), reply()]), metadata={"user": "service"})

    @tool
    def lookup(question: str) -> str:
        """Ask the lookup model."""
        return str(inner.invoke(question).content)

    class Rewriting(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(str(inner.invoke(query, config={"callbacks": run_manager.get_child()}).content))]

    chain = RunnableLambda(lambda x: lookup.invoke(x)) | Rewriting()
    chain.invoke("hi", config={"callbacks": [handler], "metadata": OUTER})
    assert rows(ledger)["support/u-outer/gpt-4o-mini"]["requests"] == 2
    assert handler._payers == {}


class SlowSync(GenericFakeChatModel):
    """Answers after ``delay`` seconds, without streaming."""

    delay: float = 0.0

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        time.sleep(self.delay)
        return super()._generate(*args, **kwargs)


def test_a_call_running_longer_than_a_lease_is_still_charged(tmp_path: Path) -> None:
    """Other calls starting while it runs do not make the handler forget it (the ledger takes a
    late commit of an expired reservation)."""
    ledger = make_ledger(tmp_path, lease_seconds=0.05)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", user="u")
    config: RunnableConfig = {"callbacks": [handler]}
    slow = SlowSync(messages=iter([reply()]), delay=0.3)
    GenericFakeChatModel(messages=iter([reply()])).invoke("warm", config=config)
    worker = threading.Thread(target=slow.invoke, args=("a long question",), kwargs={"config": config})
    worker.start()
    time.sleep(0.15)  # three leases: the slow call has not ended
    GenericFakeChatModel(messages=iter([reply()])).invoke("another call", config=config)
    worker.join()
    assert total(ledger, "requests") == 3
    assert handler._runs == {}


def test_a_chain_keeps_its_payer_while_model_calls_inside_it_go_on(tmp_path: Path) -> None:
    """Model runs inside a chain keep its payer in use: a chain longer than ten leases whose
    calls name another user is still charged to the chain's user."""
    handler = BudgetCallbackHandler(make_ledger(tmp_path, lease_seconds=0.05), model="gpt-4o", feature="f")
    model = GenericFakeChatModel(messages=iter([reply() for _ in range(5)])).with_config(
        metadata={"user": "service-account"}
    )

    def work(x: str) -> str:
        for i in range(5):  # five calls over 0.9 s: eighteen leases
            model.invoke(f"step {i}")
            time.sleep(0.18)
        return x

    RunnableLambda(work).invoke("go", config={"callbacks": [handler], "metadata": {"user": "alice"}})
    assert {k: v["requests"] for k, v in rows(handler.ledger).items()} == {"f/alice/gpt-4o": 5}
    assert handler._payers == {}
