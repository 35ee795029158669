"""TokenBudgetLLMCache: LangChain's standard cache suites, and real runs of a fake chat model
(set_llm_cache and per-model cache=) that show what a user relies on."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from langchain_core.caches import BaseCache
from langchain_core.globals import set_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from lc_fakes import replies, weather_call

from langchain_tokenbudget import TokenBudgetLLMCache
from langchain_tokenbudget.llm_cache import CACHE_HIT_KEY, to_cache_request
from tokenbudget_core import InvalidInputError, attribute, cost_of
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.usage import Usage

# -- LangChain's standard suites ------------------------------------------------------------------


class TestExactCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return TokenBudgetLLMCache(ExactCache())


class TestExactCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return TokenBudgetLLMCache(ExactCache())


class TestSemanticCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> BaseCache:
        return TokenBudgetLLMCache(SemanticCache())


class TestSemanticCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> BaseCache:
        return TokenBudgetLLMCache(SemanticCache())


# -- real runs ---------------------------------------------------------------------------------


@pytest.fixture
def global_cache() -> Iterator[TokenBudgetLLMCache]:
    cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(None)


def test_set_llm_cache_repeated_request_makes_no_second_call(global_cache: TokenBudgetLLMCache) -> None:
    model = replies(
        AIMessage("Paris.", usage_metadata={"input_tokens": 9, "output_tokens": 2, "total_tokens": 11})
    )
    first = model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    second = model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert len(model.received) == 1
    assert first.content == second.content == "Paris."
    assert isinstance(second, AIMessage)
    assert second.usage_metadata is not None
    assert second.usage_metadata["input_tokens"] == 9  # the original call's usage, LangChain zeroes its cost
    # a different prompt, or a different system prompt, is a different request
    model.messages = iter([AIMessage("Rome."), AIMessage("Paris!")])
    assert model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of Italy?")]).content == "Rome."
    assert model.invoke([SystemMessage("Shout."), HumanMessage("Capital of France?")]).content == "Paris!"
    assert len(model.received) == 3


async def test_per_model_cache_async() -> None:
    model = replies(AIMessage("Paris."), AIMessage("Never served"))
    model.cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    assert (await model.ainvoke("Capital of France?")).content == "Paris."
    assert (await model.ainvoke("Capital of France?")).content == "Paris."
    assert len(model.received) == 1
    other = replies(AIMessage("Uncached."))
    assert other.invoke("Capital of France?").content == "Uncached."  # no cache on this model


def test_near_duplicate_hits_only_above_the_threshold() -> None:
    cache = TokenBudgetLLMCache(SemanticCache(threshold=0.9), scope=CacheScope(tenant="acme"))
    model = replies(AIMessage("A piece of text."), AIMessage("Fresh answer."), AIMessage("Third."))
    model.cache = cache
    assert model.invoke("What is a token?").content == "A piece of text."
    assert model.invoke("what is a TOKEN").content == "A piece of text."  # near-duplicate: served
    assert len(model.received) == 1
    assert model.invoke("How are tokens priced for images?").content == "Fresh answer."  # below threshold
    assert model.invoke("What is not a token?").content == "Third."  # the guard: negation differs
    assert len(model.received) == 3


def about(text: str, block: dict[str, object]) -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "text", "text": text}, block])]


def image(data: bytes) -> dict[str, object]:
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
    }


def pdf(signer: str) -> dict[str, object]:
    data = b"%PDF-1.4\n" + b"The parties agree to the terms below. " * 50 + f"Signed by {signer}.".encode()
    return {"type": "file", "base64": base64.b64encode(data).decode(), "mime_type": "application/pdf"}


def test_the_semantic_cache_never_answers_for_another_image_or_document() -> None:
    cache = TokenBudgetLLMCache(SemanticCache(threshold=0.5, guard=False), scope=CacheScope(tenant="acme"))
    model = replies(*[AIMessage(a) for a in ("A cat.", "A dog.", "Alice.", "Bob.")])
    model.cache = cache
    assert model.invoke(about("What is in this picture?", image(b"cat"))).content == "A cat."
    assert model.invoke(about("what is in this picture", image(b"cat"))).content == "A cat."  # served
    assert model.invoke(about("What is in this picture?", image(b"dog"))).content == "A dog."
    # a PDF block the core cannot translate: keyed on the prompt text, served only when identical
    assert model.invoke(about("Who signed this?", pdf("Alice"))).content == "Alice."
    assert model.invoke(about("Who signed this?", pdf("Alice"))).content == "Alice."  # served
    assert model.invoke(about("Who signed this?", pdf("Bob"))).content == "Bob."
    assert len(model.received) == 4


def test_every_message_type_is_read_and_an_unreadable_history_is_matched_only_exactly() -> None:
    llm_string = "gpt-4o-mini---[('_type', 'openai-chat'), ('model_name', 'gpt-4o-mini')]"
    history = [
        ChatMessage(role="user", content="Hi"),
        AIMessageChunk(content="Hello!"),
        HumanMessage("Weather?"),
    ]
    request = to_cache_request(dumps(history), llm_string)
    assert not request.opaque
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    function = to_cache_request(
        dumps([HumanMessage("2+2?"), FunctionMessage(name="calc", content="4")]), llm_string
    )
    assert (function.opaque, function.messages[-1].role) == (False, "function")
    unknown = dumps([HumanMessage("Hi")]).replace('"type": "human"', '"type": "hologram"')
    assert to_cache_request(unknown, llm_string).opaque  # a message type not known here
    assert not to_cache_request("Tell me a joke", llm_string).opaque  # a completion prompt is text


def test_a_served_hit_carries_its_audit_data() -> None:
    cache = TokenBudgetLLMCache(SemanticCache(threshold=0.9), scope=CacheScope(tenant="acme"))
    model = replies(
        AIMessage(
            "A piece of text.",
            usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
            response_metadata={"model_name": "gpt-4o"},
        )
    )
    model.cache = cache
    first = model.invoke("What is a token?")
    assert CACHE_HIT_KEY not in first.response_metadata  # a real call
    audit = model.invoke("what is a TOKEN").response_metadata[CACHE_HIT_KEY]
    assert audit["kind"] == "semantic"
    assert audit["matched_prompt"] == "What is a token?"
    assert audit["score"] > 0.9
    assert audit["saved_tokens"] == 1100
    assert audit["recorded"] is False  # no ledger attached to the core cache
    assert Decimal(audit["saved_usd"]) == cost_of(Usage(input_tokens=1000, output_tokens=100), "gpt-4o")


def test_threshold_of_one_needs_the_same_text() -> None:
    strict = replies(AIMessage("A."), AIMessage("B."))
    strict.cache = TokenBudgetLLMCache(SemanticCache(threshold=1.0), scope=CacheScope(tenant="acme"))
    strict.invoke("What is a token?")
    assert strict.invoke("What is a token, exactly, in detail?").content == "B."


def test_nothing_crosses_tenants_or_users() -> None:
    tenant: dict[str, str] = {"id": "acme"}
    cache = TokenBudgetLLMCache(SemanticCache(), scope=lambda: CacheScope(tenant=tenant["id"]))
    model = replies(*(AIMessage(f"answer {i}") for i in range(5)))
    model.cache = cache
    assert model.invoke("What is a token?").content == "answer 0"
    tenant["id"] = "globex"
    assert model.invoke("What is a token?").content == "answer 1"  # another tenant: a miss
    tenant["id"] = "acme"
    assert model.invoke("What is a token?").content == "answer 0"
    # users from the attribution, no scope given (tenant None is its own scope)
    model.cache = TokenBudgetLLMCache(ExactCache())
    with attribute(user="ada"):
        assert model.invoke("What is a token?").content == "answer 2"
        assert model.invoke("What is a token?").content == "answer 2"
    with attribute(user="bob"):
        assert model.invoke("What is a token?").content == "answer 3"
    assert len(model.received) == 4


def test_tool_calls_are_cached_only_when_opted_in() -> None:
    model = replies(weather_call("call_1"), weather_call("call_2"))
    model.cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    model.invoke("Weather in Paris?")
    model.invoke("Weather in Paris?")
    assert len(model.received) == 2
    opted = replies(weather_call("call_1"), weather_call("call_2"))
    opted.cache = TokenBudgetLLMCache(ExactCache(cache_tool_calls=True), scope=CacheScope(tenant="acme"))
    opted.invoke("Weather in Paris?")
    again = opted.invoke("Weather in Paris?")
    assert len(opted.received) == 1
    assert isinstance(again, AIMessage)
    assert again.tool_calls[0]["id"] == "call_1"
    assert again.tool_calls[0]["args"] == {"city": "Paris"}


def test_sampled_settings_are_not_cached() -> None:
    cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    prompt = json.dumps(
        [{"lc": 1, "type": "constructor", "id": ["x"], "kwargs": {"type": "human", "content": "Hi"}}]
    )
    hot = "[('_type', 'openai-chat'), ('model_name', 'gpt-4o'), ('temperature', 0.7)]"
    cold = "[('_type', 'openai-chat'), ('model_name', 'gpt-4o'), ('temperature', 0.0)]"
    answer = [ChatGeneration(message=AIMessage("Hello."))]
    cache.update(prompt, hot, answer)
    assert cache.lookup(prompt, hot) is None
    cache.update(prompt, cold, answer)
    [hit] = cache.lookup(prompt, cold) or []
    assert isinstance(hit, ChatGeneration)
    assert hit.message.content == "Hello."


def test_entries_are_plain_json_and_never_loaded_as_objects() -> None:
    core = ExactCache()
    scope = CacheScope(tenant="acme")
    cache = TokenBudgetLLMCache(core, scope=scope)
    gen = ChatGeneration(message=AIMessage("Hi.", response_metadata={"finish_reason": "stop"}))
    cache.update("prompt", "llm", [gen, Generation(text="plain")])
    payload = core.store_backend.get(scope, to_cache_request("prompt", "llm").digest())
    assert payload is not None
    entry = json.loads(payload)  # plain JSON text
    assert entry["response"]["extra"]["generations"][0]["message"]["content"] == "Hi."
    assert '"lc"' not in payload
    assert '"constructor"' not in payload
    # a prompt that looks like a LangChain serialised object naming some class is read as data only
    evil = [
        {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"type": "human", "content": "x"}}
    ]
    cache.update(json.dumps(evil), "llm", [Generation(text="ok")])
    assert cache.lookup(json.dumps(evil), "llm") == [Generation(text="ok")]


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(InvalidInputError) as e:
        TokenBudgetLLMCache({})  # type: ignore[arg-type]
    assert e.value.field == "cache"
    with pytest.raises(InvalidInputError) as e:
        TokenBudgetLLMCache(ExactCache(), scope="acme")  # type: ignore[arg-type]
    assert e.value.field == "scope"
    cache = TokenBudgetLLMCache(ExactCache())
    for bad in (None, [5], "text"):
        with pytest.raises(InvalidInputError) as e:
            cache.update("prompt", "llm", bad)  # type: ignore[arg-type]
        assert e.value.field == "return_val"


def test_docstring_example_runs() -> None:
    import doctest

    from langchain_tokenbudget import llm_cache

    result = doctest.testmod(llm_cache)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("core", [ExactCache, SemanticCache])
def test_a_failed_tool_result_is_not_answered_with_a_successful_ones_reply(core: type[ExactCache]) -> None:
    """``ToolMessage.status`` reaches the provider (Anthropic's ``is_error``): it is part of the key."""

    def asked(status: str) -> list[BaseMessage]:
        return [
            HumanMessage("Charge the card $10."),
            weather_call("t1"),
            ToolMessage("gateway response", tool_call_id="t1", status=status),  # type: ignore[arg-type]
        ]

    model = replies(AIMessage("Done, charged."), AIMessage("Sorry, it FAILED."), AIMessage("never"))
    model.cache = TokenBudgetLLMCache(core(), scope=CacheScope(tenant="acme"))
    assert model.invoke(asked("success")).content == "Done, charged."
    assert model.invoke(asked("error")).content == "Sorry, it FAILED."
    assert model.invoke(asked("error")).content == "Sorry, it FAILED."  # and it is cached as such
    assert len(model.received) == 2


def test_a_hit_is_recorded_on_the_model_that_answered_when_the_host_names_no_known_model() -> None:
    """A fake or wrapper model's llm_string names no registry model: the hit is recorded on the
    model the stored reply came from, not refused with UnknownModelError on the second call."""
    ledger = Ledger("memory://")
    reply = AIMessage("Paris.", response_metadata={"model_name": "gpt-4o-mini"})
    model = replies(reply, reply)
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger), scope=CacheScope(tenant="acme"))
    assert model.invoke("Capital of France?").content == "Paris."
    assert model.invoke("Capital of France?").content == "Paris."
    assert len(model.received) == 1
    [row] = ledger.store.rollup([ledger.day()])
    assert row.rollup_key.endswith("/gpt-4o-mini")
    assert row.values["cache_hits"] == 1
    # an answer from a model nobody knows is not cached at all (a hit could not be recorded)
    unknown = replies(AIMessage("Rome."), AIMessage("Rome!"))
    unknown.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger), scope=CacheScope(tenant="acme"))
    assert unknown.invoke("Capital of Italy?").content == "Rome."
    assert unknown.invoke("Capital of Italy?").content == "Rome!"


@pytest.mark.parametrize(
    "metadata",
    [
        {"finish_reason": "length"},
        {"stop_reason": "max_tokens"},
        {"stopReason": "max_tokens"},  # Bedrock Converse
        {"done_reason": "length"},  # Ollama
        {"finish_reason": "MAX_TOKENS"},  # Gemini
        {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},  # Responses API
    ],
)
def test_an_answer_cut_off_at_the_length_limit_is_never_cached(metadata: dict[str, object]) -> None:
    cut = AIMessage("The three steps are: 1. back up the", response_metadata=metadata)
    model = replies(cut, AIMessage("The full answer."))
    model.cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    assert model.invoke("List the three steps.").content == "The three steps are: 1. back up the"
    again = model.invoke("List the three steps.")
    assert again.content == "The full answer."
    assert CACHE_HIT_KEY not in again.response_metadata
    complete = replies(
        AIMessage("Done.", response_metadata={"stopReason": "end_turn", "done_reason": "stop"})
    )
    complete.cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
    complete.invoke("Say done.")
    assert complete.invoke("Say done.").response_metadata[CACHE_HIT_KEY]["kind"] == "exact"


def test_a_hit_whose_original_call_reported_no_usage_saved_an_unknown_amount_not_zero() -> None:
    """A 2,000-word answer was not free: with no usage reported, what its hit saved is unknown
    (``None``), in the audit and in the ledger's report, never $0."""
    from tokenbudget_core.reports import build_report

    ledger = Ledger("memory://")
    model = replies(AIMessage("word " * 2000, response_metadata={"model_name": "gpt-4o"}))
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger), scope=CacheScope(tenant="acme"))
    model.invoke("Write the full migration runbook")
    audit = model.invoke("Write the full migration runbook").response_metadata[CACHE_HIT_KEY]
    assert audit["saved_usd"] is None
    assert audit["saved_tokens"] is None
    totals = build_report(ledger).totals
    assert totals.cache_hits == 1
    assert totals.saved_usd == 0  # nothing known to add, not a claimed $0 saving


def test_a_provider_model_without_a_temperature_samples_at_the_provider_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ChatOpenAI()`` / ``ChatAnthropic()`` set no temperature: the API answers at its default
    (1.0), which samples, so their answers are not cached unless the cache opts in; an explicit
    temperature of 0 is cached."""
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    prompt = dumps([HumanMessage("Tell me a story.")])
    answer = [ChatGeneration(message=AIMessage("Once upon a time."))]
    for model, cold in (
        (ChatOpenAI(model="gpt-4o-mini"), ChatOpenAI(model="gpt-4o-mini", temperature=0)),
        (ChatAnthropic(model="claude-sonnet-4-5"), ChatAnthropic(model="claude-sonnet-4-5", temperature=0)),
    ):
        assert to_cache_request(prompt, model._get_llm_string()).sampled()
        cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme"))
        cache.update(prompt, model._get_llm_string(), answer)
        assert cache.lookup(prompt, model._get_llm_string()) is None
        cache.update(prompt, cold._get_llm_string(), answer)
        assert cache.lookup(prompt, cold._get_llm_string()) is not None
        opted = TokenBudgetLLMCache(ExactCache(cache_sampled=True), scope=CacheScope(tenant="acme"))
        opted.update(prompt, model._get_llm_string(), answer)
        assert opted.lookup(prompt, model._get_llm_string()) is not None
