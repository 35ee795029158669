"""The cache rules the adapters share, tested in the core where they now live once.

Commit 53edd6f put three rules in LlamaIndex's ``CachedLLM`` (the adapter): why a stream ended,
read from every chunk; the model that answered (which prices a hit's saving); and the model a
hit is recorded on. They are the core's now (``cached_response.StreamStop`` /
``stop_reason_of``, ``response_cache.answering_model`` / ``hit_model``), and LangChain's cache
applies the same answering-model rule: a reply naming a model the registry does not know (a
deployment alias) is priced on the model the request names, not left unpriced.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tokenbudget_core import InvalidInputError, cost_of
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse, StreamStop, stop_reason_of
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import (
    ANSWERED_BY,
    Answerer,
    ExactCache,
    answering_model,
    hit_model,
)
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.usage import Usage

USAGE = Usage(input_tokens=1000, output_tokens=100)


def openai_chunk(finish: str | None, *, usage_only: bool = False) -> dict[str, Any]:
    choices = [] if usage_only else [{"index": 0, "delta": {"content": "x"}, "finish_reason": finish}]
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": choices,
    }


def anthropic_events(stop: str | None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m1", "model": "claude-sonnet-4-5", "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
    ]
    if stop is not None:
        events.append(
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 3}}
        )
    return [*events, {"type": "message_stop"}]


def read(*chunks: object) -> str:
    stop = StreamStop()
    for chunk in chunks:
        stop.add(chunk)
    return stop.reason()


# -- stop reasons --------------------------------------------------------------------------------


def test_stop_reason_of_reads_an_anthropic_message_delta_nested_stop_reason() -> None:
    assert stop_reason_of({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}) == "max_tokens"
    assert stop_reason_of({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}) == "end_turn"
    # only a message_delta's delta: an OpenAI chunk's delta is its content, never read for a reason
    assert stop_reason_of({"type": "other", "delta": {"stop_reason": "max_tokens"}}) is None


def test_a_stream_cut_off_before_its_usage_only_closing_chunk_ends_at_length() -> None:
    chunks = [openai_chunk(None), openai_chunk("length"), openai_chunk(None, usage_only=True)]
    assert read(*chunks) == "length"
    assert read(openai_chunk(None), openai_chunk("stop"), openai_chunk(None, usage_only=True)) == "stop"


@pytest.mark.parametrize("failed", ["length", "content_filter", "error"])
def test_a_cut_off_or_failed_stop_on_any_chunk_wins_over_a_later_normal_one(failed: str) -> None:
    assert read(openai_chunk(failed), openai_chunk("stop")) == failed


@pytest.mark.parametrize(("stop", "expected"), [("end_turn", "end_turn"), ("max_tokens", "max_tokens")])
def test_an_anthropic_stream_ends_as_its_message_delta_says(stop: str, expected: str) -> None:
    assert read(*anthropic_events(stop)) == expected


def test_a_provider_stream_naming_no_stop_reason_at_all_is_unreported_not_a_normal_stop() -> None:
    assert read(*anthropic_events(None)) == "unreported"  # its integration dropped message_delta
    assert read(openai_chunk(None), openai_chunk(None, usage_only=True)) == "unreported"
    assert not CachedResponse(content="Hi", model="gpt-4o", usage=USAGE, finish_reason="unreported").complete


def test_chunks_of_no_provider_naming_no_reason_end_normally() -> None:
    assert read({"text": "a"}, None, "not a dict", 42) == "stop"  # a custom LLM's chunks
    assert StreamStop().reason() == "stop"


def test_a_stop_reason_reported_beside_the_raw_chunk_is_read_too() -> None:
    stop = StreamStop()
    stop.add({"object": "chat.completion.chunk", "choices": []}, {"finish_reason": "length"})
    stop.add(None, None)
    assert stop.reason() == "length"


def test_an_sdk_chunk_object_is_read_through_model_dump() -> None:
    chunk_type = pytest.importorskip("openai.types.chat").ChatCompletionChunk
    cut = chunk_type.model_validate(openai_chunk("length"))
    closing = chunk_type.model_validate(openai_chunk(None, usage_only=True))
    assert read(cut, closing) == "length"


# -- the model that answered -------------------------------------------------------------------


def test_answering_model_a_route_wins_then_a_known_reported_model_then_the_requested_one() -> None:
    assert answering_model("gpt-4o", reported="gpt-4o", routed="gpt-4o-mini") == Answerer("gpt-4o-mini", True)
    assert answering_model("gpt-4o", reported="gpt-4o-2024-08-06") == Answerer("gpt-4o-2024-08-06", False)
    assert answering_model("gpt-4o", reported="my-azure-deployment") == Answerer("gpt-4o", False)
    assert answering_model("gpt-4o", reported=None, routed="  ") == Answerer("gpt-4o", False)
    assert answering_model("gpt-4o", reported=42) == Answerer("gpt-4o", False)


def test_answering_model_asks_the_registry_it_is_given() -> None:
    registry = ModelRegistry()
    registry.register("s29-house-model", provider="acme")
    assert answering_model("gpt-4o", reported="s29-house-model", registry=registry).model == "s29-house-model"
    assert answering_model("gpt-4o", reported="s29-house-model").model == "gpt-4o"  # the default one
    cache = ExactCache(registry=registry)
    assert cache.answering_model("gpt-4o", reported="s29-house-model") == Answerer("s29-house-model", False)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"requested": ""}, "requested"), ({"requested": None}, "requested"), ({"registry": {}}, "registry")],
)
def test_answering_model_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"requested": "gpt-4o", **kwargs}
    with pytest.raises(InvalidInputError) as e:
        answering_model(args.pop("requested"), **args)
    assert e.value.field == field


def test_a_routed_answer_is_marked_with_its_tier_and_a_plain_one_is_not() -> None:
    extra = {"additional_kwargs": {"a": 1}}
    assert Answerer("gpt-4o-mini", True).mark(extra) == {**extra, ANSWERED_BY: "gpt-4o-mini"}
    assert Answerer("gpt-4o", False).mark(extra) == extra
    assert Answerer("gpt-4o", False).mark() == {}


# -- the model a hit is recorded on ---------------------------------------------------------------


def entry(model: str, *, routed: bool = False) -> CachedResponse:
    return CachedResponse(
        content="Paris.", model=model, usage=USAGE, extra=Answerer(model, routed).mark({"k": "v"})
    )


def test_hit_model_a_routed_tier_then_the_requested_model_then_the_one_that_answered() -> None:
    registry = ModelRegistry()
    request = CacheRequest.from_text(model="gpt-4o", prompt="Capital of France?", params={"temperature": 0})
    assert hit_model(request, entry("gpt-4o-mini", routed=True), registry) == "gpt-4o-mini"
    assert hit_model(request, entry("gpt-4o-2024-08-06"), registry) == "gpt-4o"  # the row asked for
    unknown = CacheRequest.from_text(
        model="fake-chat", prompt="Capital of France?", params={"temperature": 0}
    )
    assert hit_model(unknown, entry("gpt-4o-mini"), registry) == "gpt-4o-mini"
    assert hit_model(unknown, entry("s29-house-model", routed=True), registry) is None
    # a mark naming another model than the entry's (an edited entry) is no route
    forged = CachedResponse(content="x", model="gpt-4o-mini", usage=USAGE, extra={ANSWERED_BY: "o1"})
    assert hit_model(request, forged, registry) == "gpt-4o"


@pytest.mark.parametrize("kind", [ExactCache, SemanticCache])
def test_a_hit_on_a_routed_entry_is_priced_and_recorded_on_its_tier(kind: type[ExactCache]) -> None:
    ledger = Ledger("memory://")
    cache = kind(ledger=ledger)
    request = CacheRequest.from_text(model="gpt-4o", prompt="Capital of France?", params={"temperature": 0})
    answerer = cache.answering_model("gpt-4o", reported="gpt-4o", routed="gpt-4o-mini")
    response = CachedResponse(content="Paris.", model=answerer.model, usage=USAGE, extra=answerer.mark())
    assert cache.store(request, response, scope=CacheScope(tenant="acme"))
    hit = cache.lookup(request, scope=CacheScope(tenant="acme"))
    assert hit is not None
    assert hit.saved_usd == cost_of(USAGE, "gpt-4o-mini")
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(r.key, r.cache_hits, r.saved_usd) for r in rows] == [
        ("gpt-4o-mini", 1, cost_of(USAGE, "gpt-4o-mini"))
    ]


def test_unrecordable_with_a_ledger_knowing_neither_model_only() -> None:
    request = CacheRequest.from_text(model="fake-chat", prompt="Hi", params={"temperature": 0})
    cache = ExactCache(ledger=Ledger("memory://"))
    assert cache.unrecordable(request, entry("s29-house-model"))
    assert cache.refusal(request, entry("s29-house-model")) is not None
    assert not cache.unrecordable(request, entry("gpt-4o"))
    assert not ExactCache().unrecordable(request, entry("s29-house-model"))  # no ledger: nothing to record


# -- LangChain's cache applies the same answering-model rule -------------------------------------


def test_langchain_cache_prices_a_hit_on_the_requested_model_when_the_reply_names_an_unknown_one() -> None:
    """A reply naming a deployment alias the registry does not know: the LangChain cache took
    the alias as the model that answered, so what the hit saved was unpriced (``None``) where
    LlamaIndex's ``CachedLLM`` priced it on the requested model. Both price it on ``gpt-4o``."""
    fake_models = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    from langchain_core.messages import AIMessage

    from langchain_tokenbudget import TokenBudgetLLMCache
    from langchain_tokenbudget.llm_cache import CACHE_HIT_KEY

    class AzureLikeFake(fake_models.GenericFakeChatModel):  # type: ignore[misc,name-defined]
        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": "gpt-4o", "temperature": 0}

    reply = AIMessage(
        "Paris.",
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": "acme-gpt4o-prod-deployment", "finish_reason": "stop"},
    )
    ledger = Ledger("memory://")
    model = AzureLikeFake(messages=iter([reply, reply]))
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger), scope=CacheScope(tenant="acme"))
    assert CACHE_HIT_KEY not in model.invoke("Capital of France?").response_metadata
    audit = model.invoke("Capital of France?").response_metadata[CACHE_HIT_KEY]
    assert audit["saved_usd"] is not None
    assert Decimal(audit["saved_usd"]) == cost_of(USAGE, "gpt-4o")
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(r.key, r.cache_hits, r.saved_usd) for r in rows] == [("gpt-4o", 1, cost_of(USAGE, "gpt-4o"))]
