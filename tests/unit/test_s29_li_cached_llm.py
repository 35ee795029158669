"""LlamaIndex ``CachedLLM`` (review s29 cache matching, findings 4 and 5).

4. A streamed answer is stored only when no chunk said it was cut off or failed: OpenAI's stream
   with ``stream_options={"include_usage": True}`` closes with a usage-only chunk (``choices``
   empty) after the one saying ``finish_reason: "length"``; only that last chunk was read, and
   the cut-off answer was cached and served again. Every chunk's stop reason is read now, for
   sync and async, chat and completion streams.
5. What a hit saved is priced (and, for a ``RoutedLLM``'s answer, recorded) on the model that
   answered, not on ``CachedLLM(model=)``: around a ``RoutedLLM`` whose small tier answered, a
   hit reported the large model's price (16x) on the large model's row. Leaving ``model=`` out
   around a ``RoutedLLM`` (its metadata names no single model) with a ledger cached nothing.

Real LlamaIndex LLMs (``CustomLLM``s yielding what the provider integrations yield), the real
``RoutedLLM``, caches and memory ledgers, read back with ``build_report``.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import PrivateAttr

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, RoutedLLM
from tokenbudget_core import attribute
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

ACME = CacheScope(tenant="acme")
MESSAGES = [ChatMessage(role="user", content="How do I reset the router? List all steps.")]
PROMPT = "How do I reset the router? List all steps."
STREAMS = ["stream_chat", "stream_complete", "astream_chat", "astream_complete"]


def openai_chunks(finish: str, *, include_usage: bool = True) -> list[dict[str, Any]]:
    """A Chat Completions stream as the API sends it (``llama-index-llms-openai`` yields one
    response per chunk, ``raw=`` the chunk); with ``include_usage`` it closes with a chunk of
    usage only."""
    chunks: list[dict[str, Any]] = [
        {"object": "chat.completion.chunk", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "Step 1: unplug. Step 2: "}, "finish_reason": None}]},
        {"object": "chat.completion.chunk", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "wait"}, "finish_reason": finish}]},
    ]  # fmt: skip
    if include_usage:
        chunks.append(
            {"object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}
        )  # fmt: skip
    return chunks


def anthropic_events(stop: str | None) -> list[dict[str, Any]]:
    """An Anthropic Messages stream's text deltas and, with ``stop``, its ``message_delta``."""
    events: list[dict[str, Any]] = [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Step 1: unplug. "},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Step 2: wait"}},
    ]
    if stop is not None:
        events.append(
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 8}}
        )
    return events


def _text(raw: dict[str, Any]) -> str:
    choices = raw.get("choices")
    if choices:
        return str(choices[0]["delta"].get("content") or "")
    delta = raw.get("delta")
    return str(delta.get("text") or "") if isinstance(delta, dict) else ""


class Streamer(CustomLLM):
    """Streams the given raw chunks (``CustomLLM`` serves chat through ``stream_complete``)."""

    chunks: list[dict[str, Any]]
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    def _responses(self) -> CompletionResponseGen:
        self._calls += 1
        text = ""
        for raw in self.chunks:
            delta = _text(raw)
            text += delta
            yield CompletionResponse(text=text, delta=delta, raw=raw)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        *_, last = self._responses()
        return last

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._responses()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> CompletionResponseAsyncGen:
            for response in self._responses():
                yield response

        return gen()


def stream(llm: CachedLLM, how: str) -> Any:
    """The last chunk of a streamed call read to its end."""
    if how == "stream_chat":
        return list(llm.stream_chat(MESSAGES))[-1]
    if how == "stream_complete":
        return list(llm.stream_complete(PROMPT))[-1]

    async def read() -> Any:
        if how == "astream_chat":
            return [c async for c in await llm.astream_chat(MESSAGES)][-1]
        return [c async for c in await llm.astream_complete(PROMPT)][-1]

    return asyncio.run(read())


# -- 4. every chunk's stop reason ---------------------------------------------------------------


@pytest.mark.parametrize("how", STREAMS)
def test_a_stream_cut_off_before_its_usage_only_closing_chunk_is_never_cached(how: str) -> None:
    inner = Streamer(chunks=openai_chunks("length"))
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    stream(llm, how)
    second = stream(llm, how)
    assert inner.calls == 2  # the cut-off answer was not served again
    assert "cache_hit" not in second.additional_kwargs


@pytest.mark.parametrize("how", STREAMS)
@pytest.mark.parametrize("finish", ["content_filter", "error"])
def test_a_stream_that_failed_on_any_chunk_is_never_cached(how: str, finish: str) -> None:
    inner = Streamer(chunks=openai_chunks(finish))
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    stream(llm, how)
    stream(llm, how)
    assert inner.calls == 2


@pytest.mark.parametrize("how", STREAMS)
def test_a_complete_stream_with_a_usage_only_closing_chunk_is_cached_and_priced(how: str) -> None:
    """The control: stopped normally, it is cached, and what a hit saves is priced from the
    closing chunk's usage (20 in / 8 out on gpt-4o-mini)."""
    inner = Streamer(chunks=openai_chunks("stop"))
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    stream(llm, how)
    hit = stream(llm, how)
    assert inner.calls == 1
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == "0.0000078"


@pytest.mark.parametrize("how", STREAMS)
@pytest.mark.parametrize(
    ("events", "cached"),
    [
        (anthropic_events("end_turn"), True),
        (anthropic_events("max_tokens"), False),  # the reason is in the message_delta's delta
        (anthropic_events(None), False),  # the integration never passed the stop: not known
    ],
    ids=["end_turn", "max_tokens", "text_deltas_only"],
)
def test_an_anthropic_stream_is_cached_only_when_an_event_says_it_ended_normally(
    how: str, events: list[dict[str, Any]], cached: bool
) -> None:
    inner = Streamer(chunks=events)
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    stream(llm, how)
    stream(llm, how)
    assert inner.calls == (1 if cached else 2)


def test_an_openai_stream_naming_no_stop_reason_at_all_is_not_cached() -> None:
    """Every Chat Completions stream names its finish reason in some chunk: one that did not
    pass it on cannot be told complete."""
    chunks = [
        {**c, "choices": [{**c["choices"][0], "finish_reason": None}]} for c in openai_chunks("stop")[:2]
    ]
    inner = Streamer(chunks=chunks)
    llm = CachedLLM(inner, ExactCache(), scope=ACME)
    stream(llm, "stream_chat")
    stream(llm, "stream_chat")
    assert inner.calls == 2


# -- 5. a hit priced and recorded on the model that answered ------------------------------------


class Tier(CustomLLM):
    """A tier answering as its model, 1000 tokens in and 1000 out (raw as OpenAI's)."""

    _name: str = PrivateAttr(default="")
    _calls: int = PrivateAttr(default=0)

    def __init__(self, name: str, **data: Any) -> None:
        super().__init__(**data)
        self._name = name

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self._name, is_chat_model=False)

    def _response(self) -> CompletionResponse:
        self._calls += 1
        raw = {"model": self._name, "choices": [{"finish_reason": "stop"}],
               "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}  # fmt: skip
        return CompletionResponse(text=f"answered by {self._name}", raw=raw)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._response()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self._response()


SMALL = "0.00075"  # gpt-4o-mini: 1000 in at $0.15/M + 1000 out at $0.60/M
LARGE = "0.0125"  # gpt-4o: 1000 in at $2.50/M + 1000 out at $10/M
CALLS = ["chat", "complete", "stream_chat", "achat", "astream_complete"]


def routed(handler_ledger: Ledger) -> tuple[RoutedLLM, dict[str, Tier]]:
    handler = BudgetCallbackHandler(handler_ledger, feature="support")
    tiers = {
        "small": Tier("gpt-4o-mini", callback_manager=CallbackManager([handler])),
        "large": Tier("gpt-4o", callback_manager=CallbackManager([handler])),
    }
    return RoutedLLM(tiers, models={"small": "gpt-4o-mini", "large": "gpt-4o"}), tiers


def ask(llm: CachedLLM, how: str, **kwargs: Any) -> Any:
    """The response (a stream's last chunk) of one call, under acme's user u-1."""
    with attribute(tenant="acme", user="u-1"):
        if how == "chat":
            return llm.chat(MESSAGES, **kwargs)
        if how == "complete":
            return llm.complete(PROMPT, **kwargs)
        if how == "stream_chat":
            return list(llm.stream_chat(MESSAGES, **kwargs))[-1]
        if how == "achat":
            return asyncio.run(llm.achat(MESSAGES, **kwargs))

        async def read() -> Any:
            return [c async for c in await llm.astream_complete(PROMPT, **kwargs)][-1]

        return asyncio.run(read())


def model_rows(ledger: Ledger) -> dict[str, tuple[int, Decimal, int, Decimal]]:
    """Per model: requests, cost, cache hits, saved."""
    report = build_report(ledger, last_days=1)
    [models] = [b for b in report.breakdowns if b.dimension == "model"]
    return {str(r.key): (r.requests, r.cost_usd, r.cache_hits, r.saved_usd) for r in models.rows}


@pytest.mark.parametrize("how", CALLS)
def test_a_hit_on_a_routed_small_tier_answer_is_priced_and_recorded_on_the_small_model(how: str) -> None:
    ledger = Ledger("memory://")
    llm_routed, tiers = routed(ledger)
    llm = CachedLLM(llm_routed, ExactCache(ledger=ledger), model="gpt-4o")
    ask(llm, how)
    hit = ask(llm, how)
    assert tiers["small"].calls == 1
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == SMALL  # not gpt-4o's 0.0125
    # the hit sits on the row the call it replaced was charged on; gpt-4o made no call
    assert model_rows(ledger) == {"gpt-4o-mini": (2, Decimal(SMALL), 1, Decimal(SMALL))}


def test_a_hit_on_a_routed_large_tier_answer_is_priced_on_the_large_model() -> None:
    ledger = Ledger("memory://")
    llm_routed, tiers = routed(ledger)
    llm = CachedLLM(llm_routed, ExactCache(ledger=ledger), model="gpt-4o-mini")
    ask(llm, "chat", force_tier="large")
    hit = ask(llm, "chat", force_tier="large")
    assert tiers["large"].calls == 1
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == LARGE
    assert model_rows(ledger) == {"gpt-4o": (2, Decimal(LARGE), 1, Decimal(LARGE))}


@pytest.mark.parametrize("how", ["chat", "stream_chat", "astream_complete"])
def test_without_model_around_a_routed_llm_with_a_ledger_answers_are_cached_on_their_tier(how: str) -> None:
    """``RoutedLLM``'s metadata names ``gpt-4o-mini|gpt-4o``, no registered model: the answer's
    tier prices and records its hits (nothing was cached before)."""
    ledger = Ledger("memory://")
    llm_routed, tiers = routed(ledger)
    llm = CachedLLM(llm_routed, ExactCache(ledger=ledger))
    assert llm.model == "gpt-4o-mini|gpt-4o"
    ask(llm, how)
    hit = ask(llm, how)
    assert tiers["small"].calls == 1
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == SMALL
    assert model_rows(ledger) == {"gpt-4o-mini": (2, Decimal(SMALL), 1, Decimal(SMALL))}


def test_a_semantic_cache_hit_on_a_routed_answer_is_priced_and_recorded_on_its_tier() -> None:
    ledger = Ledger("memory://")
    llm_routed, _tiers = routed(ledger)
    llm = CachedLLM(llm_routed, SemanticCache(ledger=ledger), model="gpt-4o")
    ask(llm, "chat")
    hit = ask(llm, "chat")
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == SMALL
    rows = model_rows(ledger)
    assert rows["gpt-4o-mini"][2:] == (1, Decimal(SMALL))
    assert "gpt-4o" not in rows


def test_a_hit_recorded_in_a_handler_ledger_the_cache_does_not_keep_is_on_the_tier() -> None:
    """The cache keeps no ledger: the tiers' budget handler's ledger records the hit, on the
    tier that answered too."""
    ledger = Ledger("memory://")
    llm_routed, _tiers = routed(ledger)
    llm = CachedLLM(llm_routed, ExactCache(), model="gpt-4o")
    ask(llm, "chat")
    hit = ask(llm, "chat")
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == SMALL
    assert model_rows(ledger) == {"gpt-4o-mini": (2, Decimal(SMALL), 1, Decimal(SMALL))}


def test_a_plain_llm_answer_is_priced_on_the_model_its_raw_response_names() -> None:
    """Not routed: priced on the registered model the raw response names; recorded, by the
    core's rule, on the model asked for (``model=``)."""
    ledger = Ledger("memory://")
    inner = Tier("gpt-4o-mini")
    llm = CachedLLM(inner, ExactCache(ledger=ledger), model="gpt-4o")
    ask(llm, "complete")
    hit = ask(llm, "complete")
    assert inner.calls == 1
    assert hit.additional_kwargs["cache_hit"]["saved_usd"] == SMALL
    assert model_rows(ledger) == {"gpt-4o": (1, Decimal(0), 1, Decimal(SMALL))}


def test_a_raw_model_the_registry_does_not_know_is_priced_on_model() -> None:
    """An Azure deployment name, say: ``model=`` says what it is."""
    inner = Tier("my-azure-deployment")
    llm = CachedLLM(inner, ExactCache(), model="gpt-4o-mini")
    ask(llm, "chat")
    assert ask(llm, "chat").additional_kwargs["cache_hit"]["saved_usd"] == SMALL
    assert inner.calls == 1


def test_with_a_ledger_an_answer_of_no_registered_model_is_not_cached_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither ``model=`` (defaulted to a local model's name) nor the model that answered is
    registered: a hit could not be recorded, so nothing is cached, and a warning (once) says
    how to fix it."""
    inner = Tier("local-llama")
    llm = CachedLLM(inner, ExactCache(ledger=Ledger("memory://")))
    with caplog.at_level(logging.WARNING, logger="tokenbudget.cache"):
        for _ in range(3):
            ask(llm, "chat")
    assert inner.calls == 3
    warnings = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'local-llama'" in message
    assert "model=" in message
    # without a ledger the same answers are cached (a hit's saving unpriced)
    plain = CachedLLM(Tier("local-llama"), ExactCache())
    ask(plain, "chat")
    assert ask(plain, "chat").additional_kwargs["cache_hit"]["saved_usd"] is None
