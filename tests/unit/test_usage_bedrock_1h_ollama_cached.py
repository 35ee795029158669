"""Two usage shapes read as the providers document them, not refused nor under-priced:

* Bedrock Converse's ``usage.cacheDetails`` (AWS Bedrock API reference, ``TokenUsage`` /
  ``CacheDetail``: ``[{"ttl": "5m" | "1h", "inputTokens": n}]``, "Detailed breakdown of cache
  writes by TTL ... 1h before 5m"): the 1-hour writes are charged the 1-hour rate;
* Ollama's ``eval_count`` without ``prompt_eval_count`` (a prompt served from its KV cache,
  ollama/ollama#2068): the output is exact, the input not reported, so flagged estimated and
  charged at the handler's count."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import BudgetCallbackHandler, usage_of
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.pricing import cost_of

# A Bedrock Claude with a distinct 1-hour cache write price (genai-prices, per million tokens):
# input $3, output $15, cache read $0.30, 5-minute write $3.75, 1-hour write $6.
BEDROCK_CLAUDE = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"


def converse(**usage: Any) -> dict[str, Any]:
    """``dict(response)`` of boto3's ``bedrock-runtime`` ``converse()``, as
    llama-index-llms-bedrock-converse keeps it in ``ChatResponse.raw``."""
    return {
        "ResponseMetadata": {"HTTPStatusCode": 200},
        "output": {"message": {"role": "assistant", "content": [{"text": "Paris."}]}},
        "stopReason": "end_turn",
        "usage": usage,
        "metrics": {"latencyMs": 912},
    }


MIXED_TTL = converse(  # a 1h cache point on the system prompt, a 5m one on the conversation
    inputTokens=20,
    outputTokens=100,
    totalTokens=3120,
    cacheReadInputTokens=0,
    cacheWriteInputTokens=3000,
    cacheDetails=[{"ttl": "1h", "inputTokens": 2000}, {"ttl": "5m", "inputTokens": 1000}],
)
ONE_HOUR_WITH_READS = converse(
    inputTokens=12,
    outputTokens=40,
    totalTokens=5552,
    cacheReadInputTokens=4000,
    cacheWriteInputTokens=1500,
    cacheDetails=[{"ttl": "1h", "inputTokens": 1500}],
)

BEDROCK_CASES: dict[str, tuple[dict[str, Any], Usage, Decimal]] = {
    "mixed-ttl": (
        MIXED_TTL,
        Usage(input_tokens=3020, output_tokens=100, cache_write_tokens=3000, cache_write_1h_tokens=2000),
        # 20 x $3 + 100 x $15 + 1000 x $3.75 + 2000 x $6 (per million), not 3000 x $3.75
        Decimal("0.01731"),
    ),
    "one-hour-writes-and-reads": (
        ONE_HOUR_WITH_READS,
        Usage(
            input_tokens=5512,
            output_tokens=40,
            cache_read_tokens=4000,
            cache_write_tokens=1500,
            cache_write_1h_tokens=1500,
        ),
        # 12 x $3 + 40 x $15 + 4000 x $0.30 + 1500 x $6
        Decimal("0.010836"),
    ),
}


@pytest.mark.parametrize(("raw", "expected", "usd"), BEDROCK_CASES.values(), ids=BEDROCK_CASES.keys())
def test_bedrock_one_hour_cache_writes_are_charged_the_one_hour_rate(
    raw: dict[str, Any], expected: Usage, usd: Decimal
) -> None:
    usage = Usage.from_llamaindex(raw)
    assert usage == expected
    assert (
        usage_of(ChatResponse(message=ChatMessage(role="assistant", content="Paris."), raw=raw)) == expected
    )
    assert cost_of(usage, BEDROCK_CLAUDE) == usd


def test_bedrock_cache_details_without_the_total_still_count_as_writes() -> None:
    # cacheWriteInputTokens is optional in TokenUsage: the breakdown alone gives the writes
    raw = converse(
        inputTokens=5, outputTokens=7, totalTokens=1012, cacheDetails=[{"ttl": "1h", "inputTokens": 1000}]
    )
    assert Usage.from_llamaindex(raw) == Usage(
        input_tokens=1005, output_tokens=7, cache_write_tokens=1000, cache_write_1h_tokens=1000
    )


def test_a_bedrock_ttl_not_documented_is_charged_at_the_one_hour_rate_and_flagged() -> None:
    raw = converse(
        inputTokens=5,
        outputTokens=7,
        totalTokens=1312,
        cacheWriteInputTokens=1300,
        cacheDetails=[{"ttl": "24h", "inputTokens": 1000}, {"ttl": "5m", "inputTokens": 300}],
    )
    usage = Usage.from_llamaindex(raw)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1300, 1000)
    assert usage.estimated


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"ttl": "1h", "inputTokens": 5}, r"raw\.usage\.cacheDetails: must be a list"),
        ([{"inputTokens": 5}], r"raw\.usage\.cacheDetails\[0\]\.ttl: is missing"),
        ([{"ttl": 1, "inputTokens": 5}], r"raw\.usage\.cacheDetails\[0\]\.ttl: must be a string"),
        ([{"ttl": "1h"}], r"raw\.usage\.cacheDetails\[0\]\.inputTokens: is missing"),
        ([{"ttl": "1h", "inputTokens": -5}], r"raw\.usage\.cacheDetails\[0\]\.inputTokens: must be >= 0"),
        (
            [{"ttl": "1h", "inputTokens": "5"}],
            r"raw\.usage\.cacheDetails\[0\]\.inputTokens: must be an integer",
        ),
        (["1h"], r"raw\.usage\.cacheDetails\[0\]: expected a dict"),
    ],
)
def test_a_bad_bedrock_cache_detail_is_named(details: Any, field: str) -> None:
    raw = converse(inputTokens=5, outputTokens=7, totalTokens=12, cacheDetails=details)
    with pytest.raises(InvalidInputError, match=field):
        Usage.from_llamaindex(raw)


def ollama_cached(**extra: Any) -> dict[str, Any]:
    """``dict(response)`` of ollama's ``chat()`` for a prompt served whole from Ollama's KV cache:
    ``prompt_eval_count`` left out (a zero count is ``omitempty``), so llama-index-llms-ollama
    copies no ``usage`` into it."""
    return {
        "model": "llama3.1",
        "created_at": "2026-11-24T20:00:00Z",
        "done": True,
        "done_reason": "stop",
        "total_duration": 1043500667,
        "load_duration": 1500000,
        "eval_count": 298,
        "eval_duration": 1012000000,
        "message": {"role": "assistant", "content": "Paris.", "tool_calls": None},
        **extra,
    }


@pytest.mark.parametrize(
    "raw",
    [ollama_cached(), ollama_cached(prompt_eval_count=None, prompt_eval_duration=None)],
    ids=["rest-json", "ollama-python-dump"],
)
def test_ollama_output_is_exact_when_the_prompt_came_from_its_cache(raw: dict[str, Any]) -> None:
    expected = Usage(input_tokens=0, output_tokens=298, estimated=True)  # input: not reported
    assert Usage.from_llamaindex(raw) == expected
    assert (
        usage_of(ChatResponse(message=ChatMessage(role="assistant", content="Paris."), raw=raw)) == expected
    )


def replying(raw: Any) -> type[MockLLM]:
    """An LLM integration whose chat returns ``ChatResponse(raw=raw)``, the provider's response."""

    class Replying(MockLLM):
        @llm_chat_callback()
        def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
            return ChatResponse(message=ChatMessage(role="assistant", content="Paris."), raw=raw)

    return Replying


def charged(ledger: Ledger) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for key, value in row.values.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def budgeted_call(model: str, raw: Any, *, register: bool = False) -> dict[str, int]:
    ledger = Ledger("memory://")
    if register:
        ledger.registry.register(model, provider="ollama")
    handler = BudgetCallbackHandler(ledger, model=model, max_output_tokens=2000)
    llm = replying(raw)(callback_manager=CallbackManager([handler]))
    llm.chat([ChatMessage(role="user", content="What is the capital of France? Answer in one word.")])
    return charged(ledger)


def test_a_budgeted_bedrock_call_is_charged_its_one_hour_cache_writes() -> None:
    totals = budgeted_call(BEDROCK_CLAUDE, MIXED_TTL)
    assert (totals["input_tokens"], totals["output_tokens"], totals["cache_write_tokens"]) == (
        3020,
        100,
        3000,
    )
    assert totals["cost_nanos"] == usd_to_nanos(Decimal("0.01731"))
    assert not totals["estimated"]


def test_a_budgeted_ollama_call_served_from_its_cache_is_charged_its_exact_output() -> None:
    totals = budgeted_call("llama3.1", ollama_cached(), register=True)
    counted = budgeted_call("llama3.1", None, register=True)  # no report at all: the counted input
    assert totals["output_tokens"] == 298  # Ollama's eval_count, not an estimate of "Paris."
    assert totals["input_tokens"] == counted["input_tokens"] > 0
    assert totals["estimated"] == 1
