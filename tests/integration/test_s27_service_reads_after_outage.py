"""The HTTP service after a store outage (review s27 A2, A6): usage spooled while Redis was down is
in /usage/report once it is back even when only reads come (a report read the store directly and
never replayed: '0 calls' for as long as no call was made), and /health is 503 while Redis answers
pings but refuses writes (at maxmemory: every reservation refused, /health said 200 ok)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from redis_server import RedisServer
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration


def test_a_report_after_an_outage_counts_the_spooled_usage_without_any_write(
    server: RedisServer, tmp_path: Path
) -> None:
    ledger = Ledger(
        server.url + "?socket_timeout=1&socket_connect_timeout=1",
        policy=BudgetPolicy(daily_usd="5"),
        on_unavailable="open",
        spool_path=tmp_path / "spool.jsonl",
        alerts=[],
    )
    with TestClient(create_app(ledger)) as client:
        server.halt(kill=True)
        for i in range(10):
            body = {"model": "gpt-4o", "usage": {"input_tokens": 1000, "output_tokens": 100}, "user": f"u{i}"}
            assert client.post("/usage/record", json=body).json()["spooled"]
        server.resume()
        totals = client.get("/usage/report", params={"last_days": 1}).json()["totals"]
    assert totals["requests"] == 10
    assert totals["cost_usd"] == "0.035"
    assert not ledger.spool.pending()


def test_health_is_down_while_the_store_answers_but_takes_no_writes(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory-policy", "noeviction")
    ledger = Ledger(server.url, policy=BudgetPolicy(daily_usd="5"), alerts=[])
    with TestClient(create_app(ledger)) as http:
        assert http.get("/health").status_code == 200
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 1024)  # full: pings answered, writes refused
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):  # past its limit either way
            client.set("filler", "x" * 4096)
        try:
            health = http.get("/health")
            metrics = http.get("/metrics").text
            reserve = http.post("/budget/reserve", json={"model": "gpt-4o", "input_tokens": 10})
        finally:
            client.config_set("maxmemory", 0)
        assert reserve.status_code == 503
        assert health.status_code == 503
        assert health.json()["status"] == "down"
        assert "tokenbudget_store_up 0" in metrics
        assert http.get("/health").status_code == 200
