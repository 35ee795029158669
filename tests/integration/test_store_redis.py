"""RedisStore on a real Redis and a real three-node Redis Cluster.

The shared contract suite runs on both; the rest checks what only Redis can get wrong: the
same answers as the reference memory store under random operations, ids that try to forge
another scope's key, expiry of every key, one round trip per operation, reloading scripts
after ``SCRIPT FLUSH`` or a restart, and a clean ``BudgetUnavailableError`` when the server is
down or frozen.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from redis_server import RedisServer
from store_contract import DAY, ContractTests, commit, reserve, totals
from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError, MissingDependencyError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores import redis as redis_store
from tokenbudget_core.stores.base import Check, CommitRequest, LedgerStore, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration

# Ids that try every trick: separators of the key layout, glob and hash-tag characters,
# whitespace, non-ASCII, and text that looks already encoded.
EVIL = ["a", "a|nanos|spent", "a|nanos", "a:b", "a*", "{a}", "}{", "a b", "a\nb", "ü", "", "%61", "a%7Cnanos"]
KEY_RE = re.compile(
    r"^(\{tb:[A-Za-z0-9._%-]+\}:(bal|req|held|leases|rollup|costs:[A-Za-z0-9._%-]*)|tb:mark:[A-Za-z0-9._%-]+)$"
)


@pytest.fixture
def store(clean_redis_url: str) -> Iterator[RedisStore]:
    s = RedisStore(clean_redis_url)
    yield s
    s.close()


class TestRedisStore(ContractTests):
    pass


class TestRedisStoreOnResp2(ContractTests):
    """The same contract on a connection speaking RESP2 (redis-py 8 speaks RESP3 by default)."""

    @pytest.fixture
    def store(self, clean_redis_url: str) -> Iterator[RedisStore]:
        s = RedisStore(clean_redis_url + "?protocol=2")
        yield s
        assert s._wire is None or isinstance(s._wire, redis_store._RawWire)
        s.close()


@pytest.mark.parametrize("query", ["", "?protocol=2", "?protocol=3"])
def test_scripts_go_over_the_raw_socket_when_hiredis_packs(clean_redis_url: str, query: str) -> None:
    """The fast path is really taken: the scripts' connection is read and written directly
    (a plain socket, hiredis installed), whichever RESP version it speaks."""
    s = RedisStore(clean_redis_url + query)
    try:
        assert reserve(s, "a", 10, 100).ok
        assert isinstance(s._wire, redis_store._RawWire)
        assert totals(s) == (0, 10)
    finally:
        s.close()


class TestRedisStorePackedByRedisPy(ContractTests):
    """The same contract when hiredis is not installed (redis-py packs the commands)."""

    @pytest.fixture
    def store(self, clean_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisStore]:
        monkeypatch.setattr(redis_store, "_hiredis_pack", lambda: None)
        s = RedisStore(clean_redis_url)
        assert s._pack is None
        yield s
        s.close()


class TestRedisClusterStore(ContractTests):
    @pytest.fixture
    def store(self, clean_redis_cluster_url: str) -> Iterator[RedisStore]:
        s = RedisStore(clean_redis_cluster_url)
        yield s
        s.close()


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[RedisStore, Any]]:
    """A store on an empty single server or cluster, and a raw (decoding) client on the same data."""
    if request.param == "redis":
        url = request.getfixturevalue("clean_redis_url")
        raw: Any = redis.Redis.from_url(url, decode_responses=True)
    else:
        url = request.getfixturevalue("clean_redis_cluster_url")
        raw = RedisCluster.from_url("redis://" + url.split("://", 1)[1], decode_responses=True)
    s = RedisStore(url, retention_days=3)
    yield s, raw
    s.close()
    raw.close()


def all_keys(raw: Any) -> list[str]:
    if isinstance(raw, RedisCluster):
        return sorted(raw.keys(target_nodes=RedisCluster.PRIMARIES))
    return sorted(raw.keys())


def flush(raw: Any) -> None:
    if isinstance(raw, RedisCluster):
        raw.flushdb(target_nodes=RedisCluster.PRIMARIES)
    else:
        raw.flushdb()


def random_ops(s: LedgerStore, seed: int, steps: int = 400) -> list[object]:
    """Run a seeded random mix of every operation; return every answer."""
    rng = random.Random(seed)
    days = ["2026-11-23", "{x}:2026-11-24"]
    rids = [*EVIL, "r1", "r2", "r3"]
    now, answers = 1_000, []
    for _ in range(steps):
        now += rng.randint(0, 1_500)
        day, rid, op = rng.choice(days), rng.choice(rids), rng.random()
        checks = [
            Check(scope=rng.choice(EVIL), metric=rng.choice(["nanos", "tokens"]), amount=rng.randint(0, 60),
                  limit=rng.choice([None, 100, 200]))
            for _ in range(rng.randint(0, 3))
        ]  # fmt: skip
        if op < 0.4:
            lease = rng.randint(500, 4_000)
            req = ReserveRequest(day=day, request_id=rid, checks=checks, now_ms=now, lease_ms=lease)
            answers.append(s.reserve(req))
        elif op < 0.7:
            rollup = {"requests": 1, rng.choice(["cost_nanos", "a|b c"]): rng.randint(0, 9)}
            key, cost_key = rng.choice(EVIL), rng.choice([None, *EVIL])
            done = CommitRequest(
                day=day,
                request_id=rid,
                charges=checks,
                rollup_key=key,
                rollup=rollup,
                now_ms=now,
                call_cost_key=cost_key,
            )
            answers.append(s.commit(done))
        elif op < 0.85:
            answers.append(s.release(day, rid, now))
        elif op < 0.95:
            answers.append(s.totals(day, [(scope, m) for scope in EVIL for m in ("nanos", "tokens")], now))
        else:
            feature = rng.choice(EVIL)
            s.record_call_cost(day, feature, rng.randint(0, 99))
            answers.append(sorted(s.call_costs(day, feature)))
    rows = sorted((r.day, r.rollup_key, sorted(r.values.items())) for r in s.rollup(days))
    return [*answers, rows]


def test_answers_like_the_memory_store_under_random_operations(backend: tuple[RedisStore, Any]) -> None:
    s, raw = backend
    for seed in (1, 2, 5):
        flush(raw)
        expected = random_ops(MemoryStore(), seed)
        actual = random_ops(s, seed)
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert got == want, f"seed {seed}, step {i}"


def test_forged_ids_never_touch_another_scope(backend: tuple[RedisStore, Any]) -> None:
    s, _ = backend
    for i, scope in enumerate(EVIL):
        assert reserve(s, f"r{i}", 1 + i, None, scope=scope).ok
        assert commit(s, f"r{i}", 1 + i, scope=scope).applied
    for i, scope in enumerate(EVIL):
        assert totals(s, scope) == (1 + i, 0), scope
    for i, rid in enumerate(EVIL):  # request ids: each one its own request
        assert not reserve(s, rid, 1, None, scope=f"rid/{i}").duplicate
    for i, feature in enumerate(EVIL):
        s.record_call_cost(DAY, feature, i)
    assert [s.call_costs(DAY, f) for f in EVIL] == [[i] for i in range(len(EVIL))]
    assert all(s.mark_once(key, 60) for key in EVIL)


def test_key_names_hold_only_encoded_ids_and_one_day_is_one_slot(backend: tuple[RedisStore, Any]) -> None:
    s, raw = backend
    random_ops(s, seed=3, steps=150)
    s.mark_once("alert/x y/{z}", 60)
    keys = all_keys(raw)
    assert keys
    assert [k for k in keys if not KEY_RE.match(k)] == []
    for day in ("2026-11-23", "%7Bx%7D%3A2026-11-24"):
        day_keys = [k for k in keys if k.startswith(f"{{tb:{day}}}:")]
        assert len(day_keys) >= 4
        if isinstance(raw, RedisCluster):
            assert len({raw.keyslot(k) for k in day_keys}) == 1


def test_every_key_expires_after_the_retention(backend: tuple[RedisStore, Any]) -> None:
    s, raw = backend
    random_ops(s, seed=4, steps=150)
    s.mark_once("alert/1", 600)
    for key in all_keys(raw):
        ttl = raw.ttl(key)
        limit = 600 if key.startswith("tb:mark:") else 3 * 86_400
        assert limit - 60 < ttl <= limit, (key, ttl)


def test_request_ids_expire_sooner_than_balances(backend: tuple[RedisStore, Any]) -> None:
    s, raw = backend
    url = s.url
    short = RedisStore(url, retention_days=30, request_retention_days=2)
    try:
        random_ops(short, seed=5, steps=60)
        for key in all_keys(raw):
            if key.startswith("tb:mark:"):
                continue
            kind = key.rsplit(":", 1)[1]
            limit = 2 * 86_400 if kind in ("req", "held", "leases") else 30 * 86_400
            assert limit - 60 < raw.ttl(key) <= limit, (key, raw.ttl(key))
    finally:
        short.close()
    with pytest.raises(InvalidInputError, match="request_retention_days"):
        RedisStore(url, retention_days=3, request_retention_days=5)


def test_scripts_are_loaded_again_after_script_flush(backend: tuple[RedisStore, Any]) -> None:
    s, raw = backend
    assert reserve(s, "before", 10, 100).ok
    raw.script_flush()  # a cluster client sends it to every primary
    assert reserve(s, "after", 10, 100).ok
    assert commit(s, "after", 5).applied
    assert totals(s) == (5, 10)


def commands_sent(raw: redis.Redis, op: Callable[[], object]) -> list[str]:
    """The commands clients sent (not those scripts ran) while ``op`` ran, seen by ``MONITOR``."""
    with raw.monitor() as monitor:
        op()
        raw.echo("end-of-op")  # on another connection: ends the capture
        seen = []
        while not (seen and seen[-1]["command"] == "ECHO end-of-op"):
            seen.append(monitor.next_command())
    ours = [c for c in seen if c["client_type"] != "lua" and c["client_port"] != seen[-1]["client_port"]]
    return [c["command"].split(" ", 1)[0] for c in ours]


def test_each_operation_is_one_round_trip(store: RedisStore, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    fresh = (f"id-{i}" for i in itertools.count())
    operations = {
        "reserve": lambda: reserve(store, next(fresh), 10, 1_000),
        "duplicate reserve": lambda: reserve(store, "same", 10, 1_000),
        "refused reserve": lambda: reserve(store, next(fresh), 10_000, 1_000),
        "commit": lambda: commit(store, next(fresh), 5),
        "release": lambda: store.release(DAY, next(fresh), 3_000),
        "totals": lambda: totals(store),
        "record_call_cost": lambda: store.record_call_cost(DAY, "f", 3),
    }
    try:
        for op in operations.values():  # open the connection and load each script (NOSCRIPT, SCRIPT LOAD)
            op()
        for name, op in operations.items():
            assert commands_sent(raw, op) == ["EVALSHA"], name
    finally:
        raw.close()


def test_amounts_are_exact_integers_beyond_double_precision(store: RedisStore) -> None:
    big = 2**53 - 1
    assert reserve(store, "a", big - 1, big).ok
    assert reserve(store, "b", 1, big).ok  # spent + reserved + amount == limit: fits exactly
    refused = reserve(store, "c", 1, big)
    assert not refused.ok
    assert refused.used == big
    commit(store, "a", big)
    commit(store, "x", big)
    assert totals(store) == (2 * big, 1)  # HINCRBY, never float arithmetic
    with pytest.raises(InvalidInputError):
        reserve(store, "d", 2**53, None)
    with pytest.raises(InvalidInputError):
        reserve(store, "e", 1.5, None)  # type: ignore[arg-type]


def test_namespaces_keep_ledgers_apart(store: RedisStore, clean_redis_url: str) -> None:
    other = RedisStore(clean_redis_url, namespace="other")
    try:
        assert reserve(store, "r", 10, None).ok
        assert totals(other) == (0, 0)
        assert not reserve(other, "r", 20, None).duplicate
        assert totals(other) == (0, 20)
        assert totals(store) == (0, 10)
    finally:
        other.close()


def test_open_store_routes_redis_urls(clean_redis_url: str) -> None:
    s = open_store(clean_redis_url, retention_days=1)
    try:
        assert isinstance(s, RedisStore)
        assert isinstance(s, LedgerStore)
        s.ping()
    finally:
        s.close()


def test_a_database_the_server_does_not_have_is_a_bad_store_url(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    s = RedisStore(f"{base}/99999")
    try:
        for operation in (s.ping, lambda: reserve(s, "r", 1, None), lambda: s.rollup([DAY])):
            with pytest.raises(InvalidInputError) as e:
                operation()
            assert e.value.field == "store"
            assert "no such database" in str(e.value)
    finally:
        s.close()


def test_a_ledger_refuses_to_reserve_a_committed_request_id_again(
    clean_redis_url: str, tmp_path: Any
) -> None:
    from tokenbudget_core import Usage
    from tokenbudget_core.ledger import Ledger

    ledger = Ledger(clean_redis_url, spool_path=tmp_path / "spool.jsonl")
    try:
        r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, request_id="once")
        assert ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, request_id="once") == r
        ledger.commit(r, Usage(input_tokens=10, output_tokens=10))
        with pytest.raises(InvalidInputError) as e:
            ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, request_id="once")
        assert e.value.field == "request_id"
        assert "already committed" in str(e.value)
    finally:
        ledger.close()


@pytest.fixture
def own_server(redis_server_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary).start()
    yield server
    server.stop()


def test_unreachable_server_raises_budget_unavailable_quickly(own_server: RedisServer) -> None:
    url = f"redis://:s3cret@127.0.0.1:{own_server.port}/0"
    own_server.stop()
    s = RedisStore(url, socket_timeout=0.5)
    try:
        for call in (lambda: reserve(s, "r", 1, 10), s.ping, lambda: s.rollup([DAY])):
            started = time.monotonic()
            with pytest.raises(BudgetUnavailableError) as info:
                call()
            assert time.monotonic() - started < 0.5 + 1.5
            assert isinstance(info.value, ConnectionError)
            assert f"127.0.0.1:{own_server.port}" in str(info.value)
            assert "s3cret" not in str(info.value)
    finally:
        s.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
def test_frozen_server_times_out_and_a_restart_is_survived(own_server: RedisServer) -> None:
    s = RedisStore(own_server.url, socket_timeout=0.5)
    try:
        assert reserve(s, "a", 10, 100).ok
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BudgetUnavailableError, match="Timeout"):
                reserve(s, "b", 10, 100)
            assert 0.4 < time.monotonic() - started < 0.5 + 1.5  # socket_timeout, not retries
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        own_server.halt()
        with pytest.raises(BudgetUnavailableError):
            s.ping()
        own_server.resume()  # no persistence: an empty server without the scripts (NOSCRIPT)
        assert reserve(s, "c", 10, 100).ok
        assert totals(s) == (0, 10)
    finally:
        s.close()


def test_a_server_refusing_writes_is_unavailable_and_then_used_again(own_server: RedisServer) -> None:
    """OOM (maxmemory reached) or READONLY (a replica during a failover) refuse every write: the
    store reports Redis unavailable (the ledger then fails open or closed), alone or in a batch,
    and works again once the server takes writes."""
    raw = redis.Redis.from_url(own_server.url)
    s = RedisStore(own_server.url)
    try:
        assert reserve(s, "a", 10, 100).ok
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
        with pytest.raises(BudgetUnavailableError, match="OutOfMemoryError"):
            reserve(s, "b", 10, 100)
        with pytest.raises(BudgetUnavailableError, match="OutOfMemoryError"):  # the whole round trip
            s.reserve_many(
                [
                    ReserveRequest(day=DAY, request_id=f"m{i}", checks=[], now_ms=0, lease_ms=1)
                    for i in range(3)
                ]
            )
        raw.config_set("maxmemory", 0)
        assert reserve(s, "c", 10, 100).ok
        assert totals(s) == (0, 20)
    finally:
        s.close()
        raw.close()


def test_a_restart_while_idle_costs_no_refusal(own_server: RedisServer) -> None:
    """The first operation after a server restart (or an idle timeout that closed the connection)
    goes through on a fresh connection: a healthy Redis never refuses a call."""
    s = RedisStore(own_server.url)
    try:
        assert reserve(s, "a", 10, 100).ok
        own_server.halt()
        own_server.resume()
        assert reserve(s, "b", 10, 100).ok
        raw = redis.Redis.from_url(own_server.url)
        raw.client_kill_filter(_type="normal", skipme=True)  # what an idle timeout does
        raw.close()
        assert reserve(s, "c", 10, 100).ok
        assert totals(s) == (0, 20)  # the restart lost "a" (no persistence)
    finally:
        s.close()


def test_a_failed_reconnect_leaves_no_stale_socket_behind(own_server: RedisServer) -> None:
    """A store whose reconnect failed (the server was down) works again once the server is back,
    even after another connection took the file descriptor its closed socket had."""
    a = RedisStore(own_server.url, socket_timeout=0.5)
    b = RedisStore(own_server.url, socket_timeout=0.5)
    try:
        assert reserve(a, "a1", 10, 100).ok
        own_server.halt()
        with pytest.raises(BudgetUnavailableError):
            reserve(a, "a2", 10, 100)
        own_server.resume()
        assert reserve(b, "b1", 10, 100).ok  # b's socket may reuse the descriptor a's had
        assert reserve(a, "a3", 10, 100).ok
        assert totals(a) == (0, 20)
    finally:
        a.close()
        b.close()


def _reserve_in_child(s: RedisStore, conn: Any) -> None:
    conn.send([reserve(s, f"child{i}", 1, 1_000).ok for i in range(20)])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_uses_a_connection_of_its_own(store: RedisStore) -> None:
    """A store used before a fork keeps working in the parent and the child (the script
    connection is never shared across processes, where replies would cross)."""
    import multiprocessing

    assert reserve(store, "parent0", 1, 1_000).ok
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reserve_in_child, args=(store, child))
    proc.start()
    parent_ok = [reserve(store, f"parent{i}", 1, 1_000).ok for i in range(1, 21)]
    child_ok = parent.recv()
    proc.join(10)
    assert proc.exitcode == 0
    assert all(parent_ok)
    assert all(child_ok)
    assert totals(store) == (0, 41)


def test_unreachable_cluster_fails_on_use_not_on_construction(own_server: RedisServer) -> None:
    port = own_server.port
    own_server.stop()
    s = RedisStore(f"redis+cluster://127.0.0.1:{port}", socket_timeout=0.5)
    try:
        with pytest.raises(BudgetUnavailableError):
            s.ping()
    finally:
        s.close()


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"tokenbudget-kit\[redis\]"):
        RedisStore("redis://127.0.0.1:1/0")
