"""Review s30 (server #4): with Redis at ``maxmemory`` (reads answered, writes refused),
``/budget/reserve`` answers 503 (failing closed) or an unchecked reservation (failing open), yet
``/budget/check``, which only reads totals, said ``allowed`` and ``unchecked: false``. A check now
meets the store as reserve does: the write probe ``/health`` uses, remembered for a second."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from redis_server import RedisServer
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration

CALL = {"model": "gpt-4o-mini", "input_tokens": 10, "max_output_tokens": 10, "feature": "chat"}


@contextlib.contextmanager
def _full(url: str) -> Iterator[None]:
    """Redis at its ``maxmemory``: pings and reads answered, every write refused."""
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 1024)
    with contextlib.suppress(redis.exceptions.OutOfMemoryError):  # past its limit either way
        client.set("filler", "x" * 4096)
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def _service(url: str, mode: str, tmp_path: Path) -> TestClient:
    policy = BudgetPolicy(daily_usd="10", features={"chat": FeatureBudget(max_output_tokens_per_call=100)})
    ledger = Ledger(url, policy=policy, on_unavailable=mode, spool_path=tmp_path / f"{mode}.spool", alerts=[])  # type: ignore[arg-type]
    return TestClient(create_app(ledger))


def test_a_closed_service_refuses_checks_the_store_cannot_reserve(
    server: RedisServer, tmp_path: Path
) -> None:
    with _service(server.url, "closed", tmp_path) as c:
        assert c.post("/budget/check", json=CALL).json()["allowed"] is True
        time.sleep(1.1)  # past the remembered probe of the store that took writes
        with _full(server.url):
            reserve = c.post("/budget/reserve", json=CALL)
            check = c.post("/budget/check", json=CALL)
        assert reserve.status_code == 503
        assert check.status_code == 503, check.text
        assert check.json()["error"] == "budget_unavailable"
        assert "maxmemory" in check.json()["message"]


def test_an_open_service_says_unchecked_as_its_reservation_is(server: RedisServer, tmp_path: Path) -> None:
    with _service(server.url, "open", tmp_path) as c:
        with _full(server.url):
            reserve = c.post("/budget/reserve", json=CALL)
            check = c.post("/budget/check", json=CALL)
            too_long = c.post("/budget/check", json=CALL | {"max_output_tokens": 500})
        assert reserve.status_code == 201
        assert reserve.json()["unchecked"] is True
        assert check.status_code == 200
        assert check.json() == {
            "allowed": True,
            "step": "normal",
            "reserved_usd": reserve.json()["reserved_usd"],
            "unchecked": True,
        }
        # a per-call limit is refused before the store, by reserve as by check
        assert too_long.json()["allowed"] is False
        assert too_long.json()["budget"] == "max_output_tokens_per_call"


def test_a_check_is_checked_again_once_the_store_takes_writes(server: RedisServer, tmp_path: Path) -> None:
    with _service(server.url, "closed", tmp_path) as c:
        with _full(server.url):
            assert c.post("/budget/check", json=CALL).status_code == 503
        deadline = time.monotonic() + 10
        while (answer := c.post("/budget/check", json=CALL)).status_code != 200:  # the verdict expires
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert answer.json()["unchecked"] is False
