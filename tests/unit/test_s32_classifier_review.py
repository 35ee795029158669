"""Review of request classification (s32): bad input to the classifiers and the calibration gets
a named ``InvalidInputError``, never a bare ``ValueError`` / ``OverflowError`` /
``AttributeError`` from deep inside nor a silent NaN, and the heuristic's tier is the one its
reported score names. Each case failed before its fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tokenbudget_core import TierRouter
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.complexity import HeuristicClassifier, Rule
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.learned_classifier import evaluate
from tokenbudget_core.linear_classifier import LinearComplexityClassifier

EXAMPLES = [
    ("what is a token", "small"),
    ("what is a byte", "small"),
    ("design a sharded database and analyze it", "large"),
    ("architect a distributed queue", "large"),
]


class Embedder:
    """An embedder by the protocol whose vectors are NaN for texts holding "nan", or ``rows``."""

    name = "custom"

    def __init__(self, rows: Any = None) -> None:
        self.rows = rows

    def embed(self, texts: list[str]) -> Any:
        if self.rows is not None:
            return self.rows(texts)
        return np.array([[np.nan, 1.0] if "nan" in t else [1.0, float(len(t) % 3)] for t in texts])

    async def aembed(self, texts: list[str]) -> Any:
        return self.embed(texts)


def test_a_linear_classifier_names_an_embedder_giving_nan() -> None:
    fitted = LinearComplexityClassifier.fit(EXAMPLES, embedder=Embedder())
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, classifier=fitted)
    for call in (
        lambda: fitted.classify("nan here"),
        lambda: fitted.probabilities("nan here"),  # was {'small': nan, 'large': nan}
        lambda: router.route("nan here"),
        lambda: LinearComplexityClassifier.fit([*EXAMPLES, ("nan", "small")], embedder=Embedder()),
    ):
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert caught.value.field == "embedder"
        assert "NaN" in str(caught.value)


@pytest.mark.parametrize(
    "rows",
    [
        lambda texts: [[1.0, 2.0]] * (len(texts) - 1),  # too few rows
        lambda texts: [1.0] * len(texts),  # one dimension
        lambda texts: None,
        lambda texts: [[1.0, 2.0], [1.0]] * len(texts),  # ragged
    ],
    ids=["too few rows", "1-d", "none", "ragged"],
)
def test_a_linear_classifier_names_an_embedder_giving_no_vectors(rows: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        LinearComplexityClassifier.fit(EXAMPLES, embedder=Embedder(rows))
    assert caught.value.field == "embedder"
    fitted = LinearComplexityClassifier.fit(EXAMPLES, embedder=Embedder())
    fitted.embedder = Embedder(lambda texts: np.zeros((0, 2)))  # type: ignore[assignment]
    with pytest.raises(InvalidInputError):
        fitted.classify("what is a token")


def test_the_heuristic_tier_is_the_one_its_reported_score_names() -> None:
    """0.3 + 0.05 + 0.05 summed in floats is 0.39999999999999997: a fenced 38-word prompt was
    reported at score 0.4 (the medium tier's cut) and routed to the small tier."""
    classifier = HeuristicClassifier()
    assert classifier.thresholds == (0.4, 0.6)
    fenced = classifier.classify("```\n" + "zq " * 38 + "\n```")
    assert fenced.score == 0.4
    assert fenced.tier == "medium"
    for n in range(0, 400, 7):
        for text in ("```\n" + "zq " * n + "\n```", "Explain why " + "step " * n, "what is " + "x " * n):
            got = classifier.classify(text)
            assert got.tier == classifier.tiers[sum(got.score >= cut for cut in classifier.thresholds)]


def test_a_rule_whose_repeat_count_overflows_is_named() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Rule(name="x", pattern="x{99999999999}", weight=0.1)
    assert caught.value.field == "rules['x'].pattern"


@pytest.mark.parametrize(
    ("classifier", "field"),
    [
        (None, "classifier"),
        (object(), "classifier"),
        (type("NoTiers", (), {"classify": lambda self, t: None})(), "classifier.tiers"),
    ],
)
def test_evaluate_names_what_is_not_a_classifier(classifier: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        evaluate(classifier, [("hi", "small")], models={"small": "gpt-4o-mini"})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_evaluate_names_a_classifier_answering_no_classification() -> None:
    class Odd:
        tiers = ("small", "large")

        def classify(self, text: str) -> str:
            return "small"

    with pytest.raises(InvalidInputError) as caught:
        evaluate(Odd(), [("hi", "small")], models={"small": "gpt-4o-mini", "large": "gpt-4o"})  # type: ignore[arg-type]
    assert caught.value.field == "classifier"


def test_calibration_names_figures_too_large() -> None:
    calibration = Calibration()
    with pytest.raises(InvalidInputError) as caught:
        calibration.observe("gpt-4o", estimated=1, actual=10**400)
    assert caught.value.field == "actual"
    with pytest.raises(InvalidInputError) as caught:
        calibration.apply("gpt-4o", 10**400)
    assert caught.value.field == "raw_estimate"
    with pytest.raises(InvalidInputError) as caught:
        Calibration(prior=1e308, bounds=(1.0, 1e308)).apply("gpt-4o", 10)
    assert caught.value.field == "raw_estimate"
    assert calibration.apply("gpt-4o", 1_000) >= 1_000  # ordinary figures are corrected as before
