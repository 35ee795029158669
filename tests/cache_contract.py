"""The cache store contract (see tokenbudget_core.cache_stores.base), run against every backend.

Backend test modules subclass ``CacheContractTests`` and provide a ``make_store`` fixture: a
factory ``(clock) -> CacheStore`` on an empty store.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from tokenbudget_core import InvalidInputError, Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cache_stores import CacheStore
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.response_cache import ExactCache, ResponseCacheBase
from tokenbudget_core.semantic_cache import SemanticCache

MakeStore = Callable[[Callable[[], float]], CacheStore]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def ask(text: str, *, system: str = "Be brief.", model: str = "gpt-4o") -> CacheRequest:
    return CacheRequest(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        params={"temperature": 0},
    )


def answer(content: str) -> CachedResponse:
    return CachedResponse(content=content, model="gpt-4o", usage=Usage(input_tokens=100, output_tokens=20))


A = CacheScope(tenant="a")
B = CacheScope(tenant="b")


class CacheContractTests:
    def test_exact_entries_per_scope(self, make_store: MakeStore) -> None:
        store = make_store(Clock())
        store.put(A, "k1", '{"x":1}', 60)
        assert store.get(A, "k1") == '{"x":1}'
        assert store.get(B, "k1") is None
        assert store.get(A, "k2") is None
        store.put(A, "k1", '{"x":2}', 60)
        assert store.get(A, "k1") == '{"x":2}'

    def test_vectors_are_searched_within_scope_and_partition_best_first(self, make_store: MakeStore) -> None:
        clock = Clock()
        store = make_store(clock)
        store.add_vector(A, "p", "near", unit(1, 0.1, 0), "near-payload", 60)
        store.add_vector(A, "p", "far", unit(0, 1, 0), "far-payload", 60)
        store.add_vector(A, "q", "other-partition", unit(1, 0, 0), "x", 60)
        store.add_vector(B, "p", "other-tenant", unit(1, 0, 0), "x", 60)
        found = store.search(A, "p", unit(1, 0, 0), 5)
        assert [m.key for m in found] == ["near", "far"]
        assert found[0].payload == "near-payload"
        assert found[0].score == pytest.approx(float(unit(1, 0.1, 0) @ unit(1, 0, 0)), abs=1e-4)
        assert store.search(A, "missing", unit(1, 0, 0), 5) == []
        store.add_vector(A, "p", "near", unit(0, 0, 1), "moved", 60)  # overwrite by key
        assert [m.key for m in store.search(A, "p", unit(0, 0, 1), 1)] == ["near"]

    def test_entries_expire(self, make_store: MakeStore) -> None:
        clock = Clock()
        store = make_store(clock)
        store.add_vector(A, "p", "short", unit(1, 0), "s", 10)
        store.add_vector(A, "p", "long", unit(1, 0.2), "l", 100)
        clock.now += 11
        assert [m.key for m in store.search(A, "p", unit(1, 0), 5)] == ["long"]

    def test_invalidate_by_partial_scope_and_clear(self, make_store: MakeStore) -> None:
        store = make_store(Clock())
        scopes = [CacheScope(tenant=t, user=u) for t in ("a", "b") for u in ("u1", "u2")]
        for s in scopes:
            store.put(s, "k", "{}", 60)
            store.add_vector(s, "p", "v", unit(1, 0), "{}", 60)
        assert store.invalidate(CacheScope(tenant="a", user="u1")) == 2
        assert store.get(CacheScope(tenant="a", user="u1"), "k") is None
        assert store.search(CacheScope(tenant="a", user="u1"), "p", unit(1, 0), 1) == []
        assert store.get(CacheScope(tenant="a", user="u2"), "k") == "{}"
        assert store.invalidate(CacheScope(tenant="a")) == 2
        assert store.invalidate(CacheScope(namespace="other")) == 0
        assert store.get(CacheScope(tenant="b", user="u1"), "k") == "{}"
        store.clear()
        assert store.get(CacheScope(tenant="b", user="u1"), "k") is None
        assert store.search(CacheScope(tenant="b", user="u1"), "p", unit(1, 0), 1) == []

    def test_ids_with_separators_and_globs_stay_apart(self, make_store: MakeStore) -> None:
        store = make_store(Clock())
        tricky = [
            CacheScope(tenant="a:b", user="c"),
            CacheScope(tenant="a", user="b:c"),
            CacheScope(tenant="*"),
            CacheScope(tenant="{a}"),
            CacheScope(tenant="a b\n", feature="~"),
            CacheScope(tenant="a", feature=None),
            CacheScope(tenant="ä%41"),
        ]
        for i, s in enumerate(tricky):
            store.put(s, "k", str(i), 60)
        assert [store.get(s, "k") for s in tricky] == [str(i) for i in range(len(tricky))]
        assert store.invalidate(CacheScope(tenant="*")) == 1
        assert store.get(CacheScope(tenant="{a}"), "k") == "3"

    def test_a_vector_of_another_size_is_refused(self, make_store: MakeStore) -> None:
        store = make_store(Clock())
        store.add_vector(A, "p", "v", unit(1, 0, 0), "{}", 60)
        with pytest.raises(InvalidInputError, match="vector"):
            store.add_vector(A, "p", "w", unit(1, 0), "{}", 60)
        with pytest.raises(InvalidInputError, match="ttl"):
            store.put(A, "k", "{}", 0)

    def test_the_caches_run_on_the_store(self, make_store: MakeStore) -> None:
        store = make_store(Clock())
        exact = ExactCache(store)
        semantic = SemanticCache(store, threshold=0.9)
        assert exact.store(ask("What is a token?"), answer("exact"), scope=A)
        assert semantic.store(ask("What is a token?"), answer("semantic"), scope=A)
        assert exact.lookup(ask("What is a token?"), scope=A).response.content == "exact"
        hit = semantic.lookup(ask("what is a TOKEN"), scope=A)
        assert hit is not None
        assert hit.response.content == "semantic"
        assert hit.score > 0.99
        assert hit.matched_prompt == "What is a token?"
        assert semantic.lookup(ask("what is a TOKEN"), scope=B) is None
        assert semantic.lookup(ask("what is a TOKEN", system="Be verbose."), scope=A) is None
        assert semantic.lookup(ask("what is a TOKEN", model="gpt-4o-mini"), scope=A) is None
        assert semantic.lookup(ask("What is not a token?"), scope=A) is None


PROMPT = "What is our refund policy?"
TENANTS = [f"tenant-{i}" for i in range(45)] + ["a:b", "a", "*", "{t}", "t 1\n"]


def isolation_request(prompt: str = PROMPT) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o", prompt=prompt, params={"temperature": 0})


def isolation_answer(tenant: str) -> CachedResponse:
    return CachedResponse(
        content=f"answer of {tenant}", model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=5)
    )


def adversarial_run(cache: ResponseCacheBase, *, requests: int = 10_000) -> tuple[int, int]:
    """50 tenants, identical prompts, half of them fill the cache; returns (hits, cross-tenant hits)."""
    rng = random.Random(6)
    filled = TENANTS[::2]
    for tenant in filled:
        assert cache.store(isolation_request(), isolation_answer(tenant), scope=CacheScope(tenant=tenant))
    hits = cross = 0
    variants = [PROMPT, PROMPT.lower(), PROMPT.upper(), "what is our refund policy"]
    for _ in range(requests):
        tenant = rng.choice(TENANTS)
        prompt = variants[0] if isinstance(cache, ExactCache) else rng.choice(variants)
        hit = cache.lookup(isolation_request(prompt), scope=CacheScope(tenant=tenant))
        if hit is None:
            assert tenant not in filled
            continue
        hits += 1
        cross += hit.response.content != f"answer of {tenant}"
    return hits, cross
