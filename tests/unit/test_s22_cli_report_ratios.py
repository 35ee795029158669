"""``tokenbudget report``'s ratio columns (cost per active user, per conversation, the month's
projection) print a real spend to the nano-dollar like the cost column: a day whose spend is a
fraction of a micro-dollar per user never reads ``$0.000000``. Review s22 #6."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.attribution import attribute
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of, format_usd
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

TINY = Usage(input_tokens=1, output_tokens=0)  # gpt-4o-mini: $0.00000015


def test_a_tiny_days_cost_per_user_and_per_conversation_are_not_shown_as_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    with attribute(user="u", conversation="c"):
        ledger.record(TINY, model="gpt-4o-mini")
    ledger.close()
    cost = cost_of(TINY, "gpt-4o-mini")
    assert cost == Decimal("0.00000015")

    result = run("report", "--store", url, "--days", "1")
    assert result.exit_code == 0, result.output
    per_day = result.stdout[result.stdout.index("Per day") :]
    row = next(line for line in per_day.splitlines() if line.count("$") == 3)
    assert row.count(format_usd(cost)) == 3, row  # cost, cost/user and cost/conv: one user, one conversation
    assert "$0.000000 " not in row

    data = json.loads(run("report", "--store", url, "--days", "1", "--json").stdout)
    projected = data["projection"]["projected_usd"]
    if projected is not None:  # None on a month's first day (too early to project)
        line = next(ln for ln in result.stdout.splitlines() if "projected" in ln)
        assert format_usd(Decimal(projected)) in line, line
