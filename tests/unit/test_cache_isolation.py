"""No cache may ever serve one tenant's answer to another; scope ids can never collide."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cache_contract import adversarial_run, isolation_answer, isolation_request
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache


def test_ten_thousand_requests_across_fifty_tenants_exact() -> None:
    hits, cross = adversarial_run(ExactCache())
    assert hits > 4_000
    assert cross == 0


def test_ten_thousand_requests_across_fifty_tenants_semantic() -> None:
    hits, cross = adversarial_run(SemanticCache())
    assert hits > 4_000
    assert cross == 0


ids = st.one_of(st.none(), st.text(min_size=1, max_size=12))
scopes = st.builds(CacheScope, namespace=st.text(min_size=1, max_size=8), tenant=ids, user=ids, feature=ids)


@settings(max_examples=500, deadline=None)
@given(scopes, scopes)
def test_distinct_scopes_never_share_a_key(a: CacheScope, b: CacheScope) -> None:
    assert (a.key() == b.key()) == (a == b)
    assert CacheScope.from_key(a.key()) == a
    assert not set(a.key()) & set("{}*?[]| \n\\")


@settings(max_examples=50, deadline=None)
@given(st.lists(scopes, min_size=2, max_size=6, unique=True))
def test_entries_of_colliding_looking_scopes_stay_apart(many: list[CacheScope]) -> None:
    cache = ExactCache(scope_fields=("tenant", "user", "feature"))
    for i, scope in enumerate(many):
        cache.store(isolation_request(), isolation_answer(str(i)), scope=scope)
    for i, scope in enumerate(many):
        hit = cache.lookup(isolation_request(), scope=scope)
        assert hit is not None
        assert hit.response.content == f"answer of {i}"
