"""A cache hit lands on the model row its call is charged on (review s20, finding 2).

A provider answers a request for ``gpt-4o`` naming the snapshot that served it; the callback
handler charges the call on ``gpt-4o``, so the hit must be recorded there too (one row with the
model's real hit rate), while what the hit saved stays priced on the model that answered.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget.budget_callback import BudgetCallbackHandler
from langchain_tokenbudget.llm_cache import TokenBudgetLLMCache
from tokenbudget_core.attribution import attribute
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.usage import Usage

# a dated snapshot the registry prices as a model of its own (not an alias of gpt-4o)
ANSWERED = "gpt-4o-2024-05-13"
USAGE = Usage(input_tokens=1000, output_tokens=100)


class _SnapshotNamingChat(GenericFakeChatModel):
    """Asked as ``gpt-4o``; its replies name the snapshot that answered, as ChatOpenAI's do."""

    model_name: str = "gpt-4o"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": 0}

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"model_name": self.model_name, "model": self.model_name, "temperature": 0}


def _reply(i: int) -> AIMessage:
    return AIMessage(
        f"answer {i}",
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": ANSWERED, "finish_reason": "stop"},
    )


def test_langchain_hits_share_the_charged_models_row() -> None:
    ledger = Ledger("memory://")
    chat = _SnapshotNamingChat(
        messages=iter([_reply(i) for i in range(10)]), cache=TokenBudgetLLMCache(ExactCache(ledger=ledger))
    )
    handler = BudgetCallbackHandler(ledger)
    with attribute(feature="faq", user="u1"):
        for question in ["q1", "q2", "q3", "q1", "q2", "q1"]:  # 3 calls, 3 hits
            chat.invoke(question, config={"callbacks": [handler]})
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(r.key, r.requests, r.cache_hits) for r in rows] == [("gpt-4o", 6, 3)]
    # each hit saved what the call cost on the model that answered
    assert rows[0].saved_usd == 3 * cost_of(USAGE, ANSWERED)


def test_exact_cache_records_a_hit_on_the_requested_model() -> None:
    ledger = Ledger("memory://")
    cache = ExactCache(ledger=ledger)
    request = CacheRequest.from_text(model="gpt-4o", prompt="Capital of France?", params={"temperature": 0})
    assert cache.store(request, CachedResponse(content="Paris.", model=ANSWERED, usage=USAGE))
    hit = cache.lookup(request)
    assert hit is not None
    assert hit.saved_usd == cost_of(USAGE, ANSWERED)
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(r.key, r.cache_hits, r.saved_usd) for r in rows] == [("gpt-4o", 1, cost_of(USAGE, ANSWERED))]


def test_a_request_model_the_registry_does_not_know_records_the_hit_on_the_answering_model() -> None:
    ledger = Ledger("memory://")
    cache = ExactCache(ledger=ledger)
    request = CacheRequest.from_text(
        model="my-wrapper", prompt="Capital of France?", params={"temperature": 0}
    )
    assert cache.store(request, CachedResponse(content="Paris.", model="gpt-4o-mini", usage=USAGE))
    assert cache.lookup(request) is not None
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(r.key, r.cache_hits) for r in rows] == [("gpt-4o-mini", 1)]
