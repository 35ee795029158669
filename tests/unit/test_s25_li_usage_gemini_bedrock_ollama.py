"""The usage Gemini (google-genai), Bedrock Converse and Ollama report in a LlamaIndex
``ChatResponse.raw`` is read with each provider's semantics, not estimated: Gemini's thinking
tokens are charged as output, cache reads and writes are parts of the input."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import BudgetCallbackHandler, usage_of
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.errors import InvalidInputError


def gemini_raw(**usage_metadata: Any) -> dict[str, Any]:
    """As llama-index-llms-google-genai's chat_from_gemini_response builds ``raw``: the top
    candidate's dump, with the response's ``usage_metadata.model_dump()`` added."""
    dumped = {
        "cache_tokens_details": None,
        "cached_content_token_count": None,
        "candidates_token_count": None,
        "candidates_tokens_details": None,
        "prompt_token_count": None,
        "prompt_tokens_details": [{"modality": "TEXT", "token_count": 1200}],
        "thoughts_token_count": None,
        "tool_use_prompt_token_count": None,
        "tool_use_prompt_tokens_details": None,
        "total_token_count": None,
        "traffic_type": None,
    }
    dumped.update(usage_metadata)
    return {
        "content": {"parts": [{"text": "Paris.", "thought": None}], "role": "model"},
        "finish_reason": "STOP",
        "index": 0,
        "safety_ratings": None,
        "usage_metadata": dumped,
    }


def respond(raw: Any) -> ChatResponse:
    return ChatResponse(message=ChatMessage(role="assistant", content="Paris."), raw=raw)


CASES: dict[str, tuple[Any, Usage]] = {
    "gemini-thinking": (
        gemini_raw(
            prompt_token_count=1200,
            candidates_token_count=3,
            thoughts_token_count=900,
            total_token_count=2103,
        ),
        Usage(input_tokens=1200, output_tokens=903, reasoning_tokens=900),
    ),
    "gemini-cached": (
        gemini_raw(
            prompt_token_count=5000,
            cached_content_token_count=4096,
            candidates_token_count=40,
            total_token_count=5040,
        ),
        Usage(input_tokens=5000, output_tokens=40, cache_read_tokens=4096),
    ),
    "gemini-grounded": (  # a built-in tool's prompt (search results) is billed as input
        gemini_raw(
            prompt_token_count=100,
            tool_use_prompt_token_count=700,
            candidates_token_count=50,
            thoughts_token_count=20,
            total_token_count=870,
        ),
        Usage(input_tokens=800, output_tokens=70, reasoning_tokens=20),
    ),
    "gemini-rest-camel-case": (
        {
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 5,
                "thoughtsTokenCount": 7,
                "cachedContentTokenCount": 4,
            }
        },
        Usage(input_tokens=10, output_tokens=12, cache_read_tokens=4, reasoning_tokens=7),
    ),
    "bedrock-converse": (  # raw=dict(response) of boto3's converse()
        {
            "ResponseMetadata": {"HTTPStatusCode": 200},
            "output": {"message": {"role": "assistant", "content": [{"text": "Paris."}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 30, "outputTokens": 10, "totalTokens": 40},
            "metrics": {"latencyMs": 412},
        },
        Usage(input_tokens=30, output_tokens=10),
    ),
    "bedrock-converse-cached": (  # inputTokens excludes the cache reads and writes
        {
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": 4,
                "outputTokens": 155,
                "totalTokens": 3430,
                "cacheReadInputTokens": 2971,
                "cacheWriteInputTokens": 300,
            },
        },
        Usage(input_tokens=3275, output_tokens=155, cache_read_tokens=2971, cache_write_tokens=300),
    ),
    "ollama": (  # raw=dict(response) of ollama's chat(), its counts not copied into "usage"
        {
            "model": "llama3.1",
            "created_at": "2026-11-24T20:00:00Z",
            "done": True,
            "done_reason": "stop",
            "total_duration": 5043500667,
            "prompt_eval_count": 26,
            "eval_count": 298,
            "message": {"role": "assistant", "content": "Paris.", "tool_calls": None},
        },
        Usage(input_tokens=26, output_tokens=298),
    ),
}


@pytest.mark.parametrize(("raw", "expected"), CASES.values(), ids=CASES.keys())
def test_the_reported_usage_is_read_exactly(raw: Any, expected: Usage) -> None:
    assert Usage.from_llamaindex(raw) == expected
    assert usage_of(respond(raw)) == expected
    assert usage_of(CompletionResponse(text="Paris.", raw=raw)) == expected


def test_a_gemini_figure_that_is_not_a_count_is_named() -> None:
    raw = gemini_raw(prompt_token_count=10, thoughts_token_count="900")
    with pytest.raises(InvalidInputError, match=r"raw\.usage_metadata\.thoughts_token_count"):
        usage_of(respond(raw))


def test_gemini_usage_without_its_prompt_count_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"raw\.usage_metadata\.prompt_token_count: is missing"):
        usage_of(respond(gemini_raw(candidates_token_count=3)))


def test_bedrock_usage_without_its_output_count_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"raw\.usage\.outputTokens: is missing"):
        usage_of(respond({"usage": {"inputTokens": 3}}))


class GeminiLike(MockLLM):
    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        raw = gemini_raw(
            prompt_token_count=1200,
            candidates_token_count=3,
            thoughts_token_count=900,
            total_token_count=2103,
        )
        return respond(raw)


def test_a_budgeted_gemini_call_is_charged_its_thinking_tokens() -> None:
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gemini-2.5-flash", max_output_tokens=2000)
    llm = GeminiLike(callback_manager=CallbackManager([handler]))
    llm.chat([ChatMessage(role="user", content="Capital of France?")])
    totals: dict[str, Any] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for key, value in row.values.items():
            totals[key] = totals.get(key, 0) + value
    assert (totals["input_tokens"], totals["output_tokens"]) == (1200, 903)
    assert not totals.get("estimated")
