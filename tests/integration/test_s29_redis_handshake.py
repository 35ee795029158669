"""A Redis URL whose server answers the connection handshake with something redis-py cannot
read (another service on the port, a proxy speaking only an older protocol) is an unreachable
store: fail closed refuses with BudgetUnavailableError, fail open spools the usage. It was a bare
AttributeError from inside redis-py, and the usage was in no store and no spool."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbudget_core import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

USAGE = Usage(input_tokens=1000, output_tokens=100)


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A loopback server answering every request with a RESP array (HELLO 3 expects a map)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"redis://127.0.0.1:{port}/0"
    server.close()


def test_fail_open_spools_the_usage(not_redis: str, tmp_path: Path) -> None:
    ledger = Ledger(not_redis, on_unavailable="open", spool_path=tmp_path / "spool.jsonl")
    reservation = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=5, user="u")
    assert reservation.unchecked
    assert ledger.record(USAGE, model="gpt-4o", user="u").spooled
    assert ledger.commit(reservation, USAGE).spooled
    assert len(ledger.spool) == 2


def test_fail_closed_refuses_naming_the_handshake(not_redis: str, tmp_path: Path) -> None:
    ledger = Ledger(not_redis, spool_path=tmp_path / "spool.jsonl")
    with pytest.raises(BudgetUnavailableError, match="handshake"):
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=5, user="u")
    charge = ledger.record(USAGE, model="gpt-4o", user="u")  # usage is never lost: spooled
    assert charge.spooled
