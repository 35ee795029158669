"""A throwaway three-node Redis Cluster on loopback, for integration tests.

:class:`RedisClusterServers` starts three ``redis-server`` processes in cluster mode (see
:class:`redis_server.RedisServer`), gives each a third of the 16384 hash slots with
``CLUSTER ADDSLOTSRANGE``, joins them with ``CLUSTER MEET`` and waits until every node reports
``cluster_state:ok``. Three primaries and no replicas: enough to route keys to different
nodes, which is what the tests need. The fixture that uses it lives in ``tests/conftest.py``;
``TOKENBUDGET_TEST_REDIS_CLUSTER_URL`` points the tests at an existing cluster instead.
"""

from __future__ import annotations

import time

from redis_server import RedisServer

__all__ = ["SLOT_RANGES", "RedisClusterServers"]

SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
"""The slots of each primary, as ``redis-cli --cluster create`` would split them."""


class RedisClusterServers:
    """Three cluster-mode ``redis-server`` processes joined into one cluster.

    Args:
        binary: Path of the ``redis-server`` executable.
        timeout: Seconds to wait for ``cluster_state:ok`` on every node.

    Example:
        >>> cluster = RedisClusterServers(find_redis_server()).start()  # doctest: +SKIP
        >>> cluster.url  # doctest: +SKIP
        'redis+cluster://127.0.0.1:41237'
        >>> cluster.stop()  # doctest: +SKIP
    """

    def __init__(self, binary: str, *, timeout: float = 20.0) -> None:
        self.binary = binary
        self.timeout = timeout
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterServers:
        """Start the nodes, assign the slots, join them, and wait for ``cluster_state:ok``.

        Raises:
            RuntimeError: A node did not start, or the cluster did not become healthy in time;
                every process started so far is stopped first.
        """
        try:
            for _ in SLOT_RANGES:
                self.nodes.append(RedisServer(self.binary, cluster=True).start())
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        import redis

        clients = [redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5) for node in self.nodes]
        try:
            for client, (first, last) in zip(clients, SLOT_RANGES, strict=True):
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            first_node = self.nodes[0]
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", first_node.port, first_node.bus_port)
            deadline = time.monotonic() + self.timeout
            states: list[str] = []
            while time.monotonic() < deadline:
                states = [str(client.cluster("INFO").get("cluster_state")) for client in clients]
                if all(state == "ok" for state in states):
                    return
                time.sleep(0.1)
            raise RuntimeError(
                f"the Redis Cluster did not reach cluster_state:ok in {self.timeout} s: {states}"
            )
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
