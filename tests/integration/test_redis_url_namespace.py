"""A ledger shared under a Redis namespace is read back from its URL alone: by ``Ledger(url)``,
``tokenbudget report`` / ``budgets`` (``--store`` or ``$TOKENBUDGET_STORE``, or ``--namespace``), with the
retention the URL names. Before, the URL refused ``?namespace=`` and the CLI, offered no other
way, reported the default namespace: an empty ledger, $0, without a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cli_support import run
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.redis import RedisStore
from tokenbudget_core.usage import Usage

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated")]

USAGE = Usage(input_tokens=1_000, output_tokens=100)


@pytest.fixture(params=["single", "cluster"])
def url_and_raw(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    if request.param == "single":
        url = request.getfixturevalue("clean_redis_url")
        raw: Any = redis.Redis.from_url(url, decode_responses=True)
    else:
        url = request.getfixturevalue("clean_redis_cluster_url")
        raw = RedisCluster.from_url("redis://" + url.split("://", 1)[1], decode_responses=True)
    yield url, raw
    raw.close()


def _record(url: str, namespace: str, calls: int) -> None:
    ledger = Ledger(RedisStore(url, namespace=namespace), alerts=[])
    try:
        for i in range(calls):
            ledger.record(USAGE, model="gpt-4o", feature="support", user=f"u{i}")
    finally:
        ledger.close()


def test_the_url_alone_reads_the_namespace_the_app_writes(url_and_raw: tuple[str, Any]) -> None:
    url, _ = url_and_raw
    _record(url, "prod", 5)
    _record(url, "staging", 2)
    sep = "&" if "?" in url else "?"
    for query, requests in ((f"{sep}namespace=prod", 5), (f"{sep}namespace=staging", 2), ("", 0)):
        ledger = Ledger(url + query, alerts=[])
        try:
            assert build_report(ledger, last_days=1).totals.requests == requests
        finally:
            ledger.close()


def test_the_url_retention_sets_the_keys_lifetime(url_and_raw: tuple[str, Any]) -> None:
    url, raw = url_and_raw
    sep = "&" if "?" in url else "?"
    ledger = Ledger(f"{url}{sep}namespace=short&retention_days=2", alerts=[])
    try:
        ledger.record(USAGE, model="gpt-4o", feature="support", user="u")
    finally:
        ledger.close()
    keys = [k for k in _keys(raw) if k.startswith("{short:")]
    assert keys
    for key in keys:
        assert 0 < raw.ttl(key) <= 2 * 86_400


def _keys(raw: Any) -> list[str]:
    if isinstance(raw, RedisCluster):
        return list(raw.keys(target_nodes=RedisCluster.PRIMARIES))
    return list(raw.keys())


def test_the_cli_reports_a_namespaced_ledger(
    clean_redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(clean_redis_url, "prod", 5)
    store = f"{clean_redis_url}?namespace=prod"
    report = run("report", "--store", store, "--days", "1", "--json")
    assert report.exit_code == 0, report.output
    totals = json.loads(report.stdout)["totals"]
    assert totals["requests"] == 5
    assert Decimal(totals["cost_usd"]) == 5 * cost_of(USAGE, "gpt-4o")
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\n')
    monkeypatch.setenv("TOKENBUDGET_STORE", store)
    budgets = run("budgets", "--policy", str(policy), "--json")
    assert budgets.exit_code == 0, budgets.output
    (row,) = json.loads(budgets.stdout)["budgets"]
    assert Decimal(row["used"]) == 5 * cost_of(USAGE, "gpt-4o")  # the namespace's, not the default's $0


def test_the_namespace_flag_reads_the_same_ledger(clean_redis_url: str, tmp_path: Path) -> None:
    _record(clean_redis_url, "prod", 5)
    _record(clean_redis_url, "tb", 1)  # the default namespace
    for args, requests in (
        (("--namespace", "prod"), 5),
        (("--namespace", "tb"), 1),
        ((), 1),
        (("--namespace", "nobody"), 0),
    ):
        report = run("report", "--store", clean_redis_url, *args, "--days", "1", "--json")
        assert report.exit_code == 0, report.output
        assert json.loads(report.stdout)["totals"]["requests"] == requests
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\n')
    budgets = run(
        "budgets", "--store", f"{clean_redis_url}?socket_timeout=5", "--namespace", "prod",
        "--policy", str(policy), "--json",
    )  # fmt: skip
    assert budgets.exit_code == 0, budgets.output
    (row,) = json.loads(budgets.stdout)["budgets"]
    assert Decimal(row["used"]) == 5 * cost_of(USAGE, "gpt-4o")
