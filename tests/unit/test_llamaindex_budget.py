"""LlamaIndex LLM calls priced, limited and attributed by the core ledger.

A real LlamaIndex LLM (a ``MockLLM`` subclass whose responses carry an OpenAI-shaped ``raw``)
is driven through the callback manager (``BudgetCallbackHandler``: enforces) and the
instrumentation dispatcher (``CostEventHandler``: records only).
"""

from __future__ import annotations

import contextlib
import doctest
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

import llamaindex_tokenbudget
from llamaindex_tokenbudget import (
    BudgetCallbackHandler,
    CostEventHandler,
    TokenBudgetChatMemory,
    budget_callback,
    cost_event_handler,
    to_core_messages,
)
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, UnknownModelError
from tokenbudget_core.estimating import unknown_model_counter
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.streams import estimate_output_tokens

MODEL = "gpt-4o-mini"
COUNTER = TokenCounter.for_model(MODEL)
REPORTED = Usage(input_tokens=1200, output_tokens=40, cache_read_tokens=1000)
MAX_OUTPUT = 300  # the num_output the fakes declare (not LlamaIndex's placeholder 256)
QUESTION = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello?")]
CHUNKS = ["Hello", " there,", " friend."]


def openai_raw(usage: Usage | None, *, chunk: bool = False) -> dict[str, Any]:
    """An OpenAI Chat Completions payload (a stream chunk carries usage only when last)."""
    raw: dict[str, Any] = {"object": "chat.completion.chunk" if chunk else "chat.completion", "model": MODEL}
    if usage is not None:
        raw["usage"] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        }
    return raw


class ProviderLLM(MockLLM):
    """Answers like an OpenAI chat model: ``raw`` carries the usage; records every call it served."""

    model: str = MODEL
    fail: bool = False
    keep_usage: bool = True
    calls: list[str] = Field(default_factory=list, exclude=True)
    probe: Any = Field(default=None, exclude=True)
    """Called at each call, while its reservation is held."""

    def __init__(self, *, fail: bool = False, keep_usage: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail, self.keep_usage = fail, keep_usage

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, num_output=MAX_OUTPUT, is_chat_model=True)

    def _serve(self, how: str) -> None:
        self.calls.append(how)
        if self.probe is not None:
            self.probe()
        if self.fail:
            raise RuntimeError("the provider is down")

    def _response(self, how: str) -> ChatResponse:
        self._serve(how)
        raw = openai_raw(REPORTED if self.keep_usage else None)
        return ChatResponse(message=ChatMessage(role="assistant", content="".join(CHUNKS)), raw=raw)

    def _chunks(self) -> Iterator[ChatResponse]:
        for i, delta in enumerate(CHUNKS):
            last = i == len(CHUNKS) - 1
            raw = openai_raw(REPORTED if last and self.keep_usage else None, chunk=True)
            text = "".join(CHUNKS[: i + 1])
            yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta=delta, raw=raw)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._response("chat")

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._response("achat")

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Iterator[ChatResponse]:
        self._serve("stream_chat")
        return self._chunks()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> AsyncIterator[ChatResponse]:
        self._serve("astream_chat")

        async def gen() -> AsyncIterator[ChatResponse]:
            for response in self._chunks():
                yield response

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._serve("complete")
        return CompletionResponse(text="".join(CHUNKS), raw=openai_raw(REPORTED))


class DelegatingLLM(MockLLM):
    """``CustomLLM.chat`` calls ``complete``: two nested LLM events for one provider call."""

    model: str = MODEL
    probe: Any = Field(default=None, exclude=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, num_output=MAX_OUTPUT)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.probe is not None:
            self.probe()
        return CompletionResponse(text="".join(CHUNKS), raw=openai_raw(REPORTED))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool.jsonl")


@pytest.fixture
def on_root() -> Iterator[Callable[[BaseEventHandler], None]]:
    """Register event handlers on the root dispatcher; they are removed after the test."""
    root, added = get_dispatcher(), []

    def add(handler: BaseEventHandler) -> None:
        root.add_event_handler(handler)
        added.append(handler)

    yield add
    for handler in added:
        root.event_handlers.remove(handler)


def totals(ledger: Ledger) -> dict[str, Counter[str]]:
    """Today's rollup per ``feature/user/model`` key."""
    rows: dict[str, Counter[str]] = {}
    for row in ledger.store.rollup([ledger.day()]):
        rows.setdefault(row.rollup_key, Counter()).update(row.values)
    return rows


def assert_charged(ledger: Ledger, usage: Usage, *, key: str = "support/u-1/gpt-4o-mini", n: int = 1) -> None:
    """One row, ``n`` requests, each with exactly ``usage``, priced with ``cost_of``."""
    assert list(totals(ledger)) == [key]
    row = totals(ledger)[key]
    assert row["requests"] == n
    assert row["input_tokens"] == n * usage.input_tokens
    assert row["output_tokens"] == n * usage.output_tokens
    assert row["cache_read_tokens"] == n * usage.cache_read_tokens
    assert row["estimated"] == (n if usage.estimated else 0)
    assert row["cost_nanos"] == n * usd_to_nanos(cost_of(usage, MODEL)) > 0


def make_llm(
    kind: str, ledger: Ledger, on_root: Callable[[BaseEventHandler], None], **kw: Any
) -> ProviderLLM:
    if kind == "callback":
        handler = BudgetCallbackHandler(ledger, feature="support", user="u-1")
        return ProviderLLM(callback_manager=CallbackManager([handler]), **kw)
    on_root(CostEventHandler(ledger=ledger, feature="support", user="u-1"))
    return ProviderLLM(**kw)


def engine(llm: ProviderLLM) -> SimpleChatEngine:
    # An explicit memory: the default one opens an aiosqlite database that is never closed.
    return SimpleChatEngine.from_defaults(llm=llm, memory=TokenBudgetChatMemory(model=MODEL))


async def run(how: str, llm: ProviderLLM) -> None:
    if how == "chat":
        llm.chat(QUESTION)
    elif how == "achat":
        await llm.achat(QUESTION)
    elif how == "stream_chat":
        assert [r.delta for r in llm.stream_chat(QUESTION)] == CHUNKS
    elif how == "astream_chat":
        assert [r.delta async for r in await llm.astream_chat(QUESTION)] == CHUNKS
    elif how == "complete":
        llm.complete("Hello?")
    elif how == "engine.chat":
        engine(llm).chat("Hello?")
    else:
        response = engine(llm).stream_chat("Hello?")
        assert "".join(response.response_gen) == "".join(CHUNKS)


KINDS = ["callback", "events"]
CALLS = ["chat", "achat", "stream_chat", "astream_chat", "complete", "engine.chat", "engine.stream_chat"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", CALLS)
async def test_reported_usage_is_charged_at_its_price(
    kind: str, how: str, ledger: Ledger, on_root: Any
) -> None:
    llm = make_llm(kind, ledger, on_root)
    await run(how, llm)
    assert len(llm.calls) == 1
    assert_charged(ledger, REPORTED)


@pytest.mark.parametrize("kind", KINDS)
async def test_without_reported_usage_the_charge_is_counted_and_flagged(
    kind: str, ledger: Ledger, on_root: Any
) -> None:
    llm = make_llm(kind, ledger, on_root, keep_usage=False)
    await run("stream_chat", llm)
    counted = int(COUNTER.count_messages(to_core_messages(QUESTION)))
    assert_charged(
        ledger, Usage(input_tokens=counted, output_tokens=int(COUNTER.count("".join(CHUNKS))), estimated=True)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_the_payer_is_the_attribution_where_the_call_started(kind: str, ledger: Ledger, on_root: Any) -> None:
    llm = make_llm(kind, ledger, on_root)
    with attribute(feature="billing", user="u-9"):  # wins over the handler's defaults
        stream = llm.stream_chat(QUESTION)
    consumer = threading.Thread(target=lambda: list(stream))  # read elsewhere, after the block
    consumer.start()
    consumer.join()
    assert_charged(ledger, REPORTED, key="billing/u-9/gpt-4o-mini")


def test_reservation_is_the_counted_worst_case_while_the_call_runs(ledger: Ledger) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("1"))
    held: list[Decimal | int] = []
    llm = ProviderLLM(callback_manager=CallbackManager([BudgetCallbackHandler(ledger)]))
    llm.probe = lambda: held.append(ledger.state().headroom["daily_usd"])
    llm.chat(QUESTION)
    counted = int(COUNTER.count_messages(to_core_messages(QUESTION)))
    worst = cost_of(Usage(input_tokens=counted, output_tokens=MAX_OUTPUT), MODEL)
    assert held == [Decimal("1") - worst]
    assert ledger.state().headroom["daily_usd"] == Decimal("1") - cost_of(REPORTED, MODEL)


@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat", "complete", "engine.chat"])
async def test_a_call_over_budget_is_refused_before_it_is_sent(how: str, ledger: Ledger) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("0.0001"))  # less than one call's worst case
    llm = ProviderLLM(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, user="u-1")]))
    with pytest.raises(BudgetExceededError) as caught:
        await run(how, llm)
    assert llm.calls == []
    assert caught.value.budget == "daily_usd"
    assert totals(ledger) == {}
    assert ledger.state().headroom["daily_usd"] == Decimal("0.0001")  # nothing left reserved


def test_settings_callback_manager_enforces_on_new_llms(ledger: Ledger) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("0.0005"))
    previous = Settings._callback_manager
    Settings.callback_manager = CallbackManager(
        [BudgetCallbackHandler(ledger, feature="support", user="u-1")]
    )
    try:
        llm = ProviderLLM()  # takes the handlers of Settings.callback_manager
        for _ in range(3):  # 3 x $0.000129 spent + one worst case ($0.000156) still fit in $0.0005
            llm.chat(QUESTION)
        with pytest.raises(BudgetExceededError):
            llm.chat(QUESTION)
    finally:
        Settings._callback_manager = previous
    assert len(llm.calls) == 3
    assert_charged(ledger, REPORTED, n=3)


@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat"])
async def test_a_failed_call_releases_its_reservation(how: str, ledger: Ledger) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("1"))
    llm = ProviderLLM(fail=True, callback_manager=CallbackManager([BudgetCallbackHandler(ledger)]))
    held: list[Decimal | int] = []
    llm.probe = lambda: held.append(ledger.state().headroom["daily_usd"])
    with pytest.raises(RuntimeError, match="provider is down"):
        await run(how, llm)
    assert held[0] < Decimal("1")  # it was reserved during the call...
    assert ledger.state().headroom["daily_usd"] == Decimal("1")  # ...and given back
    assert totals(ledger) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_an_abandoned_stream_charges_what_was_sent(kind: str, ledger: Ledger, on_root: Any) -> None:
    llm = make_llm(kind, ledger, on_root)
    stream = llm.stream_chat(QUESTION)
    next(stream)
    stream.close()
    counted = int(COUNTER.count_messages(to_core_messages(QUESTION)))
    streamed = int(COUNTER.count(CHUNKS[0]))  # the chunk handed out before the consumer let go
    assert_charged(ledger, Usage(input_tokens=counted, output_tokens=streamed, estimated=True))


@pytest.mark.parametrize("kind", KINDS)
def test_nested_llm_events_are_one_provider_call(kind: str, ledger: Ledger, on_root: Any) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("1"))
    held: list[Decimal | int] = []
    if kind == "callback":
        llm = DelegatingLLM(
            callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="support")])
        )
    else:
        on_root(CostEventHandler(ledger=ledger, feature="support"))
        llm = DelegatingLLM()
    llm.probe = lambda: held.append(ledger.state().headroom["daily_usd"])
    with attribute(user="u-1"):
        llm.chat(QUESTION)  # CustomLLM.chat -> complete
    assert_charged(ledger, REPORTED)
    if kind == "callback":  # while the call runs, only the inner (complete) event holds a reservation
        assert llm.messages_to_prompt is not None
        prompt = llm.messages_to_prompt(QUESTION)
        inner = cost_of(Usage(input_tokens=int(COUNTER.count(prompt)), output_tokens=MAX_OUTPUT), MODEL)
        assert held == [Decimal("1") - inner]


def test_the_model_comes_from_the_handler_or_the_llm(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger, model="gpt-4o")
    ProviderLLM(callback_manager=CallbackManager([handler])).chat(QUESTION)
    assert [key.rsplit("/", 1)[1] for key in totals(ledger)] == ["gpt-4o"]
    unnamed = MockLLM(callback_manager=CallbackManager([BudgetCallbackHandler(ledger)]))
    with pytest.raises(InvalidInputError, match="does not name its model") as caught:
        unnamed.chat(QUESTION)
    assert "model='gpt-4o'" in str(caught.value)
    with pytest.raises(InvalidInputError, match="ledger"):
        BudgetCallbackHandler(object())  # type: ignore[arg-type]


def test_llamaindex_lets_on_event_start_exceptions_stop_a_call() -> None:
    """The mechanism the budget relies on, shown with LlamaIndex's own TokenCountingHandler."""
    llm = ProviderLLM(callback_manager=CallbackManager([TokenCountingHandler(token_budget=1)]))
    with pytest.raises(ValueError, match="Token budget exceeded"):
        llm.chat(QUESTION)  # counted after the call: its end raises, the call was made
    with pytest.raises(ValueError, match="Token budget exceeded"):
        llm.chat(QUESTION)  # its start raises: the call is not made
    assert llm.calls == ["chat"]


class RefusingEventHandler(BaseEventHandler):
    """Tries to enforce the budget from the dispatcher, the way that does not work."""

    ledger: Ledger
    refusals: list[BudgetExceededError] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            try:
                self.ledger.reserve(model=MODEL, input_tokens=10, max_output_tokens=MAX_OUTPUT)
            except BudgetExceededError as e:
                self.refusals.append(e)
                raise


def test_the_dispatcher_swallows_handler_exceptions_so_it_cannot_enforce(
    ledger: Ledger, on_root: Any
) -> None:
    ledger.policy = BudgetPolicy(daily_usd=Decimal("0.0001"))
    refusing = RefusingEventHandler(ledger=ledger)
    on_root(refusing)
    on_root(CostEventHandler(ledger=ledger, feature="support", user="u-1"))
    llm = ProviderLLM()
    llm.chat(QUESTION)
    llm.chat(QUESTION)
    assert len(refusing.refusals) == 2  # BudgetExceededError was raised, and dropped
    assert llm.calls == ["chat", "chat"]  # the calls went out anyway
    assert_charged(ledger, REPORTED, n=2)  # recorded beyond the limit
    assert sum(r["cost_nanos"] for r in totals(ledger).values()) > usd_to_nanos(Decimal("0.0001"))


def test_an_event_delivered_twice_is_charged_once(
    ledger: Ledger, on_root: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = CostEventHandler(ledger=ledger, feature="support", user="u-1")
    on_root(handler)
    on_root(handler)
    llm = ProviderLLM()
    with caplog.at_level(logging.WARNING, logger=cost_event_handler.__name__):
        llm.chat(QUESTION)
        llm.stream_chat(QUESTION).close()  # never iterated: no end event
        list(llm.stream_chat(QUESTION))
    assert_charged(ledger, REPORTED, n=2)
    assert caplog.records == []


def test_a_call_of_a_model_the_registry_does_not_know_is_recorded_unpriced_and_logged_once(
    tmp_path: Path, on_root: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl", registry=ModelRegistry())  # own
    on_root(CostEventHandler(ledger=ledger, feature="support", user="u-1"))
    llm = ProviderLLM()
    llm.model = "acme-7b"  # the LLM's own model, known only at call time: the handler cannot refuse it
    with caplog.at_level(logging.ERROR, logger=cost_event_handler.__name__):
        llm.chat(QUESTION)
        llm.chat(QUESTION)
    row = totals(ledger)["support/u-1/acme-7b"]
    assert (row["input_tokens"], row["output_tokens"]) == (2 * 1200, 2 * 40)  # the usage is kept
    assert (row["cost_nanos"], row["unpriced"], row["requests"]) == (0, 2, 2)  # unpriced, never $0
    [logged] = caplog.records  # once per model, not per call
    assert "'acme-7b' is not in the ledger's registry" in logged.getMessage()
    assert "register" in logged.getMessage()

    ledger.registry.register("acme-7b", provider="openai", canonical=MODEL)  # priced from now on
    llm.chat(QUESTION)
    row = totals(ledger)["support/u-1/acme-7b"]
    assert (row["unpriced"], row["requests"]) == (2, 3)
    assert row["cost_nanos"] == usd_to_nanos(cost_of(REPORTED, MODEL))


def test_an_unknown_model_without_reported_usage_is_recorded_as_a_flagged_estimate(
    ledger: Ledger, on_root: Any
) -> None:
    on_root(CostEventHandler(ledger=ledger, feature="support", user="u-1"))
    llm = ProviderLLM(keep_usage=False)
    llm.model = "acme-7b"
    list(llm.stream_chat(QUESTION))
    unnamed = MockLLM(max_tokens=3)  # names no model at all: recorded under its class
    unnamed.complete("Say hi")
    rows = totals(ledger)
    row = rows["support/u-1/acme-7b"]
    estimate = unknown_model_counter("acme-7b")
    assert row["output_tokens"] == estimate_output_tokens("".join(CHUNKS), counter=estimate)
    assert row["input_tokens"] == estimate.count_messages(to_core_messages(QUESTION))
    assert (row["estimated"], row["unpriced"], row["cost_nanos"]) == (1, 1, 0)
    unnamed_row = rows[f"support/u-1/{quote('unnamed:MockLLM', safe='')}"]  # ids are encoded in keys
    reply = estimate_output_tokens("text text text", counter=unknown_model_counter("unnamed:MockLLM"))
    assert (unnamed_row["output_tokens"], unnamed_row["estimated"], unnamed_row["unpriced"]) == (reply, 1, 1)


def test_the_ledger_records_an_unknown_model_unpriced_only_when_asked(ledger: Ledger) -> None:
    with pytest.raises(UnknownModelError):
        ledger.record(REPORTED, model="acme-7b")
    with pytest.raises(InvalidInputError, match="unknown_model"):
        ledger.record(REPORTED, model="acme-7b", unknown_model="ignore")  # type: ignore[arg-type]
    charge = ledger.record(REPORTED, model="acme-7b", unknown_model="unpriced")
    assert (charge.applied, charge.cost_usd) == (True, None)
    assert totals(ledger)["//acme-7b"]["unpriced"] == 1  # no feature, no user


def test_public_names_and_docstring_examples() -> None:
    assert {"BudgetCallbackHandler", "CostEventHandler"} <= set(llamaindex_tokenbudget.__all__)
    for module in (budget_callback, cost_event_handler):
        result = doctest.testmod(module)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__


def test_a_call_with_a_cache_point_reserves_the_cost_of_writing_the_prompt_cache() -> None:
    """A ``CachePoint`` block (LlamaIndex's Anthropic cache_control) is a marker, not content: the
    input counts the same, and the worst case prices it at the cache-write rate (2x input for a
    1-hour write on Claude), so a budget that holds the plain call refuses the marked one."""
    from llama_index.core.base.llms.types import CacheControl, CachePoint, TextBlock

    claude = "claude-sonnet-4-5"
    text = "A long, stable instruction block. " * 40
    plain = [ChatMessage(role="user", blocks=[TextBlock(text=text)])]
    point = CachePoint(cache_control=CacheControl(type="ephemeral", ttl="1h"))
    marked = [ChatMessage(role="user", blocks=[TextBlock(text=text), point])]
    tokens = int(TokenCounter.for_model(claude).count_messages(to_core_messages(plain)))
    assert to_core_messages(marked) == to_core_messages(plain)
    worst_plain = cost_of(Usage(input_tokens=tokens, output_tokens=MAX_OUTPUT), claude)
    policy = BudgetPolicy(user_daily_usd=str(worst_plain * Decimal("1.2")))

    def served(messages: list[ChatMessage]) -> list[str]:
        ledger = Ledger("memory://", policy=policy)
        llm = ProviderLLM(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, model=claude)]))
        with contextlib.suppress(BudgetExceededError):
            llm.chat(messages)
        return llm.calls

    assert served(plain) == ["chat"]
    assert served(marked) == []  # refused before the call: its worst case is 2x the input
