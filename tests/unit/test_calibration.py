"""Offline estimates learn a per-model correction from reported usage."""

from __future__ import annotations

import pytest

from tokenbudget_core.calibration import Calibration
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.estimating import EstimatingTokenCounter


def test_factor_converges_on_reported_ratio() -> None:
    cal = Calibration(prior=1.0, alpha=0.3)
    for _ in range(30):
        cal.observe("m", estimated=100, actual=125)
    assert cal.factor("m") == pytest.approx(1.25, rel=1e-3)
    assert cal.state("m").observations == 30
    assert cal.factor("other") == 1.0


def test_outliers_are_bounded_and_bad_figures_rejected() -> None:
    cal = Calibration(prior=1.0, bounds=(0.5, 2.0))
    cal.observe("m", estimated=10, actual=10_000)
    assert cal.factor("m") == 2.0
    with pytest.raises(InvalidInputError, match="actual"):
        cal.observe("m", estimated=10, actual=-1)
    with pytest.raises(InvalidInputError, match="alpha"):
        Calibration(alpha=0)


def test_estimating_counter_learns_from_usage() -> None:
    cal = Calibration(prior=1.0, alpha=0.5)
    counter = TokenCounter.for_model("gemini-2.5-pro", calibration=cal)
    assert isinstance(counter, EstimatingTokenCounter)
    messages = [
        {"role": "user", "content": "Summarise the attached quarterly report in three bullet points."}
    ]
    raw = counter.raw_estimate_messages(messages)
    before = counter.count_messages(messages)
    assert before == raw
    for _ in range(20):
        counter.observe(messages, actual_input_tokens=int(raw * 1.4))
    after = counter.count_messages(messages)
    assert not after.exact
    assert abs(after - int(raw * 1.4)) <= 1
