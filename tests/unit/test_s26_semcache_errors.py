"""Bad input to the public ``compare`` and ``cosine`` is a named ``InvalidInputError`` (review s26,
finding 4). Before: ``compare(None, None)`` raised ``AttributeError``; ``cosine("ab", "cd")`` and
``cosine`` of a ragged list numpy's ``ValueError``."""

from __future__ import annotations

import pytest

from tokenbudget_core.embeddings import cosine
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.semantic_guard import compare, guard_features


@pytest.mark.parametrize(("a", "b", "field"), [(None, None, "a"), (guard_features("x"), {"v": 3}, "b")])
def test_compare_of_something_else_than_guard_features(a: object, b: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        compare(a, b)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "guard_features(" in str(info.value)


@pytest.mark.parametrize(
    ("a", "b", "field"),
    [("ab", "cd", "a"), ([[1, 2], [3]], [1], "a"), ([1.0, 2.0], [[1.0], [2.0, 3.0]], "b")],
)
def test_cosine_of_something_else_than_two_vectors(a: object, b: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        cosine(a, b)  # type: ignore[arg-type]
    assert info.value.field == field
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)  # vectors still work
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
