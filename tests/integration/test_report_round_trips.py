"""A report's reads on Redis: a few round trips whatever its days and features, the same figures.

``build_report`` reads the rollup rows of its days and the cost samples of every (day, feature)
pair it has rows for. Over years of days and hundreds of features that is tens of thousands of
keys: one round trip each made a 366-day report take seconds on a real network. These tests
count what the client sends (every ``send_packed_command`` of redis-py's connections: one per
command, or one per pipeline) on a real server and a real three-node cluster, and check the
report against the samples read one pair at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.connection
from redis.cluster import RedisCluster

from store_contract import OnePairAtATime
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import Report, build_report
from tokenbudget_core.stores import redis as redis_store
from tokenbudget_core.stores.redis import RedisStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
DAYS = 40
FEATURES = [f"feature {i}:{{x}}" if i % 5 == 0 else f"feature-{i}" for i in range(45)]


def active(day: int, feature: int) -> bool:
    """Sparse: a feature is used on some days only (a report reads only those days' samples)."""
    return (day * 7 + feature * 3) % 4 != 0


def cluster_client(url: str) -> RedisCluster:
    return RedisCluster.from_url("redis://" + url.split("://", 1)[1])


def close_cluster(cluster: RedisCluster) -> None:
    """Close every node's connections (``RedisCluster.close`` leaves the nodes' pools open)."""
    for node in cluster.get_nodes():
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()
    cluster.close()


def flushed(url: str) -> None:
    """Empty the database (on a cluster: every primary)."""
    if url.startswith("redis+cluster://"):
        cluster = cluster_client(url)
        try:
            cluster.flushdb(target_nodes=RedisCluster.PRIMARIES)
        finally:
            close_cluster(cluster)
    else:
        with redis.Redis.from_url(url) as server:
            server.flushdb()


@pytest.fixture(scope="module", params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server or cluster of this module's own for the module (filled once: the tests only read)."""
    found: str = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    flushed(found)
    yield found
    flushed(found)


@pytest.fixture(scope="module")
def ledger(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A ledger on ``url`` with DAYS x FEATURES of recorded calls (sparse), its clock at NOW."""
    store = RedisStore(url)
    led = Ledger(store, clock=NOW.timestamp, spool_path=tmp_path_factory.mktemp("spool") / "spool")
    for d in range(DAYS):
        at = NOW - timedelta(days=d, hours=1)
        for f, feature in enumerate(FEATURES):
            if active(d, f):
                for n in range(1 + (d + f) % 3):
                    usage = Usage(input_tokens=100 * (1 + f % 7) + n, output_tokens=10 * (1 + d % 5))
                    led.record(usage, model="gpt-4o-mini", feature=feature, user=f"u{f % 4}", at=at)
    yield led
    store.close()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times redis-py's connections sent something (a round trip each), counted live."""
    count = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return count


def nodes(ledger: Ledger) -> int:
    return 3 if ledger.store.url.startswith("redis+cluster://") else 1


def report(ledger: Ledger, days: int) -> Report:
    return build_report(ledger, last_days=days, top=100)


def test_a_report_makes_a_few_round_trips_whatever_its_size(ledger: Ledger, sends: list[int]) -> None:
    report(ledger, 1)  # connected (a cluster client learns its slots first)
    sends[0] = 0
    small = report(ledger, 2)
    small_trips = sends[0]
    sends[0] = 0
    big = report(ledger, DAYS)
    pairs = sum(active(d, f) for d in range(DAYS) for f in range(len(FEATURES)))
    assert pairs > 1_000  # more (day, feature) pairs than one pipeline carries
    assert big.totals.requests > small.totals.requests
    # rollup of the days, cost samples counted (2 pipelines of 1,000 keys) then read (2 more),
    # rollup of the month so far: one round trip each on a server, at most one per node on a
    # cluster.
    assert sends[0] <= 6 * nodes(ledger), (sends[0], pairs)
    assert small_trips <= 4 * nodes(ledger)
    sends[0] = 0
    report(ledger, 366)  # ten times the days: no more round trips
    assert sends[0] <= 6 * nodes(ledger)


def test_the_batched_report_has_the_figures_of_reads_one_pair_at_a_time(
    ledger: Ledger, sends: list[int], tmp_path: Path
) -> None:
    slow = Ledger(OnePairAtATime(ledger.store), clock=ledger.clock, spool_path=tmp_path / "slow")  # type: ignore[arg-type]
    report(ledger, 1)
    sends[0] = 0
    batched = report(ledger, DAYS)
    batched_trips, sends[0] = sends[0], 0
    expected = report(slow, DAYS)
    assert batched.as_dict() == expected.as_dict()
    assert sends[0] > 10 * batched_trips  # the old way: a round trip per (day, feature)
    # p50/p95 over every sample of every day of the report, read pair by pair, for every feature.
    days = [(NOW.date() - timedelta(days=d)).isoformat() for d in range(DAYS)]
    stats = {s.feature: s for s in batched.call_costs}
    assert set(stats) == set(FEATURES)
    for feature in FEATURES:
        samples = [c for day in days for c in ledger.store.call_costs(day, quote(feature, safe=""))]
        assert stats[feature].calls == len(samples) > 0


@contextmanager
def commandstats(url: str) -> Iterator[dict[str, int]]:
    """Calls per command (``cmdstat_lrange``...) of every primary while the block runs."""
    if url.startswith("redis+cluster://"):
        cluster: RedisCluster | None = cluster_client(url)
        servers = [node.redis_connection for node in cluster.get_primaries()]
    else:
        cluster, servers = None, [redis.Redis.from_url(url)]
    calls: dict[str, int] = {}
    try:
        for server in servers:
            server.config_resetstat()
        yield calls
        for server in servers:
            for name, figures in server.info("commandstats").items():
                calls[name] = calls.get(name, 0) + figures["calls"]
    finally:
        if cluster is not None:
            close_cluster(cluster)
        else:
            servers[0].close()


def test_one_read_per_pair_with_rows_and_per_day(url: str, ledger: Ledger) -> None:
    with commandstats(url) as calls:
        report(ledger, 366)
    pairs = sum(active(d, f) for d in range(DAYS) for f in range(len(FEATURES)))
    assert calls["cmdstat_lrange"] == pairs < DAYS * len(FEATURES)  # no read of a pair without rows
    assert calls["cmdstat_hgetall"] == 366 + NOW.day  # the report's days, then the month's


def test_huge_reads_are_cut_into_pipelines_of_bounded_size(
    ledger: Ledger, sends: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "_READ_CHUNK", 100)
    store = ledger.store
    assert isinstance(store, RedisStore)
    days = [(NOW.date() - timedelta(days=d)).isoformat() for d in range(250)]
    pairs = [(day, f"f{i}") for i in range(3) for day in days]
    store.ping()
    sends[0] = 0
    found = store.call_costs_many(pairs)
    assert found == {pair: [] for pair in pairs}
    assert 8 <= sends[0] <= 8 * nodes(ledger)  # 750 keys: 8 pipelines of at most 100
