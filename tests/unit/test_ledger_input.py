"""Bad input to the ledger's public entry points is an ``InvalidInputError`` naming the field and
the fix, raised before any store call: never a bare ``ValueError``/``TypeError`` from deep inside,
never a silently wrong figure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


# -- the store URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:notaport/0", "notaport"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
        ("redis://127.0.0.1:6379/0?namespace=x", "namespace"),
        ("redis://127.0.0.1:6379/abc", "database 'abc' is not a number"),
        ("redis://127.0.0.1:6379/-1", "database"),
        ("redis+cluster://127.0.0.1:notaport", "notaport"),
        ("redis+cluster://127.0.0.1:7000/0?nope=1", "nope"),
    ],
)
def test_a_bad_redis_url_is_refused_when_the_ledger_is_built(url: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger(url)
    assert e.value.field == "store"
    assert needle in str(e.value)
    assert "redis://[user:password@]host:port/db" in str(e.value)


def test_a_bad_redis_url_error_hides_the_password() -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger("redis://user:secret@127.0.0.1:notaport/0")
    assert "secret" not in str(e.value)


# -- the spool ----------------------------------------------------------------------------------------


def test_failing_open_checks_the_spool_can_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(InvalidInputError) as e:
        Ledger(store, on_unavailable="open", spool_path=blocker / "sub" / "spool.jsonl")
    assert e.value.field == "spool_path"
    assert "is not a directory" in str(e.value)
    Ledger(store, on_unavailable="open", spool_path=tmp_path / "new" / "dir" / "spool.jsonl").close()


def test_a_spool_path_must_be_a_path() -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger("memory://", spool_path=5)  # type: ignore[arg-type]
    assert e.value.field == "spool_path"


# -- request ids --------------------------------------------------------------------------------------


class _GeneralMemoryStore(MemoryStore):
    """The memory store without the ledger's fast path."""


@pytest.fixture(params=["memory", "general", "sqlite"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    store: str | MemoryStore = {
        "memory": "memory://",
        "general": _GeneralMemoryStore(),
        "sqlite": f"sqlite:///{tmp_path / 'ledger.db'}",
    }[request.param]
    NOW[0] = 1_763_856_000.0
    ledger = Ledger(store, policy=BudgetPolicy(daily_usd="1"), lease_seconds=60, clock=lambda: NOW[0])
    yield ledger
    ledger.close()


NOW = [1_763_856_000.0]


def _reserve(ledger: Ledger, rid: str) -> Reservation:
    return ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100, request_id=rid)


@pytest.mark.parametrize("settle", ["commit", "release", "expire"])
def test_reserving_a_settled_request_id_again_is_refused(any_ledger: Ledger, settle: str) -> None:
    first = _reserve(any_ledger, "req-1")
    if settle == "commit":
        any_ledger.commit(first, Usage(input_tokens=1_000, output_tokens=100))
    elif settle == "release":
        any_ledger.release(first)
    else:
        NOW[0] += 120
    with pytest.raises(InvalidInputError) as e:
        _reserve(any_ledger, "req-1")
    assert e.value.field == "request_id"
    assert {"commit": "committed", "release": "released", "expire": "expired"}[settle] in str(e.value)
    assert "fresh request id" in str(e.value)


def test_a_retried_reserve_of_a_live_reservation_returns_it(any_ledger: Ledger) -> None:
    first = _reserve(any_ledger, "req-1")
    again = _reserve(any_ledger, "req-1")
    assert again.request_id == first.request_id
    assert any_ledger.commit(again, Usage(input_tokens=1_000, output_tokens=100)).applied
