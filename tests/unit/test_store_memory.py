"""The reference memory store honours the store contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from store_contract import ContractTests
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.base import LedgerStore


@pytest.fixture
def store() -> Iterator[LedgerStore]:
    s = open_store("memory://")
    yield s
    s.close()


class TestMemoryStore(ContractTests):
    pass
