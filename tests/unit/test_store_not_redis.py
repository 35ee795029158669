"""A ``redis://`` URL that reaches a server speaking another protocol (an HTTP server on the
port, a typo in the port) is an unavailable store, like a refused connection: a
``BudgetUnavailableError`` in code, one ``error:`` line and exit 4 from the CLI, no traceback.

The server is a real local socket answering every connection the way an HTTP server answers
a request it cannot parse.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_UNAVAILABLE
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.redis import RedisStore

HTTP_REPLY = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>bad request</html>\r\n"


@pytest.fixture
def http_port() -> Iterator[int]:
    """The port of a local server that answers HTTP to whatever it receives."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(HTTP_REPLY)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_store_on_a_server_that_is_not_redis_is_unavailable(http_port: int) -> None:
    url = f"redis://127.0.0.1:{http_port}/0"
    store = RedisStore(url, socket_timeout=2)
    try:
        with pytest.raises(BudgetUnavailableError, match=f"127.0.0.1:{http_port}") as caught:
            store.rollup(["2026-11-18"])
        assert caught.value.store == url
    finally:
        store.close()


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("command", ["report", "budgets"])
def test_cli_on_a_server_that_is_not_redis(http_port: int, command: str, tmp_path: Path) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n', encoding="utf-8")
    extra = ["--policy", str(policy)] if command == "budgets" else []
    result = run(command, "--store", f"redis://127.0.0.1:{http_port}/0", *extra)
    assert_one_line_error(result, EXIT_UNAVAILABLE, f"redis://127.0.0.1:{http_port}/0", "InvalidResponse")
