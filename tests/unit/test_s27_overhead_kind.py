"""``overhead(kind)`` refuses a ``kind`` that is not a non-empty string, ``None`` included, with
``InvalidInputError`` naming ``kind``: a ``None`` used to mark nothing, so the calls inside were
reported as the feature's own calls."""

from __future__ import annotations

import pytest

from tokenbudget_core.attribution import attribute, current_attribution, overhead
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage


@pytest.mark.parametrize("kind", [None, "", 5, b"summary"])
def test_a_kind_that_is_not_a_non_empty_string_is_refused(kind: object) -> None:
    with pytest.raises(InvalidInputError) as info, overhead(kind):  # type: ignore[arg-type]
        pass
    assert info.value.field == "kind"
    assert "non-empty string" in str(info.value)
    assert current_attribution().overhead is None


def test_nothing_is_recorded_under_an_unmarked_overhead() -> None:
    ledger = Ledger("memory://")
    with attribute(feature="support", user="u1"), pytest.raises(InvalidInputError), overhead(None):  # type: ignore[arg-type]
        ledger.record(Usage(input_tokens=10_000, output_tokens=1_000), model="gpt-4o-mini")
    assert build_report(ledger, last_days=1).totals.requests == 0


def test_a_named_kind_marks_the_calls_inside() -> None:
    ledger = Ledger("memory://")
    with attribute(feature="support", user="u1"), overhead("summariser") as a:
        assert a.overhead == "summariser"
        ledger.record(Usage(input_tokens=10_000, output_tokens=1_000), model="gpt-4o-mini")
    totals = build_report(ledger, last_days=1).totals
    assert totals.overhead_requests == 1
    assert totals.overhead_usd == totals.cost_usd > 0
