"""The embedding seam: the default near-duplicate embedder and adapters for host models."""

from __future__ import annotations

import numpy as np
import pytest

from tokenbudget_core import InvalidInputError
from tokenbudget_core.embeddings import HashingEmbedder, as_embedder, cosine, normalize_text


def test_near_duplicates_embed_identically_and_different_prompts_do_not() -> None:
    e = HashingEmbedder()
    v = e.embed(["What is a token budget?", "  what IS a token-budget ", "Design a sharded cache for Redis"])
    assert v.shape == (3, 512)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert float(v[0] @ v[1]) > 0.8
    assert float(v[0] @ v[2]) < 0.3


def test_vectors_are_stable_across_processes() -> None:
    import os
    import subprocess
    import sys

    code = (
        "from tokenbudget_core.embeddings import HashingEmbedder;"
        "print(HashingEmbedder().embed(['a b c'])[0][:8].tolist())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},  # Python's str hash differs per seed
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str(HashingEmbedder().embed(["a b c"])[0][:8].tolist())


def test_typo_stays_close() -> None:
    a, b = HashingEmbedder().embed(["how many tokens does gpt-4o allow", "how many tokns does gpt-4o allow"])
    assert cosine(a, b) > 0.7


def test_normalize_text() -> None:
    assert normalize_text("  Ünïcode,   CASE!! ") == "ünïcode case"


class _LangChainLike:
    model = "fake-embed"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, float(len(t))] for t in texts]


class _LlamaIndexLike:
    model_name = "li-embed"

    def get_text_embedding_batch(self, texts: list[str]) -> list[list[float]]:
        return [[3.0, 4.0] for _ in texts]


async def test_host_models_and_callables_adapt() -> None:
    lc = as_embedder(_LangChainLike())
    assert lc.name == "_LangChainLike:fake-embed"
    assert np.allclose(lc.embed(["ab"])[0], np.array([2, 1]) / np.sqrt(5))
    assert np.allclose((await lc.aembed(["ab"]))[0], np.array([1, 2]) / np.sqrt(5))
    li = as_embedder(_LlamaIndexLike())
    assert np.allclose(li.embed(["x"])[0], [0.6, 0.8])
    assert np.allclose((await li.aembed(["x"]))[0], [0.6, 0.8])  # sync model from async code

    async def aembed(texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    async_only = as_embedder(aembed)
    assert np.allclose((await async_only.aembed(["x"]))[0], [1, 0])
    with pytest.raises(InvalidInputError, match="async-only"):
        async_only.embed(["x"])


def test_bad_embedders_and_inputs_are_named() -> None:
    with pytest.raises(InvalidInputError, match="embedder"):
        as_embedder(42)
    bad = as_embedder(lambda texts: [[1.0]])
    with pytest.raises(InvalidInputError, match="one non-empty vector per text"):
        bad.embed(["a", "b"])
    nan = as_embedder(lambda texts: [[float("nan")] for _ in texts])
    with pytest.raises(InvalidInputError, match="NaN"):
        nan.embed(["a"])
    with pytest.raises(InvalidInputError, match="texts"):
        HashingEmbedder().embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="dim"):
        HashingEmbedder(dim=8)
    with pytest.raises(InvalidInputError, match="differ in size"):
        cosine([1.0, 0.0], [1.0])
