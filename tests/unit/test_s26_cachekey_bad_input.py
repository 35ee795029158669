"""Bad input to the response caches, ``served_hit`` and ``prompt_cache_report`` is refused with a
named ``InvalidInputError`` (never a bare AttributeError or decimal error later, or a silent NaN)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.prompt_cache_savings import prompt_cache_report
from tokenbudget_core.response_cache import ExactCache, ServedHit, served_hit
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.usage import Usage


@pytest.mark.parametrize("cls", [ExactCache, SemanticCache])
@pytest.mark.parametrize("option", ["registry", "prices"])
def test_a_cache_refuses_a_registry_or_price_table_of_the_wrong_type(cls: type, option: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        cls(**{option: "x"})
    assert err.value.field == option


@pytest.mark.parametrize("text", ["abc", "NaN", "sNaN", "Infinity", "-inf", "-0.5", ""])
def test_served_hit_refuses_saved_usd_that_is_no_amount(text: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        served_hit({"saved_usd": text, "recorded": True})
    assert err.value.field == "audit.saved_usd"
    assert served_hit({"saved_usd": "0.0012", "recorded": True}) == ServedHit(Decimal("0.0012"), True)


@pytest.mark.parametrize("at", ["2025-01-01", 1_735_689_600.0, datetime(2025, 1, 1)])
def test_prompt_cache_report_refuses_a_time_that_is_not_an_aware_datetime(at: object) -> None:
    usage = Usage(input_tokens=10_000, cache_read_tokens=9_000)
    with pytest.raises(InvalidInputError) as err:
        prompt_cache_report(usage, "claude-sonnet-4-5", at=at)  # type: ignore[arg-type]
    assert err.value.field == "at"
    report = prompt_cache_report(usage, "claude-sonnet-4-5", at=datetime(2025, 1, 1, tzinfo=UTC))
    assert report.read_savings is not None
    assert report.read_savings > 0


@pytest.mark.parametrize("option", ["registry", "prices"])
def test_prompt_cache_report_refuses_a_registry_or_price_table_of_the_wrong_type(option: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        prompt_cache_report(Usage(input_tokens=10), "claude-sonnet-4-5", **{option: "x"})  # type: ignore[arg-type]
    assert err.value.field == option


def test_price_of_refuses_a_registry_or_price_table_of_the_wrong_type() -> None:
    from tokenbudget_core import Usage
    from tokenbudget_core.pricing import price_of

    for option in ("registry", "prices"):
        with pytest.raises(InvalidInputError) as info:
            price_of(Usage(input_tokens=10, output_tokens=2), "gpt-4o", **{option: "x"})  # type: ignore[arg-type]
        assert info.value.field == option
