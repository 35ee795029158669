"""A response cache set on RouterChatModel itself would never be read: it is refused, naming the fix."""

from __future__ import annotations

import pytest
from langchain_core.caches import InMemoryCache
from router_fakes import TierModel

from langchain_tokenbudget import RouterChatModel, TokenBudgetLLMCache
from tokenbudget_core import ExactCache
from tokenbudget_core.errors import InvalidInputError


def _tiers() -> dict[str, TierModel]:
    return {"small": TierModel(model_name="gpt-4o-mini"), "large": TierModel(model_name="gpt-4o")}


@pytest.mark.parametrize("cache", [TokenBudgetLLMCache(ExactCache()), InMemoryCache(), True, False])
def test_a_cache_given_to_the_router_is_refused(cache: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        RouterChatModel(_tiers(), cache=cache)
    assert e.value.field == "cache"
    assert "set_llm_cache" in str(e.value)


def test_a_cache_set_after_construction_is_refused_at_the_call() -> None:
    tiers = _tiers()
    router = RouterChatModel(tiers)
    router.cache = InMemoryCache()
    for call in (
        lambda: router.invoke("hi"),
        lambda: list(router.stream("hi")),
        lambda: router.batch(["hi"]),
    ):
        with pytest.raises(InvalidInputError, match="cache"):
            call()
    assert tiers["small"].received == []  # nothing was sent
    assert tiers["large"].received == []
    router.cache = None
    assert router.invoke("hi").content == "ok"
