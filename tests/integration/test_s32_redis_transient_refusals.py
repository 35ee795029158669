"""A Redis that is up but takes no writes *for now* (``NOREPLICAS``: too few replicas in reach,
``MISCONF``: its RDB save failing, ``BUSY``: another client's slow script) is unavailable, as an
outage is, not a refusal for good: a fail-open ledger lets calls through, a fail-closed one
refuses them as unavailable, and usage spooled meanwhile stays in the spool (nothing moved to
``<spool>.bad``) and lands exactly once the server takes writes again.

Each test runs a real ``redis-server`` (the session's, its settings put back, or one of its own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_server import RedisServer
from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

POLICY = BudgetPolicy(user_daily_tokens=1_000_000)


def _reserve(ledger: Ledger) -> Any:
    return ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=100, user="u", feature="f")


def _bad_lines(spool: Path) -> int:
    bad = Path(str(spool) + ".bad")
    return len(bad.read_bytes().splitlines()) if bad.exists() else 0


def _check_no_writes_window(url: str, spool: Path) -> tuple[Ledger, Ledger, list[Any]]:
    """Ledgers on ``url`` (fail-open on ``spool``, and fail-closed) and two calls reserved while
    the server took writes; the caller then stops the server taking writes."""
    open_ledger = Ledger(url, policy=POLICY, on_unavailable="open", spool_path=spool, alerts=[])
    closed = Ledger(url, policy=POLICY, spool_path=spool.with_name("closed.jsonl"), alerts=[])
    return open_ledger, closed, [_reserve(open_ledger) for _ in range(2)]


def _while_no_writes(open_ledger: Ledger, closed: Ledger, held: list[Any], spool: Path) -> None:
    """What the ledgers do while the server takes no writes."""
    let_through = _reserve(open_ledger)  # fails open: not a RedisRefusedError
    assert let_through.unchecked
    with pytest.raises(BudgetUnavailableError, match="takes no writes for now"):
        _reserve(closed)
    for reservation in held:  # the calls went out: their usage is spooled
        assert open_ledger.commit(reservation, Usage(input_tokens=100, output_tokens=10)).spooled
    assert open_ledger.replay_spool() == 0  # still no writes: the lines wait in the spool
    open_ledger.catch_up()
    assert len(open_ledger.spool) == 2
    assert _bad_lines(spool) == 0


def _after(open_ledger: Ledger, spool: Path) -> None:
    """Once the server takes writes again: every spooled line lands, once."""
    assert open_ledger.replay_spool() == 2
    assert len(open_ledger.spool) == 0
    assert _bad_lines(spool) == 0
    # the two calls' 110 tokens each, nothing held any more (the let-through call held nothing)
    assert open_ledger.state(user="u", feature="f").used == {"user_daily_tokens (all features)": 220}


def test_noreplicas_is_unavailable_and_spooled_usage_waits_for_the_replicas(
    clean_redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spool = tmp_path / "s.jsonl"
    open_ledger, closed, held = _check_no_writes_window(clean_redis_url, spool)
    redis_client.config_set("min-replicas-to-write", 1)  # the replica is away for a moment
    try:
        with pytest.raises(redis.ResponseError, match=r"^NOREPLICAS"):
            redis_client.set("probe", 1)
        _while_no_writes(open_ledger, closed, held, spool)
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    _after(open_ledger, spool)


@pytest.fixture
def own_server(redis_server_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary).start()
    yield server
    server.stop()


def test_misconf_is_unavailable_and_spooled_usage_is_not_quarantined(
    own_server: RedisServer, tmp_path: Path
) -> None:
    spool = tmp_path / "s.jsonl"
    client = redis.Redis.from_url(own_server.url)
    open_ledger, closed, held = _check_no_writes_window(own_server.url, spool)
    data_dir = client.config_get("dir")["dir"]
    # the disk is gone from under Redis: its RDB save fails, and Redis stops taking writes
    client.config_set("save", "3600 1")
    shutil.rmtree(data_dir)
    try:
        client.bgsave()
        while client.info("persistence")["rdb_bgsave_in_progress"]:
            threading.Event().wait(0.01)
        assert client.info("persistence")["rdb_last_bgsave_status"] == "err"
        with pytest.raises(redis.ResponseError, match=r"^MISCONF"):
            client.set("probe", 1)
        _while_no_writes(open_ledger, closed, held, spool)
    finally:
        os.makedirs(data_dir, exist_ok=True)
    client.config_set("stop-writes-on-bgsave-error", "no")  # the disk is back: writes are taken
    _after(open_ledger, spool)
    client.close()


def test_busy_is_unavailable_and_a_fail_open_reserve_goes_through(
    clean_redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spool = tmp_path / "s.jsonl"
    open_ledger, closed, held = _check_no_writes_window(clean_redis_url, spool)
    threshold = redis_client.config_get("busy-reply-threshold")["busy-reply-threshold"]
    redis_client.config_set("busy-reply-threshold", 10)
    slow = redis.Redis.from_url(clean_redis_url)  # another client's script, running until killed

    def run_slow() -> None:
        with pytest.raises(redis.ResponseError):
            slow.eval("while true do end", 0)

    thread = threading.Thread(target=run_slow)
    thread.start()
    killer = redis.Redis.from_url(clean_redis_url)
    try:
        while True:  # until the server answers BUSY
            assert thread.is_alive(), "the slow script ended on its own"
            try:
                killer.ping()
            except redis.ResponseError as e:
                busy = str(e)
                break
        assert busy.startswith("BUSY")
        let_through = _reserve(open_ledger)
        assert let_through.unchecked
        with pytest.raises(BudgetUnavailableError, match="BUSY"):
            _reserve(closed)
        for reservation in held:
            assert open_ledger.commit(reservation, Usage(input_tokens=100, output_tokens=10)).spooled
        assert open_ledger.replay_spool() == 0
        assert len(open_ledger.spool) == 2
        assert _bad_lines(spool) == 0
    finally:
        while thread.is_alive():
            with contextlib.suppress(redis.ResponseError):  # not running yet, or killed already
                killer.script_kill()
            thread.join(0.05)
        redis_client.config_set("busy-reply-threshold", threshold)
        killer.close()
        slow.close()
    _after(open_ledger, spool)
