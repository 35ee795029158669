"""A ``ChatOllama`` reply to a prompt Ollama served from its cache carries no ``usage_metadata``
(langchain-ollama sets it only when both ``prompt_eval_count`` and ``eval_count`` are present,
and Ollama leaves the first out), but keeps ``eval_count`` in ``response_metadata``. The budget
handler charges that exact output and the counted input, flagged estimated; it estimated the
whole call from the reply's text (3 output tokens for a 298-token answer with hidden thinking)."""

from __future__ import annotations

import itertools
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import Ledger
from tokenbudget_core.usage_sources import usage_from_ollama

# langchain-ollama's generation_info: dict(final stream response) of ollama's chat(), which
# LangChain copies into the reply's response_metadata.
CACHED = {
    "model": "llama3.1",
    "created_at": "2026-11-24T20:00:00Z",
    "done": True,
    "done_reason": "stop",
    "total_duration": 1043500667,
    "load_duration": 1500000,
    "eval_count": 298,
    "eval_duration": 1012000000,
    "model_name": "llama3.1",
}
QUESTION = "What is the capital of France? Think it through, then answer in one word."


def charged(reply: AIMessage) -> dict[str, int]:
    ledger = Ledger("memory://")
    ledger.registry.register("llama3.1", provider="ollama")
    handler = BudgetCallbackHandler(ledger, model="llama3.1", max_output_tokens=2_000)
    model = GenericFakeChatModel(messages=itertools.repeat(reply))
    model.invoke([HumanMessage(QUESTION)], config={"callbacks": [handler]})
    totals: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for key, value in row.values.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def test_a_cached_prompts_reply_is_charged_ollamas_exact_output_and_the_counted_input() -> None:
    cached = charged(AIMessage("Paris.", response_metadata=dict(CACHED)))
    unreported = charged(AIMessage("Paris."))  # nothing reported: the whole call estimated
    assert cached["output_tokens"] == 298
    assert cached["input_tokens"] == unreported["input_tokens"] > 10
    assert cached["estimated"] == 1
    assert cached["requests"] == 1


def test_both_counts_in_response_metadata_read_as_ollama_reports_them() -> None:
    full: dict[str, Any] = {**CACHED, "prompt_eval_count": 26}
    usage = usage_from_ollama(full)
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (26, 298, False)
