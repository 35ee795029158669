"""The embedding seam: the default near-duplicate embedder and adapters for host models."""

from __future__ import annotations

import numpy as np
import pytest

from tokenbudget_core import InvalidInputError, Ledger
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


def _host(module: str, name: str, *, model: str, llamaindex: bool = False, base: type = object) -> object:
    """A stand-in for a host framework's embedding class: its real module and class name."""

    def embed(self: object, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.5] for _ in texts]

    method = "get_text_embedding_batch" if llamaindex else "embed_documents"
    cls = type(name, (base,), {method: embed, "model_name": model, "__module__": module})
    return cls()


HOSTED = [  # Hugging Face's Inference API and Inference Endpoints, a TEI server: billed
    ("langchain_huggingface.embeddings.huggingface_endpoint", "HuggingFaceEndpointEmbeddings", False),
    ("langchain_community.embeddings.huggingface", "HuggingFaceInferenceAPIEmbeddings", False),
    ("langchain_community.embeddings.huggingface_hub", "HuggingFaceHubEmbeddings", False),
    ("llama_index.embeddings.huggingface_api.base", "HuggingFaceInferenceAPIEmbedding", True),
    ("llama_index.embeddings.huggingface.base", "HuggingFaceInferenceAPIEmbedding", True),  # older home
    ("llama_index.embeddings.text_embeddings_inference.base", "TextEmbeddingsInference", True),
]
LOCAL = [  # sentence-transformers and friends, in process
    ("langchain_huggingface.embeddings.huggingface", "HuggingFaceEmbeddings", False),
    ("langchain_community.embeddings.huggingface", "HuggingFaceEmbeddings", False),
    ("langchain_community.embeddings.huggingface", "HuggingFaceBgeEmbeddings", False),
    ("langchain_community.embeddings.huggingface", "HuggingFaceInstructEmbeddings", False),
    ("llama_index.embeddings.huggingface.base", "HuggingFaceEmbedding", True),
    ("llama_index.embeddings.huggingface_optimum.base", "OptimumEmbedding", True),
    ("llama_index.embeddings.fastembed.base", "FastEmbedEmbedding", True),
    ("langchain_ollama.embeddings", "OllamaEmbeddings", False),
]


def _recorded(embedder: object) -> dict[str, dict[str, int]]:
    """What a ledger holds after one call of ``embedder`` through it."""
    ledger = Ledger("memory://")
    as_embedder(embedder, ledger=ledger).embed(["a paid embedding call"])
    return {r.rollup_key: r.values for r in ledger.store.rollup([ledger.day()])}


@pytest.mark.parametrize(("module", "name", "llamaindex"), HOSTED)
def test_hosted_hugging_face_endpoints_are_recorded(module: str, name: str, llamaindex: bool) -> None:
    """The reviewer's case: any module naming "huggingface" was taken for a local model, so the
    hosted endpoints' billed calls were never recorded."""
    unknown = _recorded(_host(module, name, model="BAAI/bge-small-en-v1.5", llamaindex=llamaindex))
    row = unknown["//BAAI%2Fbge-small-en-v1.5"]  # (the key percent-encoded)
    assert (row["requests"], row["unpriced"], row["cost_nanos"], row["estimated"]) == (1, 1, 0, 1)
    priced = _recorded(_host(module, name, model="text-embedding-3-small", llamaindex=llamaindex))
    assert priced["//text-embedding-3-small"]["cost_nanos"] > 0


@pytest.mark.parametrize(("module", "name", "llamaindex"), LOCAL)
def test_local_models_record_nothing(module: str, name: str, llamaindex: bool) -> None:
    assert _recorded(_host(module, name, model="text-embedding-3-small", llamaindex=llamaindex)) == {}


def test_a_subclass_is_what_its_nearest_known_base_is() -> None:
    local = type(_host("langchain_huggingface.embeddings.huggingface", "HuggingFaceEmbeddings", model="m"))
    hosted = type(
        _host("langchain_community.embeddings.huggingface", "HuggingFaceInferenceAPIEmbeddings", model="m")
    )
    mine = _host("myapp.embeddings", "MyEmbeddings", model="text-embedding-3-small", base=local)
    assert _recorded(mine) == {}
    billed = _host("myapp.embeddings", "MyEmbeddings", model="text-embedding-3-small", base=hosted)
    assert list(_recorded(billed)) == ["//text-embedding-3-small"]
    assert list(_recorded(_host("acme.embed", "AcmeEmbeddings", model="text-embedding-3-small")))
