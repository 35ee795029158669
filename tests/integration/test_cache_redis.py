"""The cache store contract on a real Redis 8 server (vector sets for semantic entries)."""

from __future__ import annotations

import pytest

from cache_contract import A, CacheContractTests, MakeStore, adversarial_run, answer, ask
from tokenbudget_core.cache_stores.redis import RedisCacheStore
from tokenbudget_core.errors import CacheUnavailableError
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

pytestmark = pytest.mark.integration


class TestRedisStore(CacheContractTests):
    @pytest.fixture
    def make_store(self, clean_redis_url: str) -> MakeStore:
        return lambda clock: RedisCacheStore(clean_redis_url, clock=clock)


def test_exact_entries_carry_the_ttl_and_keys_share_the_scope_hash_tag(
    clean_redis_url: str, redis_client: object
) -> None:
    cache = ExactCache(clean_redis_url, ttl=120)
    cache.store(ask("hi"), answer("hello"), scope=A)
    keys = [k.decode() for k in redis_client.keys("*")]  # type: ignore[attr-defined]
    assert len(keys) == 1
    assert keys[0].startswith("tbc:{default:a:~:~}:e:")
    assert 0 < redis_client.pttl(keys[0]) <= 120_000  # type: ignore[attr-defined]
    semantic = SemanticCache(clean_redis_url)
    semantic.store(ask("hi"), answer("hello"), scope=A)
    tagged = {k.decode().split("}")[0] for k in redis_client.keys("*")}  # type: ignore[attr-defined]
    assert tagged == {"tbc:{default:a:~:~"}


def test_an_unreachable_redis_is_a_miss_not_a_crash() -> None:
    cache = ExactCache("redis://127.0.0.1:1/0")
    assert cache.lookup(ask("hi"), scope=A) is None
    assert cache.store(ask("hi"), answer("hello"), scope=A) is False
    with pytest.raises(CacheUnavailableError):
        cache.invalidate(A)


def test_ten_thousand_requests_across_fifty_tenants_on_redis(clean_redis_url: str) -> None:
    for cache in (ExactCache(clean_redis_url), SemanticCache(clean_redis_url)):
        hits, cross = adversarial_run(cache)
        assert hits > 4_000
        assert cross == 0
