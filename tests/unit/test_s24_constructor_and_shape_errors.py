"""Bad input to public constructors and a changed embedder get an ``InvalidInputError`` naming
the field and the fix, not a bare ``AttributeError`` / ``TypeError`` / numpy ``ValueError`` from
deep inside (review s24 N1, N2).

Before: ``TiktokenCounter("gpt-4o")`` (the natural misuse: a model name) failed with
``AttributeError: 'str' object has no attribute 'encoding'``; ``Calibration(bounds=5)`` with a
bare ``TypeError``; a ``NearestNeighbourClassifier`` whose embedder's vectors changed size after
``fit`` with numpy's ``matmul`` ``ValueError``."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import EstimatingTokenCounter, TiktokenCounter, TokenCounter
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.learned_classifier import NearestNeighbourClassifier


@pytest.mark.parametrize("counter_class", [TiktokenCounter, EstimatingTokenCounter])
@pytest.mark.parametrize("model", ["gpt-4o", None, 42])
def test_a_counter_built_from_something_else_than_a_model_info(counter_class: Any, model: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        counter_class(model)
    assert info.value.field == "model"
    assert "TokenCounter.for_model(" in str(info.value)


def test_the_counter_of_a_model_name_is_still_made_by_for_model() -> None:
    assert TokenCounter.for_model("gpt-4o").count("Hello, world!") == 4


@pytest.mark.parametrize("bounds", [5, (0.5,), (0.5, "3"), (0.5, float("nan")), None, (True, 3.0)])
def test_calibration_bounds_that_are_not_a_pair_of_numbers(bounds: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        Calibration(bounds=bounds)  # type: ignore[arg-type]
    assert info.value.field == "bounds"


def test_calibration_bounds_as_a_list_still_work() -> None:
    assert Calibration(bounds=[0.5, 3.0]).bounds == (0.5, 3.0)  # type: ignore[arg-type]


def test_a_classifier_whose_embedder_changed_its_vector_size() -> None:
    size = {"n": 2}

    def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * (size["n"] - 1) for _ in texts]

    clf = NearestNeighbourClassifier.fit([("a", "small"), ("b", "large")], embedder=embed)
    assert clf.classify("c").tier in ("small", "large")
    size["n"] = 3
    with pytest.raises(InvalidInputError) as info:
        clf.classify("c")
    assert info.value.field == "embedder"
    assert "fit the classifier again" in str(info.value)
