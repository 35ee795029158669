"""Bad input to the ledger's public entry points is an ``InvalidInputError`` naming the field and
the fix, raised before any store call: never a bare ``ValueError``/``TypeError`` from deep inside,
never a silently wrong figure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.streams import estimate_output_tokens
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


# -- the store URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:notaport/0", "notaport"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
        ("redis://127.0.0.1:6379/0?namespace=", "namespace"),
        ("redis://127.0.0.1:6379/0?retention_days=-1", "retention_days"),
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


def test_a_retry_after_a_soft_refusal_under_the_same_id_reserves_anew(any_ledger: Ledger) -> None:
    """A soft refusal gives back what the call held and forgets its id: the app may retry the
    call (smaller, or after the limit was raised) under the same id."""
    ladder = Ladder(cheaper_tier=0.2, smaller_context=0.3, cache_only=0.4, soft_refusal=0.5)
    any_ledger.policy = BudgetPolicy(daily_usd="0.01", ladder=ladder)
    with pytest.raises(BudgetExceededError) as e:  # $0.006 of $0.01: past the soft threshold
        any_ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=100, request_id="req-1")
    assert e.value.step == "soft_refusal"
    assert any_ledger.state().headroom["daily_usd"] == Decimal("0.01")  # nothing held
    again = _reserve(any_ledger, "req-1")  # $0.0035: fits
    assert again.request_id == "req-1"
    assert any_ledger.state().headroom["daily_usd"] == Decimal("0.01") - again.reserved_usd


def test_a_retried_reserve_of_a_live_reservation_returns_it(any_ledger: Ledger) -> None:
    first = _reserve(any_ledger, "req-1")
    again = _reserve(any_ledger, "req-1")
    assert again.request_id == first.request_id
    assert any_ledger.commit(again, Usage(input_tokens=1_000, output_tokens=100)).applied


# -- commit, record and settle --------------------------------------------------------------------------


@pytest.fixture
def ledger() -> Ledger:
    return Ledger("memory://")


def _reserved(ledger: Ledger) -> Reservation:
    return ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)


@pytest.mark.parametrize("flag", ["no", "x", 2, 1, None])
def test_cache_hit_must_be_a_bool(ledger: Ledger, flag: object) -> None:
    r = _reserved(ledger)
    for call in (
        lambda: ledger.commit(r, Usage(input_tokens=100), cache_hit=flag),  # type: ignore[arg-type]
        lambda: ledger.record(Usage(input_tokens=1), model="gpt-4o", cache_hit=flag),  # type: ignore[arg-type]
        lambda: ledger.settle(r, None, cache_hit=flag),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "cache_hit"
    assert all(row.values.get("cache_hits", 0) == 0 for row in ledger.store.rollup([ledger.day()]))


@pytest.mark.parametrize("saved", [0.5, "abc", -1, [1]])
def test_a_bad_saved_amount_names_saved_usd(ledger: Ledger, saved: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger.commit(_reserved(ledger), Usage(input_tokens=100), cache_hit=True, saved_usd=saved)  # type: ignore[arg-type]
    assert e.value.field == "saved_usd"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("R", {"input_tokens": 5}), {}, "reported"),
        ((None, None), {}, "reservation"),
        (("R", None), {"reply_text": 5}, "reply_text"),
        (("R", None), {"reply_text": "hi", "counter": 5}, "counter"),
        (("R", None), {"failed": "yes"}, "failed"),
    ],
)
def test_settle_names_a_bad_argument(
    ledger: Ledger, args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    r = _reserved(ledger)
    with pytest.raises(InvalidInputError) as e:
        ledger.settle(*[r if a == "R" else a for a in args], **kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


def test_settle_counts_the_reply_with_a_named_models_counter(ledger: Ledger) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    charge = ledger.settle(_reserved(ledger), None, reply_text=text, counter="gpt-4o")
    assert charge is not None
    assert charge.usage.output_tokens == TokenCounter.for_model("gpt-4o").count(text) > 0


def test_estimate_output_tokens_takes_a_model_name_or_a_counter() -> None:
    text = "hello world, how are you today?"
    assert estimate_output_tokens(text, counter="gpt-4o") == TokenCounter.for_model("gpt-4o").count(text) > 0
    for bad in (5, b"gpt-4o", object()):
        with pytest.raises(InvalidInputError) as e:
            estimate_output_tokens(text, counter=bad)  # type: ignore[arg-type]
        assert e.value.field == "counter"
    with pytest.raises(InvalidInputError) as e:
        estimate_output_tokens(5)  # type: ignore[arg-type]
    assert e.value.field == "text"


@pytest.mark.parametrize(
    "at",
    [
        -1e12,
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(1, 1, 1, tzinfo=UTC),  # year 0 in New York
    ],
)
def test_a_time_with_no_date_is_invalid_input(at: object) -> None:
    ledger = Ledger("memory://", timezone="America/New_York")
    with pytest.raises(InvalidInputError) as e:
        ledger.record(Usage(input_tokens=1), model="gpt-4o", at=at)  # type: ignore[arg-type]
    assert e.value.field == "at"
    assert "out of range" in str(e.value)
    with pytest.raises(InvalidInputError):
        ledger.day(at)  # type: ignore[arg-type]


TOO_MANY = 2**53


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (Usage(input_tokens=10**19), "usage.input_tokens"),
        (Usage(input_tokens=TOO_MANY), "usage.input_tokens"),
        (Usage(output_tokens=TOO_MANY), "usage.output_tokens"),
        (Usage(requests=TOO_MANY), "usage.requests"),
        (Usage(input_tokens=10**15, output_tokens=10**15), "usage"),  # costs far more than $9M
    ],
)
def test_figures_no_store_can_hold_are_refused_alike_naming_the_field(
    tmp_path: Path, store: str, usage: Usage, field: str
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    with pytest.raises(InvalidInputError) as e:
        ledger.record(usage, model="gpt-4o-mini")
    assert e.value.field == field
    assert "2**53 - 1" in str(e.value)
    assert ledger.store.rollup([ledger.day()]) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_tokens": TOO_MANY, "max_output_tokens": 1}, "input_tokens"),
        ({"input_tokens": 1, "max_output_tokens": TOO_MANY}, "max_output_tokens"),
        ({"input_tokens": 1, "max_output_tokens": 10**14, "choices": 100}, "max_output_tokens"),
    ],
)
def test_a_worst_case_no_store_can_hold_is_refused(
    ledger: Ledger, kwargs: dict[str, int], field: str
) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model="gpt-4o-mini", **kwargs)
    assert e.value.field == field


# -- the constructor and state() ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"store": 123}, "store"),
        ({"registry": "x"}, "registry"),
        ({"prices": "x"}, "prices"),
        ({"clock": 5}, "clock"),
        ({"clock": lambda: "now"}, "clock"),
        ({"alerts": "log"}, "alerts"),
        ({"alerts": 5}, "alerts"),
    ],
)
def test_bad_constructor_arguments_are_named_when_the_ledger_is_built(
    kwargs: dict[str, object], field: str
) -> None:
    kwargs = {"store": "memory://", **kwargs}
    with pytest.raises(InvalidInputError) as e:
        Ledger(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [({"feature": 5}, "feature"), ({"user": ["u"]}, "user")])
def test_state_names_a_bad_id(ledger: Ledger, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger.state(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field
