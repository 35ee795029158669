"""Spend by model has one row per model the registry knows, however callers spell it (review s20,
finding 2): the ledger keys attribution rows on the registry's name for the model, on every path
(the lane on the memory store and on Redis, the general path, ``record``), while unknown models,
models served by another provider and dated snapshots the registry lists apart keep rows of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import LedgerStore
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.redis import RedisStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

USAGE = Usage(input_tokens=1000, output_tokens=100)


class _GeneralMemoryStore(MemoryStore):
    """The memory store seen as any store: the ledger drives its contract methods, no lane."""


class _GeneralRedisStore(RedisStore):
    """The Redis store seen as any store: the ledger sends its contract requests, no lane."""


@pytest.fixture(params=["memory-lane", "memory-general", "sqlite", "redis-lane", "redis-general"])
def make_store(request: pytest.FixtureRequest, tmp_path: object) -> Callable[[], LedgerStore]:
    kind = request.param
    if kind == "memory-lane":
        return MemoryStore
    if kind == "memory-general":
        return _GeneralMemoryStore
    if kind == "sqlite":
        return lambda: SQLiteStore(f"sqlite:///{tmp_path}/ledger.db")
    url = request.getfixturevalue("redis_url")
    cls = RedisStore if kind == "redis-lane" else _GeneralRedisStore
    return lambda: cls(url, namespace=f"rows-{uuid.uuid4().hex}")


def _rows(ledger: Ledger) -> dict[str, tuple[int, Decimal]]:
    return {
        r.key: (r.requests, r.cost_usd) for r in build_report(ledger, last_days=1).breakdown("model").rows
    }


def test_spellings_of_one_model_are_one_row_on_every_path(make_store: Callable[[], LedgerStore]) -> None:
    ledger = Ledger(make_store())
    for model in ("GPT-4o", "gpt-4o", "gpt-4o-2024-05-13"):  # reserve / commit: the lane where there is one
        r = ledger.reserve(model=model, input_tokens=1000, max_output_tokens=100, feature="chat", user="u1")
        ledger.commit(r, USAGE)
    for model in ("openai/gpt-4o", " gpt-4o", "azure/gpt-4o"):
        ledger.record(USAGE, model=model, feature="chat", user="u1")
    # a router reserved its small model, the dated name of gpt-4o answered
    r = ledger.reserve(model="gpt-4o-mini", input_tokens=1000, max_output_tokens=100, user="u1")
    ledger.commit(r, USAGE, model="gpt-4o-2024-08-06")
    ledger.record(USAGE, model="acme-unknown-7b", unknown_model="unpriced")
    gpt4o = cost_of(USAGE, "gpt-4o")
    assert _rows(ledger) == {
        "gpt-4o": (5, 5 * gpt4o),
        "gpt-4o-2024-05-13": (1, cost_of(USAGE, "gpt-4o-2024-05-13")),  # listed as a model of its own
        "azure/gpt-4o": (1, cost_of(USAGE, "azure/gpt-4o")),  # another provider's gpt-4o
        "acme-unknown-7b": (1, Decimal(0)),  # unknown: its own name, unpriced
    }
    ledger.close()


def test_lane_and_general_path_key_the_same_rows() -> None:
    """The memory store's lane and the general path (``record``, a commit with options) write one row."""
    ledger = Ledger(MemoryStore())
    r = ledger.reserve(model="OpenAI/GPT-4o", input_tokens=1000, max_output_tokens=100, user="u1")
    ledger.commit(r, USAGE)  # the lane
    r = ledger.reserve(model="openai/gpt-4o", input_tokens=1000, max_output_tokens=100, user="u1")
    ledger.commit(r, USAGE, cache_hit=True, saved_usd=Decimal("0.001"))  # the general path
    ledger.record(USAGE, model="gpt-4o-2024-08-06", user="u1")
    rows = build_report(ledger, last_days=1).breakdown("model").rows
    assert [(row.key, row.requests, row.cache_hits) for row in rows] == [("gpt-4o", 3, 1)]


def test_a_spelling_with_a_price_of_its_own_keeps_its_row() -> None:
    """A price override for one exact spelling prices it apart, so it is reported apart."""
    table = PriceTable({"gpt-4o-2024-08-06": PriceOverride(input_mtok="1", output_mtok="1")})
    ledger = Ledger(MemoryStore(), prices=table)
    ledger.record(USAGE, model="gpt-4o-2024-08-06")
    ledger.record(USAGE, model="gpt-4o")
    assert set(_rows(ledger)) == {"gpt-4o-2024-08-06", "gpt-4o"}


def test_a_registered_model_keeps_its_registered_name() -> None:
    """A model the user registers is a model of its own, even priced as another (``canonical=``);
    its provider-prefixed spelling is the same row."""
    registry = ModelRegistry()
    registry.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
    ledger = Ledger(MemoryStore(), registry=registry)
    r = ledger.reserve(model="acme-7b", input_tokens=10, max_output_tokens=10)
    ledger.commit(r, Usage(input_tokens=10, output_tokens=10))
    registry.register("acme-7b", provider="openai", canonical="gpt-4o-mini", max_output_tokens=4_096)
    r = ledger.reserve(model="acme-7b", input_tokens=10, max_output_tokens=10)
    ledger.commit(r, Usage(input_tokens=10, output_tokens=10))  # priced as gpt-4o-mini from now on
    ledger.record(Usage(input_tokens=10, output_tokens=10), model="openai/acme-7b")
    ledger.record(Usage(input_tokens=10, output_tokens=10), model="gpt-4o-mini")
    rows = _rows(ledger)
    assert {k: v[0] for k, v in rows.items()} == {"acme-7b": 3, "gpt-4o-mini": 1}
    assert rows["acme-7b"][1] == 2 * cost_of(Usage(input_tokens=10, output_tokens=10), "gpt-4o-mini")


def test_rows_follow_registry_changes() -> None:
    """A name the registry learns (a user override) is keyed anew from then on, lane included."""
    registry = ModelRegistry()
    ledger = Ledger(MemoryStore(), registry=registry)
    ledger.record(Usage(input_tokens=10, output_tokens=10), model="Acme-7B", unknown_model="unpriced")
    registry.register("Acme-7B", provider="acme", context_window=32_000, max_output_tokens=4_096)
    r = ledger.reserve(model="acme/Acme-7B", input_tokens=10, max_output_tokens=10)
    ledger.commit(r, Usage(input_tokens=10, output_tokens=10))
    assert {k: v[0] for k, v in _rows(ledger).items()} == {"Acme-7B": 2}
