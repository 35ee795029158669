"""``Ladder.context_share`` applies from ``smaller_context`` up: with that step skipped, a share
other than the default could never apply, and was taken silently (review s31). It is refused,
naming the field and the fix, in code and in a TOML policy."""

from __future__ import annotations

import pytest

from tokenbudget_core.budgets import Ladder, load_policy
from tokenbudget_core.errors import InvalidInputError


def test_a_share_with_smaller_context_skipped_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Ladder(smaller_context=None, context_share=0.3)
    assert caught.value.field == "ladder.context_share"
    assert "smaller_context" in str(caught.value)
    with pytest.raises(InvalidInputError) as in_toml:
        load_policy({"ladder": {"smaller_context": False, "context_share": 0.3}})
    assert "context_share" in str(in_toml.value)


def test_the_default_share_or_a_step_that_uses_it_is_taken() -> None:
    assert Ladder(smaller_context=None).context_share == 0.5
    assert Ladder(context_share=0.3).context_share == 0.3
    policy = load_policy({"ladder": {"smaller_context": False}})
    assert policy.ladder.smaller_context is None
