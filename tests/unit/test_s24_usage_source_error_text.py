"""A provider usage block whose figures disagree (reasoning tokens beyond the output tokens) is
refused naming the figure once, with the fix, not ``reasoning_tokens reasoning_tokens = 50 ...``
and no fix (review s24 F4)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from langchain_tokenbudget import cost_of_message
from tokenbudget_core.errors import InvalidInputError


def test_inconsistent_usage_figures_are_named_once_with_the_fix() -> None:
    reply = AIMessage(
        "x",
        usage_metadata={
            "input_tokens": 100,
            "output_tokens": 10,
            "total_tokens": 110,
            "output_token_details": {"reasoning": 50},
        },
        response_metadata={"model_name": "o3"},
    )
    with pytest.raises(InvalidInputError) as info:
        cost_of_message(reply)
    text = str(info.value)
    assert info.value.field == "usage_metadata"
    assert text.count("reasoning_tokens") == 1
    assert "reasoning_tokens = 50 exceeds output_tokens = 10" in text
    assert info.value.fix is not None
