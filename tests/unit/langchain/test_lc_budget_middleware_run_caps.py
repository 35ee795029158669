"""BudgetMiddleware's per-run caps across retries and human-in-the-loop resumes, and its refusal text.

Real ``create_agent`` runs over framework fake chat models; the figures are checked against what
the ledger recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_lc_budget_callback import make_ledger
from test_lc_budget_middleware import agent, run, tool_turn

from langchain_tokenbudget import BudgetMiddleware
from tokenbudget_core import InvalidInputError


@pytest.mark.parametrize("result", [None, 42])
def test_a_refusal_function_returning_no_string_is_named(tmp_path: Path, result: Any) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=10)
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", user="u", on_exceeded="end", refusal_message=lambda e: result
    )
    with pytest.raises(InvalidInputError) as caught:
        run(agent(tool_turn(), budget), "invoke")
    assert caught.value.field == "refusal_message"
    assert "not a string" in str(caught.value)
