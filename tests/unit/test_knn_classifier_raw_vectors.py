"""``NearestNeighbourClassifier`` with a custom ``Embedder`` returning vectors that are not of
unit length votes by cosine similarity, not by raw dot product: a long but dissimilar example's
vector outvoted the truly nearest one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tokenbudget_core.learned_classifier import NearestNeighbourClassifier

VECTORS = {
    "simple hello": [1.0, 0.0],  # the prompt's direction, short
    "complex proof": [10.0, 10.0],  # 45 degrees off, but ten times longer
    "say hi": [0.9, 0.1],
}


class RawEmbedder:
    """An Embedder (the protocol: name / embed / aembed) that returns raw, unnormalised vectors."""

    name = "raw-test-embedder"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([VECTORS[t] for t in texts], dtype=np.float32)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)


def test_the_nearest_example_is_the_most_similar_not_the_longest() -> None:
    clf = NearestNeighbourClassifier.fit(
        [("simple hello", "cheap"), ("complex proof", "premium")],
        embedder=RawEmbedder(),
        tiers=["cheap", "premium"],
        k=1,
    )
    assert clf.classify("say hi").tier == "cheap"
