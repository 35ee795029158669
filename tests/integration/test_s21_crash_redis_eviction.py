"""A Redis that may evict the ledger's keys is reported (review s21, finding 2).

Every ledger key carries a TTL, so under any ``volatile-*`` or ``allkeys-*`` maxmemory policy
Redis may evict spend, holds and request ids (spend forgotten, users locked out, a retried
commit counted twice). The store reads the policy after its first call that reaches Redis and
logs a WARNING once (it does not refuse: managed Redis defaults differ); with an ACL that
refuses ``CONFIG`` it reads ``INFO memory`` instead. Each test runs a server of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from redis_server import RedisServer
from store_contract import commit, reserve
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration

LOGGER = "tokenbudget.stores.redis"


@pytest.fixture
def server(redis_server_binary: str) -> Iterator[RedisServer]:
    s = RedisServer(redis_server_binary).start()
    try:
        yield s
    finally:
        s.stop()


def _set_policy(server: RedisServer, policy: str) -> None:
    import redis

    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("maxmemory-policy", policy)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _use(store: RedisStore) -> None:
    """A few calls, the first of which reaches Redis."""
    try:
        assert reserve(store, "r1", 10, 1_000).ok
        assert commit(store, "r1", 10).applied
        assert reserve(store, "r2", 10, 1_000).ok
    finally:
        store.close()


def test_an_evicting_policy_is_warned_about_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    _set_policy(server, "allkeys-lru")  # as a server started with --maxmemory-policy allkeys-lru
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _use(RedisStore(server.url))
    [warning] = _warnings(caplog)  # once per store, not per call
    assert "allkeys-lru" in warning
    assert "maxmemory-policy noeviction" in warning


def test_the_policy_is_read_from_info_when_the_acl_refuses_config(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    _set_policy(server, "volatile-lru")  # managed Redis' usual default
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "app", "on", ">secret", "~*", "&*", "+@all", "-config")
    url = server.url.replace("redis://", "redis://app:secret@")
    with redis.Redis.from_url(url) as app, pytest.raises(redis.exceptions.NoPermissionError):
        app.config_get("maxmemory-policy")  # the user the store connects as cannot run CONFIG
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _use(RedisStore(url))
    [warning] = _warnings(caplog)
    assert "volatile-lru" in warning


def test_noeviction_is_not_warned_about(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    _set_policy(server, "noeviction")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _use(RedisStore(server.url))
    assert _warnings(caplog) == []
    assert not [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]  # read, no INFO note
