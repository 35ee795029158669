"""``tokenbudget demo --live`` through the official OpenAI SDK (ChatOpenAI) against the loopback server."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from provider_server import OpenAIReply, ProviderServer

from langchain_tokenbudget.demo_pipeline import run_demo
from tokenbudget_core import cost_of
from tokenbudget_core.usage import Usage


def test_live_demo_charges_what_the_provider_reported(
    provider_server: ProviderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_BASE_URL", provider_server.url + "/v1")
    calls = 2 * 3 * 2  # users x turns x stages
    provider_server.queue(*[OpenAIReply(prompt_tokens=900 + i, completion_tokens=40) for i in range(calls)])
    summary = run_demo(
        store=f"sqlite:///{tmp_path / 'live.db'}", users=2, turns=3, stages=["baseline", "routing"], live=True
    )
    chats = [r for r in provider_server.requests if r.path.endswith("/chat/completions")]
    baseline, routed = summary.rows
    # The routing stage includes the stages before it, caching among them: hits make no request.
    assert len(chats) == baseline.stats.calls + routed.stats.calls
    assert routed.stats.calls + routed.stats.cache_hits == 6
    # The baseline's six calls went to the premium model and were charged the reported usage.
    assert {r.body["model"] for r in chats[:6]} == {"gpt-4o"}
    assert baseline.input_tokens == sum(900 + i for i in range(6))
    assert baseline.output_tokens == 6 * 40
    assert baseline.cost_usd == sum(
        (cost_of(Usage(input_tokens=900 + i, output_tokens=40), "gpt-4o") for i in range(6)), Decimal(0)
    )
    # Routing sent the simple turns to the cheap tier, for real.
    models = [r.body["model"] for r in chats[6:]]
    assert "gpt-4o-mini" in models
    assert routed.stats.routed_cheap == models.count("gpt-4o-mini")
    assert routed.cost_usd < baseline.cost_usd


def test_demo_on_redis_reports_what_it_reports_on_sqlite(clean_redis_url: str, tmp_path: Path) -> None:
    """The store is a deployment choice: the same seeded replay gives the same table on both."""
    on_redis = run_demo(store=clean_redis_url, users=4, turns=5, seed=3)
    on_sqlite = run_demo(store=f"sqlite:///{tmp_path / 'l.db'}", users=4, turns=5, seed=3)
    fields = ("stage", "requests", "input_tokens", "output_tokens", "cost_usd", "routing_saved_usd")
    assert [tuple(getattr(r, f) for f in fields) for r in on_redis.rows] == [
        tuple(getattr(r, f) for f in fields) for r in on_sqlite.rows
    ]
    assert on_redis.store.startswith("redis://")
