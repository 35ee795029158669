"""RedisStore through failures a long-running service meets: connections dropped mid-call,
write refusals, flushed scripts, huge batches, bad settings and bad credentials.

Each test runs a real ``redis-server`` and checks what a user relies on afterwards: a healthy
server is usable again, no usage is lost, and every error is a ``TokenBudgetError``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redis_server import RedisServer
from store_contract import DAY, reserve, totals
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server(redis_server_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary).start()
    yield server
    server.stop()


@pytest.fixture
def raw(own_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_server.url, decode_responses=True)
    yield client
    client.close()


def test_calls_dropped_mid_flight_never_use_up_the_connection_pool(
    own_server: RedisServer, raw: redis.Redis
) -> None:
    """Every timed-out call drops the scripts' connection; once the server answers again the store
    works, reads and writes, however many calls failed (here more than the pool may hold)."""
    s = RedisStore(own_server.url + "?max_connections=1", socket_timeout=0.2)
    try:
        assert reserve(s, "a", 10, 100).ok
        assert s.rollup([DAY]) == []  # a pool read while the scripts' connection is open
        raw.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # EVALSHA waits: the call times out
        try:
            for i in range(3):
                with pytest.raises(BudgetUnavailableError, match="Timeout"):
                    reserve(s, f"paused{i}", 10, 100)
        finally:
            raw.execute_command("CLIENT", "UNPAUSE")
        assert reserve(s, "b", 10, 100).ok
        assert s.rollup([DAY]) == []
        assert s.mark_once("alert", 60)
        assert totals(s)[1] >= 20
    finally:
        s.close()


def test_a_refused_write_keeps_the_connection(own_server: RedisServer, raw: redis.Redis) -> None:
    """An OOM reply leaves the connection in step: the store reports Redis unavailable without
    opening a new connection per refused call, and works again once the server takes writes."""
    s = RedisStore(own_server.url)
    try:
        assert reserve(s, "a", 10, 100).ok
        opened = int(raw.info("stats")["total_connections_received"])
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
        try:
            for i in range(5):
                with pytest.raises(BudgetUnavailableError, match="OutOfMemoryError"):
                    reserve(s, f"oom{i}", 10, 100)
        finally:
            raw.config_set("maxmemory", 0)
        assert reserve(s, "b", 10, 100).ok
        assert int(raw.info("stats")["total_connections_received"]) == opened
        assert totals(s) == (0, 20)
    finally:
        s.close()
