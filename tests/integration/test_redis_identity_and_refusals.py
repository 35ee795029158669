"""A Redis ledger restarted with its URL spelled differently (a redis-py option added, the
database left implicit) is the same store: it replays what it spooled before. A retention Redis
cannot represent is refused when the store is built, and an error reply of the server surfaces
as a named :class:`RedisRefusedError`, never a raw redis-py error."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from redis_server import RedisServer
from tokenbudget_core import Usage
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import Check, CommitRequest
from tokenbudget_core.stores.redis import RedisRefusedError, RedisStore

pytestmark = pytest.mark.integration

DAY = "2026-11-23"


def spent(ledger: Ledger) -> int:
    return ledger.store.totals(ledger.day(), [("g", "nanos")], 0)[("g", "nanos")][0]


def test_a_ledger_restarted_with_another_spelling_of_its_url_replays_its_spool(
    server: RedisServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"  # shared, as $TOKENBUDGET_SPOOL would be
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    before = Ledger(f"redis://127.0.0.1:{port}/0?socket_timeout=0.5", spool_path=spool, alerts=[])
    try:
        server.halt()
        charge = before.record(Usage(input_tokens=1000, output_tokens=100), model="gpt-4o", user="u")
        assert charge.spooled
    finally:
        before.close()
        server.resume()
    after = Ledger(
        f"redis://127.0.0.1:{port}?health_check_interval=30&client_name=restarted",
        spool_path=spool,
        alerts=[],
    )
    try:
        assert len(after.spool) == 1
        assert after.replay_spool() == 1
        assert spent(after) > 0
        assert len(after.spool) == 0
    finally:
        after.close()


@pytest.mark.parametrize(
    "query", ["retention_days=200000000000", "retention_days=99999999999999999999", "retention_days=36501"]
)
def test_a_retention_redis_cannot_hold_is_refused_when_built(server: RedisServer, query: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        RedisStore(f"{server.url}?namespace=r4&{query}")
    assert "retention_days=" in str(e.value)
    assert "36500" in str(e.value)
    with pytest.raises(InvalidInputError) as e:
        RedisStore(server.url, retention_days=200_000_000_000)
    assert e.value.field == "retention_days"


def test_the_longest_retention_is_taken_by_every_commit(server: RedisServer, tmp_path: Path) -> None:
    ledger = Ledger(
        f"{server.url}?retention_days=36500&request_retention_days=36500",
        spool_path=tmp_path / "s.jsonl",
        alerts=[],
    )
    try:
        charge = ledger.record(Usage(input_tokens=10, output_tokens=1), model="gpt-4o-mini")
        assert charge.applied
    finally:
        ledger.close()


def commit_req(rid: str) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=5)],
        rollup_key="//m",
        rollup={"requests": 1},
        now_ms=0,
    )


def test_an_error_reply_is_a_named_error(server: RedisServer) -> None:
    # Another application wrote a string where the ledger keeps a hash: every script on that
    # day fails on the server (WRONGTYPE).
    redis.Redis.from_url(server.url).set("{tb:2026-11-23}:bal", "not a hash")
    store = RedisStore(server.url)
    try:
        with pytest.raises(RedisRefusedError) as e:
            store.commit(commit_req("r1"))
        assert isinstance(e.value, TokenBudgetError)
        assert isinstance(e.value, RuntimeError)
        assert "WRONGTYPE" in str(e.value)
        assert e.value.store == server.url
        assert "namespace" in str(e.value)  # the next step
        (outcome,) = store.commit_many([commit_req("r2")])
        assert isinstance(outcome, RedisRefusedError)
        assert isinstance(outcome.__cause__, redis.exceptions.ResponseError)
    finally:
        store.close()
