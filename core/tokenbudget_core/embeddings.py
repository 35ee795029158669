"""Text embeddings: one seam for the semantic cache and the learned router.

Anything that turns texts into vectors plugs in through :func:`as_embedder`:

* a LangChain ``Embeddings`` (``embed_documents`` / ``aembed_documents``),
* a LlamaIndex ``BaseEmbedding`` (``get_text_embedding_batch`` / ``aget_text_embedding_batch``),
* a callable taking a list of texts and returning one vector per text (sync or ``async def``),
* an object already implementing :class:`Embedder`.

Vectors come back as a float32 ``numpy`` array of shape ``(len(texts), dim)``, each row scaled
to unit length so a dot product is the cosine similarity. The dependency-free default,
:class:`HashingEmbedder`, hashes words, word pairs and character trigrams of the normalised
text: it catches near-duplicates (casing, whitespace, punctuation, small typos), not
paraphrases. Use a real sentence-embedding model for those.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import InvalidInputError

__all__ = ["Embedder", "HashingEmbedder", "as_embedder", "cosine", "normalize_text"]

Vectors = npt.NDArray[np.float32]

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Casefold, NFKC-normalise, drop punctuation and collapse whitespace.

    Example:
        >>> normalize_text("  What IS a   token?! ")
        'what is a token'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors (the injection seam)."""

    @property
    def name(self) -> str:
        """Identifies the model: vectors of different embedders are never compared."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit-length float32 row per text."""
        ...

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Async twin of :meth:`embed`."""
        ...


def _unit_rows(raw: Any, n: int, source: str) -> Vectors:
    try:
        arr = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(
            "embedder", f"{source} returned something that is not a list of vectors", value=type(raw)
        ) from e
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
        raise InvalidInputError(
            "embedder",
            f"{source} must return one non-empty vector per text ({n} texts), got shape {arr.shape}",
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError("embedder", f"{source} returned NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: Vectors = arr / norms
    return unit


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts", "must be a list of strings", value=type(texts).__name__)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}]", "must be a string", value=type(t).__name__)
    return list(texts)


class HashingEmbedder:
    """Dependency-free embedder for near-duplicates: hashed words, word pairs and char trigrams.

    Stable across processes and machines (CRC32 feature hashing, not Python's salted ``hash``), so
    stored vectors stay comparable.

    Args:
        dim: Vector size (at least 64).

    Example:
        >>> e = HashingEmbedder()
        >>> a, b = e.embed(["What is a token?", "what is a TOKEN"])
        >>> round(float(a @ b), 3)
        1.0
    """

    def __init__(self, *, dim: int = 512) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 64:
            raise InvalidInputError("dim", "must be an integer of at least 64", value=dim)
        self.dim = dim

    @property
    def name(self) -> str:
        return f"hashing-{self.dim}"

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = normalize_text(text).split()
        feats: list[tuple[str, float]] = [(f"w:{w}", 1.0) for w in words]
        feats += [(f"b:{a} {b}", 1.0) for a, b in itertools.pairwise(words)]
        for w in words:
            padded = f"<{w}>"
            feats += [(f"c:{padded[i : i + 3]}", 0.3) for i in range(len(padded) - 2)]
        return feats

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit-length row per text (an empty text gives a zero row: similar to nothing)."""
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            for feat, weight in self._features(text):
                h = zlib.crc32(feat.encode())
                out[row, h % self.dim] += weight if (h >> 31) & 1 else -weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        unit: Vectors = out / norms
        return unit

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Async twin of :meth:`embed` (pure CPU, runs inline)."""
        return self.embed(texts)


class _Wrapped:
    """An :class:`Embedder` over a host-framework embedding model or a callable."""

    def __init__(
        self,
        name: str,
        sync: Callable[[list[str]], Any] | None,
        async_: Callable[[list[str]], Any] | None,
        source: str,
    ) -> None:
        self._name, self._sync, self._async, self._source = name, sync, async_, source

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if self._sync is None:
            raise InvalidInputError(
                "embedder", f"{self._source} is async-only; call aembed (or the async method) instead"
            )
        return _unit_rows(self._sync(items), len(items), self._source) if items else _empty()

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if not items:
            return _empty()
        if self._async is not None:
            return _unit_rows(await self._async(items), len(items), self._source)
        assert self._sync is not None
        return _unit_rows(await asyncio.to_thread(self._sync, items), len(items), self._source)


def _empty() -> Vectors:
    return np.zeros((0, 0), dtype=np.float32)


def as_embedder(obj: object, *, name: str | None = None) -> Embedder:
    """Adapt a LangChain ``Embeddings``, LlamaIndex ``BaseEmbedding`` or callable to :class:`Embedder`.

    Args:
        obj: The embedding model, a callable ``f(list[str]) -> list[vector]`` (sync or async),
            or an :class:`Embedder` (returned as is). ``None`` gives a :class:`HashingEmbedder`.
        name: Identifies the model in cache scopes (default: its ``model``/``model_name``
            attribute or class name).

    Raises:
        InvalidInputError: ``obj`` is none of these.
    """
    if obj is None:
        return HashingEmbedder()
    if isinstance(obj, HashingEmbedder | _Wrapped):
        return obj
    model = getattr(obj, "model_name", None) or getattr(obj, "model", None)
    label = name or (f"{type(obj).__name__}:{model}" if isinstance(model, str) else type(obj).__name__)
    if hasattr(obj, "embed_documents"):  # LangChain Embeddings
        return _Wrapped(label, obj.embed_documents, getattr(obj, "aembed_documents", None), label)
    if hasattr(obj, "get_text_embedding_batch"):  # LlamaIndex BaseEmbedding
        return _Wrapped(
            label, obj.get_text_embedding_batch, getattr(obj, "aget_text_embedding_batch", None), label
        )
    if isinstance(obj, Embedder):
        return obj
    if callable(obj):
        fn_name = name or getattr(obj, "__qualname__", None) or type(obj).__name__
        if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(type(obj).__call__):
            return _Wrapped(fn_name, None, obj, fn_name)
        return _Wrapped(fn_name, obj, None, fn_name)
    raise InvalidInputError(
        "embedder",
        f"cannot embed with a {type(obj).__name__}",
        fix="pass a LangChain Embeddings, a LlamaIndex BaseEmbedding, or a callable list[str] -> vectors",
    )


def cosine(a: Sequence[float] | Vectors, b: Sequence[float] | Vectors) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    x, y = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if x.shape != y.shape:
        raise InvalidInputError("b", f"vectors differ in size: {x.shape} vs {y.shape}")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    return 0.0 if nx == 0 or ny == 0 else float(x @ y) / (nx * ny)
