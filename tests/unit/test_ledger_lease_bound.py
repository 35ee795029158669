"""``lease_seconds`` is bounded: a "never expire" lease (``1e17``) was accepted, then every SQLite
reserve failed with a bare ``OverflowError``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import MAX_LEASE_SECONDS, Ledger


@pytest.mark.parametrize("lease", [1e17, MAX_LEASE_SECONDS + 1, 10**30])
def test_a_lease_beyond_a_week_is_refused_by_name(lease: float, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as refused:
        Ledger(f"sqlite:///{tmp_path / 'l.db'}", lease_seconds=lease, spool_path=tmp_path / "s")
    assert refused.value.field == "lease_seconds"
    assert refused.value.fix


def test_the_longest_lease_reserves_on_sqlite(tmp_path: Path) -> None:
    ledger = Ledger(
        f"sqlite:///{tmp_path / 'l.db'}", lease_seconds=MAX_LEASE_SECONDS, spool_path=tmp_path / "s"
    )
    held = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
    assert ledger.release(held)
    ledger.close()
