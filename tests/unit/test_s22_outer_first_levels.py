"""``outer_first`` (public) names its argument when the levels hold different numbers of ids,
instead of zip's bare ValueError (review s22 #11)."""

from __future__ import annotations

import pytest

from tokenbudget_core import InvalidInputError
from tokenbudget_core.attribution import outer_first


def test_levels_of_unequal_length_are_a_named_error() -> None:
    with pytest.raises(InvalidInputError) as e:
        outer_first(("a",), ("b", "c"))
    assert e.value.field == "levels"
    assert "same number of ids" in str(e.value)


def test_levels_of_equal_length_keep_the_outer_id_per_field() -> None:
    assert outer_first(("support", None), ("other", "u-42")) == ("support", "u-42")
    assert outer_first() == ()
