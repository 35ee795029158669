"""A lease too long for SQLite's 64-bit INTEGER (someone's "never expire") is refused with an
InvalidInputError naming ``lease_ms``, not a bare OverflowError from the sqlite3 binding."""

from __future__ import annotations

from contextlib import closing

import pytest

from store_contract import DAY, reserve, totals
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores.base import Check, ReserveRequest
from tokenbudget_core.stores.sqlite import SQLiteStore


def test_a_lease_ending_past_64_bits_is_invalid_input_and_reserves_nothing() -> None:
    with closing(SQLiteStore("sqlite:///:memory:")) as store:
        huge = ReserveRequest(
            day=DAY,
            request_id="r",
            checks=[Check(scope="user/f/u", metric="nanos", amount=5, limit=None)],
            now_ms=1_700_000_000_000,
            lease_ms=10**20,  # Ledger(lease_seconds=1e17)
        )
        with pytest.raises(InvalidInputError) as info:
            store.reserve(huge)
        assert info.value.field == "lease_ms"
        assert totals(store, "user/f/u") == (0, 0)
        assert reserve(store, "r", 5, None).ok  # the id was not used up by the refused call
