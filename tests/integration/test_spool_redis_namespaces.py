"""Two ledgers sharing one Redis under different namespaces keep their own default spools: usage
spooled by one while Redis was down is replayed into its own namespace, never into the other's."""

from __future__ import annotations

from pathlib import Path

import pytest

from redis_server import RedisServer
from tokenbudget_core import Usage
from tokenbudget_core.ledger import Ledger, default_spool_path
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration


def spent(ledger: Ledger) -> int:
    return ledger.store.totals(ledger.day(), [("g", "nanos")], 0)[("g", "nanos")][0]


def test_usage_spooled_in_one_namespace_is_replayed_only_there(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the default spools under tmp_path/.cache
    monkeypatch.delenv("TOKENBUDGET_SPOOL", raising=False)
    a = Ledger(RedisStore(server.url, namespace="tenant-a", socket_timeout=0.5), alerts=[])
    b = Ledger(RedisStore(server.url, namespace="tenant-b", socket_timeout=0.5), alerts=[])
    try:
        assert a.spool.path == default_spool_path(a.store)
        assert a.spool.path != b.spool.path
        assert a.spool.path.parent == tmp_path / ".cache" / "tokenbudget"
        r = a.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=100, user="alice")
        server.halt()
        assert a.commit(r, Usage(input_tokens=1000, output_tokens=100)).spooled
        server.resume()
        assert b.replay_spool() == 0  # tenant-b's spool is empty: tenant-a's usage is not its own
        assert not b.spool.pending()
        assert spent(b) == 0
        assert a.spool.pending()
        assert a.replay_spool() == 1
        assert spent(a) > 0
        assert spent(b) == 0
    finally:
        a.close()
        b.close()
