"""An empty request id (a missing idempotency header read as ``""``) is refused by name: read as
"no id", each retry drew a fresh one and was charged again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage

USAGE = Usage(input_tokens=10, output_tokens=5)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"
    return Ledger(url, spool_path=tmp_path / "spool.jsonl")


def test_record_refuses_an_empty_request_id_and_charges_nothing(ledger: Ledger) -> None:
    for _ in range(2):  # the call and its retry
        with pytest.raises(InvalidInputError) as refused:
            ledger.record(USAGE, model="gpt-4o-mini", request_id="")
        assert refused.value.field == "request_id"
        assert refused.value.fix
    assert build_report(ledger, day=ledger.day()).totals.requests == 0


def test_reserve_refuses_an_empty_request_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError) as refused:
        ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, request_id="")
    assert refused.value.field == "request_id"


def test_reserve_many_refuses_the_empty_id_in_its_slot_only(ledger: Ledger) -> None:
    calls = [
        {"model": "gpt-4o-mini", "input_tokens": 10, "max_output_tokens": 10, "request_id": ""},
        {"model": "gpt-4o-mini", "input_tokens": 10, "max_output_tokens": 10, "request_id": "r-1"},
    ]
    empty, good = ledger.reserve_many(calls)
    assert isinstance(empty, InvalidInputError)
    assert empty.field == "request_id"
    assert not isinstance(good, Exception)
    assert good.request_id == "r-1"


def test_a_retried_record_under_one_real_id_is_charged_once(ledger: Ledger) -> None:
    for _ in range(2):
        ledger.record(USAGE, model="gpt-4o-mini", request_id="call-1")
    assert build_report(ledger, day=ledger.day()).totals.requests == 1


def test_a_reservation_with_an_empty_id_is_refused_by_commit_and_release(ledger: Ledger) -> None:
    import dataclasses

    held = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
    forged = dataclasses.replace(held, request_id="")
    for settle in (lambda: ledger.commit(forged, USAGE), lambda: ledger.release(forged)):
        with pytest.raises(InvalidInputError) as refused:
            settle()
        assert refused.value.field == "reservation.request_id"
    ledger.commit(held, USAGE)
    assert build_report(ledger, day=ledger.day()).totals.requests == 1
