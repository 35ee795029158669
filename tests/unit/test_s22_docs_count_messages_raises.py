"""``TokenCounter.count_messages`` documents what a non-list raises.

Review s22-docs D5: its docstring named only ``InvalidMessageError``, while a non-list raises
``InvalidInputError`` from the OpenAI and estimating counters, which ``except InvalidMessageError``
misses.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import tokenbudget_core
from tokenbudget_core.counting import TokenCounter


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5-20250929", "gemini-2.5-pro"])
@pytest.mark.parametrize("bad", [None, "hi", {}])
def test_count_messages_raises_what_it_documents_for_a_non_list(model: str, bad: Any) -> None:
    doc = TokenCounter.count_messages.__doc__ or ""
    raises = doc[doc.index("Raises:") :]
    counter = TokenCounter.for_model(model)
    with pytest.raises(tokenbudget_core.InvalidInputError) as info:
        counter.count_messages(bad)
    assert info.value.field == "messages"
    assert "not a list" in raises
    # the class raised, or one of its bases, is the one the docstring names for this case
    documented = [cls.__name__ for cls in type(info.value).__mro__ if cls.__name__ in raises]
    assert documented, raises
    assert "InvalidInputError: ``messages`` is not a list" in re.sub(r"\s+", " ", raises)
