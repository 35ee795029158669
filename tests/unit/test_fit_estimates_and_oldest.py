"""Fitting with an estimating counter stays within the budget as that counter counts the
result (the request's reply priming was added unscaled, 3 tokens, while the counter's own count
scales it: a window it called full was over by up to 5 tokens at a 2.5 calibration factor);
``keep="oldest"`` with ``on_overflow="truncate"`` shortens the oldest message keeping its
beginning (it kept its end, cutting away how the oldest message starts); a bad ``slid_out``
index is a named error."""

from __future__ import annotations

import pytest

from tokenbudget_core import ConversationWindow, TokenCounter, fit_messages
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.errors import InvalidInputError


@pytest.mark.parametrize("factor", [1.5, 2.5])
def test_an_estimated_fit_is_within_budget_as_its_counter_counts_it(factor: float) -> None:
    counter = TokenCounter.for_model("gemini-2.5-pro")
    counter.calibration = Calibration(prior=factor)
    over = []
    for n in range(1, 30):
        msgs = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": "word " * (i % 7 + 1)}
            for i in range(n)
        ]
        full = int(counter.count_messages(msgs))
        for budget in range(max(2, full - 12), full + 1):
            try:
                fit = fit_messages(msgs, budget, counter)
            except InvalidInputError:  # the newest message alone does not fit: refused, fine
                continue
            sent = int(counter.count_messages(list(fit)))
            if sent > budget:
                over.append((n, budget, sent))
    assert over == []


def test_an_estimated_window_is_within_budget_as_its_counter_counts_it() -> None:
    counter = TokenCounter.for_model("gemini-2.5-pro")
    counter.calibration = Calibration(prior=2.5)
    window = ConversationWindow(counter, max_tokens=60)
    for i in range(12):
        window.append({"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 3})
        assert int(counter.count_messages(window.messages())) <= window.tokens <= window.budget


def test_keep_oldest_truncates_the_oldest_message_keeping_its_beginning() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "OLDEST " + "alpha " * 300 + "END-OF-OLDEST"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "NEWEST question?"},
    ]
    fit = fit_messages(msgs, 60, "gpt-4o", keep="oldest", on_overflow="truncate")
    assert fit.truncated == 1
    assert fit[1]["content"].startswith("OLDEST alpha")
    assert "END-OF-OLDEST" not in fit[1]["content"]
    assert fit.tokens <= 60


def test_slid_out_with_a_non_integer_index_is_named() -> None:
    window = ConversationWindow("gpt-4o", max_tokens=100)
    with pytest.raises(InvalidInputError) as info:
        window.slid_out("0")  # type: ignore[arg-type]
    assert info.value.field == "begin"
