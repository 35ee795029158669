"""BudgetCallbackHandler and AsyncBudgetCallbackHandler on real LangChain runs, checked against the ledger."""

from __future__ import annotations

import asyncio
import doctest
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_fakes import COUNTER, WEATHER_TOOL, tokens
from pydantic import Field

import langchain_tokenbudget.budget_callback as budget_callback
from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core import InvalidInputError, Usage, cost_of
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, UnknownModelError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.money import usd_to_nanos

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
MODES = ["invoke", "batch", "stream", "ainvoke", "abatch", "astream"]
ALL_TOKENS = "user_daily_tokens (all features)"


def usage(inp: int, out: int, *, cache_read: int = 0) -> dict[str, Any]:
    details = {"input_token_details": {"cache_read": cache_read}} if cache_read else {}
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out, **details}


def reply(text: str = "It is sunny.", inp: int = 40, out: int = 9, **kwargs: Any) -> AIMessage:
    return AIMessage(text, usage_metadata=usage(inp, out), **kwargs)


class MeteredChatModel(GenericFakeChatModel):
    """Replies carry ``usage_metadata`` (streams: on the last chunk, as OpenAI sends it).

    ``calls`` records every call that reached the model; ``fail`` makes it raise;
    ``running_totals=n`` streams Claude-style: ``n`` chunks each carrying the running total.
    """

    calls: list[str] = Field(default_factory=list)
    fail: bool = False
    running_totals: int = 0

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _next(self, how: str) -> AIMessage:
        self.calls.append(how)
        if self.fail:
            raise RuntimeError("provider down")
        message = next(self.messages)
        return message if isinstance(message, AIMessage) else AIMessage(message)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next("generate"))])

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next("stream")
        run_manager = kwargs.get("run_manager")
        for word in str(message.content).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(message.tool_calls)
        ]
        u = message.usage_metadata
        if self.running_totals and u:
            for k in range(1, self.running_totals + 1):
                out = u["output_tokens"] * k // self.running_totals
                meta = {"model_provider": "anthropic"}
                chunk = AIMessageChunk(
                    content="", usage_metadata=usage(u["input_tokens"], out), response_metadata=meta
                )
                if run_manager:
                    run_manager.on_llm_new_token("", chunk=ChatGenerationChunk(message=chunk))
                yield ChatGenerationChunk(message=chunk)
            return
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", tool_call_chunks=calls, usage_metadata=u)
        )


def metered(*replies: AIMessage | str, **kwargs: Any) -> MeteredChatModel:
    return MeteredChatModel(messages=iter(replies), **kwargs)


def make_ledger(tmp_path: Path, **policy: Any) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(**policy), spool_path=tmp_path / "spool.jsonl")


def rollup(ledger: Ledger) -> dict[str, dict[str, int]]:
    """Attribution rows of today, by ``feature/user/model``."""
    return {r.rollup_key: dict(r.values) for r in ledger.store.rollup([ledger.day()])}


FIELDS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cost_nanos", "estimated")


def summed(ledger: Ledger) -> dict[str, int]:
    """Today's attribution counters, summed over every row."""
    rows = rollup(ledger).values()
    return {k: sum(r.get(k, 0) for r in rows) for k in FIELDS}


def drive(model: Any, mode: str, config: dict[str, Any], n: int = 2, *, errors: bool = False) -> list[Any]:
    """Call ``model`` the way ``mode`` says (batch modes: ``n`` inputs, ``errors`` returned); the replies."""
    inputs = [f"What is the weather in city {i}?" for i in range(n)]

    async def run_async() -> list[Any]:
        if mode == "ainvoke":
            return [await model.ainvoke(inputs[0], config=config)]
        if mode == "abatch":
            return list(await model.abatch(inputs, config=config, return_exceptions=errors))
        return [[c async for c in model.astream(inputs[0], config=config)]]

    if mode == "invoke":
        return [model.invoke(inputs[0], config=config)]
    if mode == "batch":
        return list(model.batch(inputs, config=config, return_exceptions=errors))
    if mode == "stream":
        return [list(model.stream(inputs[0], config=config))]
    return asyncio.run(run_async())


def calls_in(mode: str, n: int = 2) -> int:
    return n if mode.endswith("batch") else 1


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", MODES)
def test_every_entry_point_commits_the_reported_usage(tmp_path: Path, handler_class: type, mode: str) -> None:
    ledger = make_ledger(tmp_path)
    model = metered(*[reply(inp=40 + i, out=9 + i) for i in range(2)])
    drive(model, mode, {"callbacks": [handler_class(ledger, model="gpt-4o", feature="chat", user="u-1")]})
    n = calls_in(mode)
    assert len(model.calls) == n
    totals = summed(ledger)
    expected = sum((Usage(input_tokens=40 + i, output_tokens=9 + i) for i in range(n)), Usage(requests=0))
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (
        n,
        expected.input_tokens,
        expected.output_tokens,
    )
    assert totals["estimated"] == 0
    per_call = [
        usd_to_nanos(cost_of(Usage(input_tokens=40 + i, output_tokens=9 + i), "gpt-4o")) for i in range(n)
    ]
    assert totals["cost_nanos"] == sum(per_call)
    assert set(rollup(ledger)) == {"chat/u-1/gpt-4o"}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_stops_the_call_before_the_model_runs(
    tmp_path: Path, handler_class: type, mode: str
) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)  # gpt-4o may answer 16,384 tokens: never fits
    model = metered(reply(), reply())
    with pytest.raises(BudgetExceededError) as refused:
        drive(model, mode, {"callbacks": [handler_class(ledger, model="gpt-4o", user="u-1")]})
    assert model.calls == []
    assert refused.value.budget == ALL_TOKENS
    assert summed(ledger)["requests"] == 0
    assert ledger.state(user="u-1").headroom[ALL_TOKENS] == 1_000


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_refusal_stops_sync_calls_made_on_an_event_loop_thread(
    tmp_path: Path, handler_class: type
) -> None:
    """Sync ``invoke`` inside a coroutine (a notebook cell): LangChain's sync dispatcher, a running loop."""
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    model = metered(reply())
    with pytest.raises(BudgetExceededError):
        model.invoke("hello", config={"callbacks": [handler_class(ledger, model="gpt-4o", user="u-1")]})
    assert model.calls == []


def test_langchain_swallows_a_plain_async_handlers_refusal_in_sync_code() -> None:
    """Why AsyncBudgetCallbackHandler answers sync dispatch with a sync twin (fails if LangChain changes)."""

    class Refuses(AsyncCallbackHandler):
        raise_error = True

        async def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            raise BudgetExceededError(budget="b", scope="s", limit=1, used=1, requested=1)

    model = metered(reply())
    model.invoke("hello", config={"callbacks": [Refuses()]})
    assert model.calls == ["generate"]
    with pytest.raises(BudgetExceededError):
        asyncio.run(metered(reply()).ainvoke("hello", config={"callbacks": [Refuses()]}))


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", MODES)
def test_a_failed_call_releases_its_reservation(tmp_path: Path, handler_class: type, mode: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000_000)
    model = metered(fail=True)
    config = {"callbacks": [handler_class(ledger, model="gpt-4o", user="u-1")]}
    if mode.endswith("batch"):  # every call runs to its end (raising would cancel the other abatch call)
        results = drive(model, mode, config, errors=True)
        assert [str(e) for e in results] == ["provider down"] * 2
    else:
        with pytest.raises(RuntimeError, match="provider down"):
            drive(model, mode, config)
    assert len(model.calls) == calls_in(mode)
    assert summed(ledger)["requests"] == 0
    assert ledger.state(user="u-1").headroom[ALL_TOKENS] == 1_000_000  # nothing spent, nothing held


def test_a_stream_left_early_commits_an_estimate_of_what_was_sent(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000_000)
    model = metered(reply("one two three four", inp=40, out=9))
    stream = model.stream(
        "hello", config={"callbacks": [BudgetCallbackHandler(ledger, model="gpt-4o", user="u")]}
    )
    first = next(stream)
    stream.close()  # the consumer stops reading: LangChain reports an error with the partial reply
    totals = summed(ledger)
    assert (totals["requests"], totals["estimated"]) == (1, 1)
    assert totals["input_tokens"] == tokens([HumanMessage("hello")])
    assert totals["output_tokens"] == COUNTER.count(str(first.content))
    spent = totals["input_tokens"] + totals["output_tokens"]
    assert ledger.state(user="u").headroom[ALL_TOKENS] == 1_000_000 - spent


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_reply_without_usage_is_estimated_and_flagged(tmp_path: Path, handler_class: type) -> None:
    ledger = make_ledger(tmp_path)
    model = GenericFakeChatModel(messages=iter(["It is sunny and mild today."]))
    model.invoke("hello", config={"callbacks": [handler_class(ledger, model="gpt-4o")]})
    totals = summed(ledger)
    assert totals["estimated"] == 1
    assert totals["input_tokens"] == tokens([HumanMessage("hello")])
    assert totals["output_tokens"] == COUNTER.count("It is sunny and mild today.")


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_claude_running_totals_are_charged_once_not_summed(
    tmp_path: Path, handler_class: type, mode: str
) -> None:
    ledger = make_ledger(tmp_path)
    model = metered(reply(inp=120, out=30), running_totals=3)
    [chunks] = drive(model, mode, {"callbacks": [handler_class(ledger, model="claude-haiku-4-5")]})
    aggregated = sum(chunks[1:], chunks[0]).usage_metadata
    assert aggregated["output_tokens"] == 10 + 20 + 30  # LangChain adds the running totals up
    assert aggregated["input_tokens"] == 3 * 120
    totals = summed(ledger)
    assert (totals["input_tokens"], totals["output_tokens"], totals["estimated"]) == (120, 30, 0)


def test_the_payer_comes_from_metadata_tags_attribute_or_defaults(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", feature="default-f", user="default-u")

    def call(**config: Any) -> None:
        metered(reply()).invoke("hi", config={"callbacks": [handler], **config})

    call(metadata={"tokenbudget_feature": "search", "feature": "ignored", "tokenbudget_user": "u-1"})
    call(metadata={"feature": "faq", "user_id": 42})
    call(tags=["feature:summaries", "user:u-3", "unrelated"])
    call()
    with attribute(feature="outer", user="u-9"):  # an enclosing attribute() block wins (the core's rule)
        call(metadata={"feature": "inner", "user": "inner"})
    assert set(rollup(ledger)) == {
        "search/u-1/gpt-4o",
        "faq/42/gpt-4o",
        "summaries/u-3/gpt-4o",
        "default-f/default-u/gpt-4o",
        "outer/u-9/gpt-4o",
    }


class RecordingLedger(Ledger):
    reservations: list[Reservation]

    def reserve(self, **kwargs: Any) -> Reservation:
        r = super().reserve(**kwargs)
        self.reservations = [*getattr(self, "reservations", []), r]
        return r


def test_the_reservation_counts_tools_and_honours_max_tokens(tmp_path: Path) -> None:
    ledger = RecordingLedger(
        "memory://", policy=BudgetPolicy(user_daily_tokens=1_000), spool_path=tmp_path / "s"
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", user="u")
    model = metered(reply(), reply()).bind(tools=[WEATHER_TOOL], max_completion_tokens=50)
    model.invoke("Weather in Oslo?", config={"callbacks": [handler]})
    [r] = ledger.reservations
    assert r.input_tokens == tokens([HumanMessage("Weather in Oslo?")], [WEATHER_TOOL])
    assert r.input_tokens > tokens([HumanMessage("Weather in Oslo?")])
    assert r.max_output_tokens == 50
    handler.max_output_tokens = 990  # without max_tokens in the call, the handler's default is reserved
    with pytest.raises(BudgetExceededError):
        metered(reply()).invoke("Weather in Oslo?", config={"callbacks": [handler]})


def test_settling_a_run_twice_charges_it_once(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000_000)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", user="u")
    run_id = uuid.uuid4()
    handler.on_chat_model_start(
        {}, [[HumanMessage("hi")]], run_id=run_id, invocation_params={"max_tokens": 10}
    )
    result = LLMResult(generations=[[ChatGeneration(message=reply(inp=5, out=3))]])
    handler.on_llm_end(result, run_id=run_id)
    handler.on_llm_end(result, run_id=run_id)
    handler.on_llm_error(RuntimeError("late"), run_id=run_id)
    assert summed(ledger)["requests"] == 1
    assert ledger.state(user="u").headroom[ALL_TOKENS] == 1_000_000 - 8


def test_a_call_with_several_choices_is_charged_once(tmp_path: Path) -> None:
    """With ``n`` > 1, langchain-openai puts the whole call's usage on every choice."""
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o")
    run_id = uuid.uuid4()
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, invocation_params={"n": 2})
    choices = [ChatGeneration(message=reply(text, inp=5, out=6)) for text in ("Sunny.", "Warm.")]
    handler.on_llm_end(LLMResult(generations=[choices]), run_id=run_id)
    totals = summed(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (1, 5, 6)


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_completion_models_are_budgeted_too(tmp_path: Path, handler_class: type, mode: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    llm = FakeListLLM(responses=["Paris is sunny."])
    handler = handler_class(ledger, model="gpt-4o", user="u", max_output_tokens=20)
    assert drive(llm, mode, {"callbacks": [handler]}) == ["Paris is sunny."]
    totals = summed(ledger)
    assert (totals["requests"], totals["estimated"]) == (1, 1)
    assert totals["input_tokens"] == COUNTER.count("What is the weather in city 0?")
    assert totals["output_tokens"] == COUNTER.count("Paris is sunny.")
    handler.max_output_tokens = 1_000
    with pytest.raises(BudgetExceededError):
        drive(llm, mode, {"callbacks": [handler]})
    assert summed(ledger)["requests"] == 1


def test_options_and_unnamed_models_fail_loudly_before_any_call(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    with pytest.raises(InvalidInputError, match="ledger"):
        BudgetCallbackHandler("memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="feature"):
        BudgetCallbackHandler(ledger, feature="")
    with pytest.raises(InvalidInputError, match="max_output_tokens"):
        AsyncBudgetCallbackHandler(ledger, max_output_tokens=-1)
    with pytest.raises(UnknownModelError):
        BudgetCallbackHandler(ledger, model="gpt-99")
    model = metered(reply())
    with pytest.raises(InvalidInputError, match="does not name its model"):
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(ledger)]})
    assert model.calls == []


def test_claude_tool_use_replies_in_the_history_can_be_counted(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "toolu_1"}
    blocks = [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    claude_turn = AIMessage(blocks, tool_calls=[call])  # type: ignore[arg-type]
    history = [HumanMessage("Weather in Oslo?"), claude_turn]
    metered(reply()).invoke(history, config={"callbacks": [BudgetCallbackHandler(ledger, model="gpt-4o")]})


def test_docstring_examples_run() -> None:
    result = doctest.testmod(budget_callback, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
