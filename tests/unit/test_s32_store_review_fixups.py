"""Regression review s32 of the store fixes: a Redis 6 script error naming a server that takes no
writes for now (redis-py strips its ``ERR`` code) is unavailability, as on Redis 7; and a ledger
whose spool lies in a folder the process cannot even look into is still built (fail-closed: a
warning naming the spool), never a bare ``PermissionError``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis._parsers.base import BaseParser

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.redis import _transient

SCRIPT_ERROR = "ERR Error running script (call to f_0123abcd): @user_script:12: @user_script: 12: -{}"


@pytest.mark.parametrize(
    "reply",
    [
        "MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.",
        "NOREPLICAS Not enough good replicas to write.",
        "OOM command not allowed when used memory > 'maxmemory'.",
    ],
)
def test_a_redis6_script_error_of_a_server_taking_no_writes_is_unavailability(reply: str) -> None:
    assert _transient(BaseParser.parse_error(SCRIPT_ERROR.format(reply)))  # as redis-py raises it
    if not reply.startswith("OOM"):  # (redis-py raises OOM as its own error type: handled by type)
        assert _transient(BaseParser.parse_error(reply))  # Redis 7: the code first
    assert not _transient(BaseParser.parse_error(SCRIPT_ERROR.format("WRONGTYPE Operation against a key")))


def test_a_spool_path_the_process_cannot_look_up_is_named_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder on the way that cannot be looked up (a name too long here; a folder the process
    may not read elsewhere: both make ``Path.is_dir`` raise) failed the ledger's construction."""
    spool = tmp_path / ("x" * 300) / "spool.jsonl"
    reason = Spool(str(spool)).unwritable()
    assert reason is not None
    assert "cannot be reached by this process" in reason
    with caplog.at_level(logging.WARNING):
        ledger = Ledger(f"sqlite:///{tmp_path}/books.db", spool_path=str(spool))  # fail-closed: built
    assert ledger.store is not None
    assert any(str(spool) in r.getMessage() for r in caplog.records)
    with pytest.raises(InvalidInputError):  # fail-open needs its spool: refused, named
        Ledger(f"sqlite:///{tmp_path}/books2.db", spool_path=str(spool), on_unavailable="open")
