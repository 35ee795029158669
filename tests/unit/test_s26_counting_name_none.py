"""A message dict with ``"name": None`` is a message without a name, on every counting path."""

from __future__ import annotations

from tokenbudget_core import ConversationWindow, TokenCounter, fit_messages
from tokenbudget_core.messages import to_message


def test_name_none_counts_as_no_name_in_dicts_and_messages() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    named_none = {"role": "user", "content": "hi", "name": None}
    plain = {"role": "user", "content": "hi"}
    expected = int(counter.count_messages([plain]))
    assert int(counter.count_messages([named_none])) == expected
    assert int(counter.count_messages([to_message(named_none)])) == expected
    assert int(counter.count_message(named_none)) == int(counter.count_message(plain))
    assert fit_messages([named_none], 100, "gpt-4o") == [named_none]
    window = ConversationWindow("gpt-4o", max_tokens=100)
    window.append(named_none)
    assert len(window.messages()) == 1
    # A real name still costs its tokens.
    assert int(counter.count_messages([{**plain, "name": "alice"}])) > expected
