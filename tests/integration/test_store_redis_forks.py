"""A process forked while other threads are inside RedisStore calls: the child's calls answer.

``CLIENT PAUSE`` holds the server's replies for a moment, so the fork happens while one thread
waits for its round trip (the batch "being sent", the scripts' connection taken) and another
waits in the queue behind it. Before the fix the child inherited that state and its first
call waited forever for a round trip no thread of its own would ever finish.
"""

from __future__ import annotations

import os
import time

import pytest
import redis

from fork_support import call_in_thread, fork_while_spending, run_in_fork
from store_contract import commit, reserve, totals
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.redis import RedisStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform"),
]

PAUSE_MS = 1_500


def _nodes(url: str) -> list[redis.Redis]:
    """A client per server of ``url`` (each node of a cluster)."""
    if not url.startswith("redis+cluster://"):
        return [redis.Redis.from_url(url)]
    from redis.cluster import RedisCluster

    cluster = RedisCluster.from_url("redis://" + url.split("://", 1)[1])
    try:
        return [redis.Redis(host=n.host, port=n.port) for n in cluster.get_nodes()]
    finally:
        cluster.close()


@pytest.fixture(params=["single", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    name = "clean_redis_url" if request.param == "single" else "clean_redis_cluster_url"
    return request.getfixturevalue(name)


def test_a_child_forked_mid_round_trip_gets_answers(url: str) -> None:
    store = RedisStore(url, socket_timeout=10)
    nodes = _nodes(url)
    try:
        assert reserve(store, "before", 10, None).ok  # connected, scripts loaded
        for node in nodes:
            node.client_pause(PAUSE_MS, all=True)
        calls = [call_in_thread(lambda i=i: reserve(store, f"mid-fork-{i}", 5, None)) for i in range(2)]
        time.sleep(0.3)  # both inside reserve: one waiting for its reply, one queued behind it

        def child() -> None:
            assert reserve(store, "child", 7, None).ok  # (answered once the pause ends)
            assert commit(store, "child", 7).applied
            store.close()

        assert run_in_fork(child) == 0
        for thread, out in calls:
            thread.join(15)
            assert out
            assert out[0].ok  # type: ignore[union-attr]
        # The same server: the parent sees what the child wrote on its own connection.
        assert totals(store, "global") == (7, 20)
    finally:
        store.close()
        for node in nodes:
            node.close()


def test_ledger_forked_while_threads_are_busy(clean_redis_url: str) -> None:
    """The reviewer's case: worker threads spending through one ledger while the process forks
    (the first fork comes while one of them makes the first price lookup, importing genai-prices)."""
    ledger = Ledger(RedisStore(clean_redis_url), alerts=[])
    try:
        fork_while_spending(ledger, threads=4)
    finally:
        ledger.close()
