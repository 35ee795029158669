"""The cache store contract on a real Redis 8 server (vector sets for semantic entries)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cache_contract import A, CacheContractTests, MakeStore, adversarial_run, answer, ask
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.cache_stores import open_cache_store
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


async def test_an_unreachable_redis_never_fails_an_async_call_after_the_model_answered() -> None:
    """``astore`` (as ``lookup``/``store``/``alookup``) is a logged no-op when Redis is down: an
    async LangChain call or a LlamaIndex ``achat`` returns the model's answer."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from llama_index.core.llms import ChatMessage, MockLLM

    from langchain_tokenbudget import TokenBudgetLLMCache
    from llamaindex_tokenbudget import CachedLLM

    for cache in (ExactCache("redis://127.0.0.1:1/0"), SemanticCache("redis://127.0.0.1:1/0")):
        assert await cache.alookup(ask("hi"), scope=A) is None
        assert await cache.astore(ask("hi"), answer("hello"), scope=A) is False
        model = GenericFakeChatModel(messages=iter([AIMessage("Settings > Export.")]))
        model.cache = TokenBudgetLLMCache(cache, scope=A)
        assert (await model.ainvoke("How do I export?")).content == "Settings > Export."
        llm = CachedLLM(MockLLM(max_tokens=3), cache, scope=A, model="gpt-4o-mini")
        reply = await llm.achat([ChatMessage(role="user", content="How do I export?")])
        assert reply.message.content


def test_ten_thousand_requests_across_fifty_tenants_on_redis(clean_redis_url: str) -> None:
    for cache in (ExactCache(clean_redis_url), SemanticCache(clean_redis_url)):
        hits, cross = adversarial_run(cache)
        assert hits > 4_000
        assert cross == 0


class TestRedisClusterStore(CacheContractTests):
    """The same contract on a real three-node Redis Cluster: each scope on its slot's node."""

    @pytest.fixture
    def make_store(self, clean_redis_cluster_url: str) -> MakeStore:
        return lambda clock: open_cache_store(clean_redis_cluster_url, clock=clock)


def test_a_cluster_spreads_scopes_over_its_nodes_and_invalidation_reaches_them_all(
    clean_redis_cluster_url: str, redis_cluster_client: Any
) -> None:
    from redis.cluster import RedisCluster

    exact, semantic = ExactCache(clean_redis_cluster_url), SemanticCache(clean_redis_cluster_url)
    scopes = [CacheScope(tenant=f"tenant-{i}") for i in range(24)]
    for scope in scopes:
        assert exact.store(ask("hi"), answer(f"hello {scope.tenant}"), scope=scope)
        assert semantic.store(ask("hey"), answer(f"hey {scope.tenant}"), scope=scope)
    nodes = {
        redis_cluster_client.get_node_from_key(k).name
        for k in redis_cluster_client.scan_iter(match="tbc:*", target_nodes=RedisCluster.PRIMARIES)
    }
    assert len(nodes) == 3  # 24 scopes' hash tags land on every primary
    for scope in scopes:
        hit = exact.lookup(ask("hi"), scope=scope)
        assert hit is not None
        assert hit.response.content == f"hello {scope.tenant}"
        near = semantic.lookup(ask("hey"), scope=scope)
        assert near is not None
        assert near.response.content == f"hey {scope.tenant}"
    assert exact.invalidate(CacheScope()) == 24 + 24  # the namespace: both caches' entries
    assert all(exact.lookup(ask("hi"), scope=s) is None for s in scopes)
    assert all(semantic.lookup(ask("hey"), scope=s) is None for s in scopes)


def test_an_unreachable_cluster_is_a_miss_not_a_crash() -> None:
    cache = ExactCache("redis+cluster://127.0.0.1:1")
    assert cache.lookup(ask("hi"), scope=A) is None
    assert cache.store(ask("hi"), answer("hello"), scope=A) is False
    with pytest.raises(CacheUnavailableError, match=re.escape("redis+cluster://127.0.0.1:1")):
        cache.invalidate(A)


def test_an_embedder_of_another_vector_size_on_redis_starts_new_partitions(clean_redis_url: str) -> None:
    """Redis vector sets refuse vectors of another size: a reconfigured embedder caches apart
    from the old vectors instead of failing every call."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    before = SemanticCache(clean_redis_url, embedder=DeterministicFakeEmbedding(size=8))
    assert before.store(ask("How do I export?"), answer("Settings > Export."), scope=A)
    after = SemanticCache(clean_redis_url, embedder=DeterministicFakeEmbedding(size=16))
    assert after.lookup(ask("How do I export?"), scope=A) is None
    assert after.store(ask("How do I export?"), answer("Export it in Settings."), scope=A)
    hit = after.lookup(ask("How do I export?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Export it in Settings."
