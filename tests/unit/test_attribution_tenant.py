"""The tenant in the attribution: caches scope by it, and an outer tenant wins like the other ids."""

from __future__ import annotations

import pytest

from tokenbudget_core import InvalidInputError
from tokenbudget_core.attribution import attribute, current_attribution
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.usage import Usage


def _request() -> CacheRequest:
    return CacheRequest.from_text(
        model="gpt-4o", prompt="What is our refund policy?", params={"temperature": 0}
    )


def _answer() -> CachedResponse:
    return CachedResponse(content="30 days.", model="gpt-4o", usage=Usage(input_tokens=20, output_tokens=3))


def test_outer_tenant_wins_and_is_validated() -> None:
    with attribute(tenant="acme", feature="support"), attribute(tenant="globex", user="u-1"):
        ctx = current_attribution()
        assert (ctx.tenant, ctx.feature, ctx.user) == ("acme", "support", "u-1")
    assert current_attribution().tenant is None
    with pytest.raises(InvalidInputError, match="tenant"), attribute(tenant=""):
        pass


def test_cache_entries_stay_inside_the_attributed_tenant() -> None:
    cache = ExactCache(scope_fields=("tenant", "feature"))
    with attribute(tenant="acme", feature="support", user="u-1"):
        assert cache.store(_request(), _answer())
    with attribute(tenant="acme", feature="support", user="u-2"):  # same tenant, another user: shared
        assert cache.lookup(_request()) is not None
    with attribute(tenant="globex", feature="support", user="u-1"):  # another tenant: never
        assert cache.lookup(_request()) is None
    with attribute(feature="support", user="u-1"):  # no tenant is its own scope
        assert cache.lookup(_request()) is None
    assert cache.lookup(_request(), scope=CacheScope(tenant="acme", feature="support")) is not None
