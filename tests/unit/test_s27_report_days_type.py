"""``build_report(days=...)`` given something that is not an iterable of days (a number, a bool),
or an empty iterator, raises ``InvalidInputError`` naming ``days``, as ``days=0`` and ``days=[]``
do; never a bare ``TypeError``."""

from __future__ import annotations

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report


@pytest.mark.parametrize("days", [5, True, 3.5, 0, False, [], "", "2026-11-23", iter([])])
def test_days_not_a_list_of_days_is_invalid_input(days: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        build_report(Ledger("memory://"), days=days)  # type: ignore[arg-type]
    assert info.value.field == "days"
    assert "non-empty list of ISO dates" in str(info.value)
    assert info.value.fix


@pytest.mark.parametrize(
    "days", [["2026-11-23", "2026-11-22"], ("2026-11-22", "2026-11-23"), iter(["2026-11-23", "2026-11-22"])]
)
def test_an_iterable_of_days_is_reported(days: object) -> None:
    report = build_report(Ledger("memory://"), days=days)  # type: ignore[arg-type]
    assert report.days == ("2026-11-22", "2026-11-23")
