"""The dashboard's cache hit rate is the report's: cache hits per call of the users' own.

A semantic cache with a paid embedder records one overhead embedding call per lookup; those are
not calls a cache could have answered, so ``tokenbudget report`` and ``GET /usage/report`` leave
them out of the hit rate. The dashboard showed 30% where they show 60%.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.attribution import attribute, overhead
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.reports import build_report
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.server import create_app
from tokenbudget_core.server.dashboard import dashboard_data, static_file
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

QUESTIONS = [
    "What is a token?",
    "How do I reset my password?",
    "What is a token?",
    "What is a token?",
    "How do I reset my password?",
]


def embed(texts: list[str]) -> dict[str, Any]:
    """An OpenAI-shaped embeddings reply with usage (so each lookup is a paid overhead call)."""
    vectors = [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:16]] for t in texts]
    return {
        "data": [{"embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8 * len(texts), "total_tokens": 8 * len(texts)},
    }


def semantic_cache_ledger(tmp_path: Path) -> Ledger:
    """5 lookups through a semantic cache: 3 served hits, 2 misses answered by gpt-4o-mini."""
    prices = PriceTable(
        {"text-embedding-3-small": PriceOverride(input_mtok=Decimal("0.02"), output_mtok=Decimal(0))}
    )
    ledger = Ledger("memory://", prices=prices, spool_path=tmp_path / "spool.jsonl")
    embedder = as_embedder(embed, ledger=ledger, model="text-embedding-3-small")
    cache = SemanticCache(embedder=embedder, ledger=ledger, threshold=0.99)
    with attribute(feature="faq", user="u1"):
        for question in QUESTIONS:
            request = CacheRequest.from_text(model="gpt-4o-mini", prompt=question)
            if cache.lookup(request) is None:
                usage = Usage(input_tokens=500, output_tokens=50)
                ledger.record(usage, model="gpt-4o-mini")
                cache.store(request, CachedResponse(content="answer", model="gpt-4o-mini", usage=usage))
    return ledger


def test_the_dashboard_hit_rate_leaves_tokenbudgets_own_calls_out(tmp_path: Path) -> None:
    ledger = semantic_cache_ledger(tmp_path)
    totals = build_report(ledger, last_days=14).totals
    assert (totals.requests, totals.overhead_requests, totals.cache_hits) == (10, 5, 3)
    assert totals.hit_rate == Decimal("0.6")
    data = dashboard_data(ledger, last_days=14)["totals"]
    assert Decimal(data["cache_hit_rate"]) == totals.hit_rate  # it said 0.3
    # "3 of 5 calls answered from cache": the same calls as the rate
    assert (data["own_cache_hits"], data["own_requests"], data["overhead_requests"]) == (3, 5, 5)
    assert data["requests"] == totals.requests
    assert data["cache_hits"] == totals.cache_hits


def test_the_dashboard_and_the_report_endpoint_agree(tmp_path: Path) -> None:
    """Also with an overhead call answered from a cache (left out on both sides), over HTTP."""
    ledger = semantic_cache_ledger(tmp_path)
    with attribute(feature="chat", user="u2"), overhead("summariser"):
        ledger.record(Usage(requests=1), model="gpt-4o-mini", cache_hit=True, saved_usd=Decimal("0.001"))
    ledger.record(Usage(input_tokens=10, output_tokens=5), model="gpt-4o-mini", feature="chat", user="u2")
    with TestClient(create_app(ledger)) as client:
        report = client.get("/usage/report", params={"last_days": 14}).json()["totals"]
        dash = client.get("/dashboard/data", params={"last_days": 14}).json()["totals"]
    assert (report["cache_hits"], report["requests"], report["overhead_requests"]) == (4, 12, 6)
    assert report["hit_rate"] == "0.5"  # 3 of the 6 calls of the users' own
    assert Decimal(dash["cache_hit_rate"]) == Decimal(report["hit_rate"])
    assert (dash["own_cache_hits"], dash["own_requests"]) == (3, 6)
    for key in ("requests", "cost_usd", "active_users", "cache_hits", "saved_usd", "unpriced_requests"):
        assert dash[key] == report[key], key


def test_the_pages_cache_text_counts_the_same_calls() -> None:
    script = static_file("dashboard.js")[0].decode()
    assert "${int(totals.own_cache_hits)} of ${int(totals.own_requests)} calls answered from cache" in script
    assert "totals.cache_hits)} of ${int(totals.requests)}" not in script
