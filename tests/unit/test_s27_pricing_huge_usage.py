"""Pricing figures past 10**18 tokens (review s27 helper note): cost_of / price_of raised a bare
decimal.InvalidOperation (from 34 digits on), cost_or_none gave a figure rounded to 28 digits, and
`tokenbudget cost --input <34+ digits>` printed a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tokenbudget_core import Usage, cost_of
from tokenbudget_core.cli import EXIT_BAD_INPUT, cli
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import MAX_PRICED, cost_or_none, price_of


@pytest.mark.parametrize("price", [cost_of, price_of, cost_or_none])
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "requests"])
def test_figures_past_what_is_priced_exactly_are_refused_by_name(price: object, field: str) -> None:
    usage = Usage(**{field: 10**34})
    with pytest.raises(InvalidInputError, match=r"usage: holds more than 1e\+18 tokens or requests"):
        price(usage, "gpt-4o")  # type: ignore[operator]


def test_the_largest_priced_figure_is_exact() -> None:
    assert cost_of(Usage(input_tokens=MAX_PRICED), "gpt-4o") == 2_500_000_000_000  # $2.50 / Mtok


def test_the_cost_command_says_so_in_one_line() -> None:
    result = CliRunner().invoke(
        cli, ["cost", "--model", "gpt-4o", "--input", "1" + "0" * 40, "--output", "0"]
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert "usage: holds more than 1e+18 tokens" in result.output
    assert "Traceback" not in result.output
