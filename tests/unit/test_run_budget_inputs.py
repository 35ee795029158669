"""``RunBudget.check`` refuses what it cannot judge with an ``InvalidInputError`` naming the
argument: a caller's bug (a float, a string, ``None``, a negative figure, something that is not a
reservation) never becomes a bare ``TypeError``, nor extra headroom for the run."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tokenbudget_core.budgets import RunBudget
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, TokenBudgetError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.ledger_records import Reservation

CAP = RunBudget(max_tokens=2_000, max_usd="1")


@pytest.fixture
def reservation() -> Iterator[Reservation]:
    ledger = Ledger("memory://")
    r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100, feature="f", user="u")
    yield r
    ledger.release(r)
    ledger.close()


@pytest.mark.parametrize("tokens_used", [10.0, "10", None, True, -1, -10_000, Decimal(10)])
def test_tokens_used_must_be_a_non_negative_int(reservation: Reservation, tokens_used: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        CAP.check(reservation, tokens_used=tokens_used, usd_used=Decimal(0))  # type: ignore[arg-type]
    assert caught.value.field == "tokens_used"
    assert caught.value.fix


@pytest.mark.parametrize(
    "usd_used", [0.5, None, True, "-5", Decimal("-5"), "NaN", Decimal("Infinity"), "five", (0, (5,), 3), [1]]
)
def test_usd_used_must_be_a_non_negative_amount(reservation: Reservation, usd_used: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        CAP.check(reservation, tokens_used=0, usd_used=usd_used)  # type: ignore[arg-type]
    assert caught.value.field == "usd_used"
    assert isinstance(caught.value, TokenBudgetError)


def test_a_negative_figure_gives_no_extra_headroom(reservation: Reservation) -> None:
    worst = reservation.input_tokens + reservation.max_output_tokens
    cap = RunBudget(max_tokens=worst - 1)
    with pytest.raises(BudgetExceededError):
        cap.check(reservation, tokens_used=0, usd_used=Decimal(0))
    with pytest.raises(InvalidInputError, match="tokens_used"):
        cap.check(reservation, tokens_used=-worst, usd_used=Decimal(0))


@pytest.mark.parametrize("not_a_reservation", ["r-1", None, {"input_tokens": 1}])
def test_the_reservation_must_be_one(not_a_reservation: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        CAP.check(not_a_reservation, tokens_used=0, usd_used=Decimal(0))  # type: ignore[arg-type]
    assert caught.value.field == "reservation"


@pytest.mark.parametrize("usd_used", [Decimal("0.01"), 0, "0.01"])
def test_valid_figures_are_still_checked(reservation: Reservation, usd_used: object) -> None:
    assert reservation.reserved_usd is not None
    CAP.check(reservation, tokens_used=900, usd_used=usd_used)  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError, match="max_run_tokens"):
        CAP.check(reservation, tokens_used=901, usd_used=usd_used)  # type: ignore[arg-type]
    over = Decimal(1) - reservation.reserved_usd + Decimal("0.000001")
    with pytest.raises(BudgetExceededError, match="max_run_usd"):
        CAP.check(reservation, tokens_used=0, usd_used=over)
