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


@pytest.mark.parametrize("cache", [TokenBudgetLLMCache(ExactCache()), InMemoryCache(), True])
def test_a_cache_given_to_the_router_is_refused(cache: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        RouterChatModel(_tiers(), cache=cache)
    assert e.value.field == "cache"
    assert "set_llm_cache" in str(e.value)


def test_a_cache_set_after_construction_is_refused() -> None:
    router = RouterChatModel(_tiers())
    with pytest.raises(InvalidInputError, match="cache"):
        router.cache = InMemoryCache()
    router.cache = None  # kept as False: the router's own run never reads a cache
    assert router.cache is False
    assert router.invoke("hi").content == "ok"


def test_the_routers_own_run_reads_no_cache_on_the_generate_path() -> None:
    """generate() goes through LangChain's own path, where the router's run would read the global
    cache unscoped (serving one user another's answer): the router keeps cache=False."""
    from langchain_core.globals import set_llm_cache
    from langchain_core.messages import HumanMessage

    tiers = {  # tier models that read no cache: only a router-level read could skip them
        "small": TierModel(model_name="gpt-4o-mini", cache=False),
        "large": TierModel(model_name="gpt-4o", cache=False),
    }
    router = RouterChatModel(tiers, cache=False)
    assert router.cache is False
    shared = InMemoryCache()
    set_llm_cache(shared)
    try:
        for _ in range(2):
            router.generate([[HumanMessage("my balance?")]])
    finally:
        set_llm_cache(None)
    assert len(tiers["small"].received) + len(tiers["large"].received) == 2  # no router-level hit
