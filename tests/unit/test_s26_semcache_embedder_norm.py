"""A custom ``Embedder`` returning vectors that are not unit length is scored by cosine on every
store (review s26, finding 2).

Before: such an embedder was used as is and the memory and SQLite stores scored a raw dot
product: with vectors of length 3, a pair of true cosine 0.72 was a hit with score 1.0 there
(and a miss on Redis, which normalises).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tokenbudget_core import InvalidInputError, Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.embeddings import Embedder, HashingEmbedder
from tokenbudget_core.semantic_cache import SemanticCache

T = CacheScope(tenant="t")
STORED = "How do I reset my password?"
LONGER = "How do I reset my password on the mobile app for my whole team?"


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


def answer() -> CachedResponse:
    return CachedResponse(content="Settings > Security.", model="gpt-4o-mini", usage=Usage(output_tokens=6))


class Scaled:
    """Hashing vectors times ``factor``: the same directions, another length (as many APIs return)."""

    name = "scaled"

    def __init__(self, factor: float = 3.0) -> None:
        self.factor = factor

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return (HashingEmbedder().embed(texts) * self.factor).astype(np.float32)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)


def true_cosine(a: str, b: str) -> float:
    va, vb = HashingEmbedder().embed([a, b])
    return float(va @ vb)


@pytest.mark.parametrize("store", ["memory://", "sqlite"])
async def test_a_custom_embedder_is_scored_by_cosine_on_every_store(store: str, tmp_path: Path) -> None:
    assert isinstance(Scaled(), Embedder)
    url = f"sqlite:///{tmp_path / 'cache.db'}" if store == "sqlite" else store
    cosine = true_cosine(STORED, LONGER)
    assert cosine < 0.92
    cache = SemanticCache(url, embedder=Scaled(), threshold=0.92)
    assert cache.store(ask(STORED), answer(), scope=T)
    assert cache.lookup(ask(LONGER), scope=T) is None  # cosine 0.72: a miss
    assert await cache.alookup(ask(LONGER), scope=T) is None
    hit = cache.lookup(ask(STORED.lower()), scope=T)
    assert hit is not None
    assert hit.score == pytest.approx(1.0)

    low = SemanticCache(url, embedder=Scaled(0.25), threshold=0.5)  # shorter than unit length
    assert low.store(ask(STORED), answer(), scope=T)
    hit = low.lookup(ask(LONGER), scope=T)
    assert hit is not None
    assert hit.score == pytest.approx(cosine, abs=1e-4)


def test_a_zero_vector_is_a_miss_and_bad_vectors_are_named_errors() -> None:
    class Returns:
        name = "returns"

        def __init__(self, rows: object) -> None:
            self.rows = rows

        def embed(self, texts: Sequence[str]) -> object:
            return self.rows

        async def aembed(self, texts: Sequence[str]) -> object:
            return self.rows

    zero = SemanticCache(embedder=Returns(np.zeros((1, 8), dtype=np.float32)), threshold=0.5)
    assert zero.store(ask(STORED), answer(), scope=T)
    assert zero.lookup(ask(STORED), scope=T) is None  # similar to nothing
    as_list = SemanticCache(embedder=Returns([[3.0, 4.0]]), threshold=0.5)  # a list, not an array
    assert as_list.store(ask(STORED), answer(), scope=T)
    hit = as_list.lookup(ask(STORED), scope=T)
    assert hit is not None
    assert hit.score == pytest.approx(1.0)
    for rows in ([[1.0, float("nan")]], [[1.0], [2.0]], "vector"):  # NaN; two vectors for one text
        with pytest.raises(InvalidInputError) as info:
            SemanticCache(embedder=Returns(rows), threshold=0.5).lookup(ask(STORED), scope=T)
        assert info.value.field == "embedder"
