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

A paid embedding model costs money too. ``as_embedder(model, ledger=ledger)`` (or a
:class:`~tokenbudget_core.semantic_cache.SemanticCache` / learned classifier given a ``ledger``)
records each embedding call with :meth:`~tokenbudget_core.ledger.Ledger.record`, charged to the
current :func:`~tokenbudget_core.attribution.attribute` payer and priced on the embedding model.
The calls the package makes itself run inside :func:`~tokenbudget_core.attribution.overhead`
(the semantic cache's ``cache``, the router's ``router``), so they are reported as overhead; an
embedding the app asks for itself (fitting a classifier, calling :meth:`Embedder.embed`) is
charged as the app's own call. The tokens are those the provider reported
(a callable returning an OpenAI-shaped reply: ``data`` and ``usage``), else the texts counted with
the model's tokenizer and flagged ``estimated``; a reply whose vectors cannot be used (NaN,
base64 text, a vector short) is recorded too, before its error is raised: it was billed. A
model the registry does not know is recorded unpriced (never $0, never an error for the
caller); a model running locally (sentence-transformers,
including LangChain's ``HuggingFaceEmbeddings`` / ``HuggingFaceBgeEmbeddings`` and LlamaIndex's
``HuggingFaceEmbedding``, FastEmbed, Ollama, llama.cpp, a fake) and :class:`HashingEmbedder` cost
nothing and record nothing. Hugging Face's hosted endpoints (``HuggingFaceEndpointEmbeddings``,
``HuggingFaceInferenceAPIEmbedding(s)``, a ``huggingface_hub`` ``InferenceClient``,
``TextEmbeddingsInference``) are billed: recorded like any paid model.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import InvalidInputError, TokenBudgetError, UnknownModelError
from .usage import Usage

if TYPE_CHECKING:
    from .counting import TokenCounter
    from .ledger import Ledger

__all__ = [
    "MAX_HASHING_DIM",
    "Embedder",
    "HashingEmbedder",
    "as_embedder",
    "cosine",
    "normalize_text",
    "paying_ledger",
]

Vectors = npt.NDArray[np.float32]

logger = logging.getLogger("tokenbudget.embeddings")

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


def _reply(raw: Any) -> tuple[Any, int | None, str | None]:
    """The vectors of an embedding call's reply, and the tokens and model it reports: an
    OpenAI-shaped reply (``data[i].embedding``, ``usage.prompt_tokens``, ``model``) as the SDK's
    object or as a dict; anything else is the vectors themselves."""
    data = raw.get("data") if isinstance(raw, dict) else getattr(raw, "data", None)
    if not isinstance(data, list) or isinstance(raw, list | tuple):
        return raw, None, None
    if all(isinstance(_field(d, "index"), int) for d in data):
        data = sorted(data, key=lambda d: _field(d, "index"))
    rows = [d if isinstance(d, list | tuple) else _field(d, "embedding") for d in data]
    usage = _field(raw, "usage")
    tokens = _field(usage, "prompt_tokens")
    if tokens is None:
        tokens = _field(usage, "total_tokens")
    model = _field(raw, "model")
    reported = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None
    return rows, reported, model if isinstance(model, str) and model else None


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def checked_rows(raw: Any, n: int, source: str, dtype: Any = np.float32) -> Vectors:
    """What an embedder returned for ``n`` texts as an ``(n, dim)`` array of ``dtype``, checked:
    one non-empty vector per text, all finite.

    Raises:
        InvalidInputError: Anything else, named ``embedder`` (``source`` says which call).
    """
    try:
        arr = np.asarray(raw, dtype=dtype)
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
    return arr


def _unit_rows(raw: Any, n: int, source: str) -> Vectors:
    arr = checked_rows(raw, n, source)
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


MAX_HASHING_DIM = 65_536
"""The largest :class:`HashingEmbedder` ``dim`` (a bigger one only costs memory: ``4 * dim`` bytes
per vector; a ``dim`` of 2**33 would ask 32 GiB per embedded text)."""


class HashingEmbedder:
    """Dependency-free embedder for near-duplicates: hashed words, word pairs and char trigrams.

    Stable across processes and machines (CRC32 feature hashing, not Python's salted ``hash``), so
    stored vectors stay comparable.

    Args:
        dim: Vector size, from 64 to :data:`MAX_HASHING_DIM` (65,536: hashing gains nothing from
            more, and each vector costs ``4 * dim`` bytes).

    Raises:
        InvalidInputError: ``dim`` is not an int from 64 to :data:`MAX_HASHING_DIM`.

    Example:
        >>> e = HashingEmbedder()
        >>> a, b = e.embed(["What is a token?", "what is a TOKEN"])
        >>> round(float(a @ b), 3)
        1.0
    """

    def __init__(self, *, dim: int = 512) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 64 <= dim <= MAX_HASHING_DIM:
            raise InvalidInputError(
                "dim",
                f"must be an integer from 64 to {MAX_HASHING_DIM:,} (MAX_HASHING_DIM)",
                value=dim,
                fix="use e.g. dim=512 (the default)",
            )
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


_LOCAL_MODULES = (
    "sentence_transformers", "fastembed", "ollama", "llamacpp", "llama_cpp", "gpt4all",
    "optimum", "openvino", "itrex",
)  # fmt: skip
"""Modules of embedding runtimes that run on the caller's machine: they cost nothing."""
_LOCAL_CLASSES = frozenset((
    # LangChain (langchain_huggingface, langchain_community): sentence-transformers in process
    "huggingfaceembeddings", "huggingfacebgeembeddings", "huggingfaceinstructembeddings",
    "sentencetransformerembeddings", "selfhostedhuggingfaceembeddings",  # (the caller's own hardware)
    "selfhostedhuggingfaceinstructembeddings",
    "huggingfaceembedding",  # LlamaIndex (llama-index-embeddings-huggingface), in process
))  # fmt: skip
"""Class names (casefolded) of Hugging Face models run locally. Other Hugging Face classes are
not assumed local: the hosted Inference API and Endpoints bill their calls."""
_HOSTED = ("endpoint", "inferenceapi", "inferenceclient", "huggingfacehub", "textembeddingsinference")
"""Parts of class names of hosted endpoints (Hugging Face's Inference API and Inference
Endpoints, a Text Embeddings Inference server): paid, whatever their module or base class."""
_FAKE = ("fake", "mock")
"""Class names of test doubles: they cost nothing either."""


def _runs_locally(host: object) -> bool:
    """Whether ``host``'s calls run on the caller's machine: decided by its class, else by the
    nearest base class that says (a subclass of ``HuggingFaceEmbeddings`` runs locally too)."""
    if any(f in type(host).__name__.casefold() for f in _FAKE):
        return True
    for cls in type(host).__mro__:
        module, name = (cls.__module__ or "").casefold(), cls.__name__.casefold()
        if any(h in name for h in _HOSTED):
            return False
        if name in _LOCAL_CLASSES or any(m in module for m in _LOCAL_MODULES):
            return True
    return False


def paying_ledger(embedder: Embedder) -> Ledger | None:
    """The ledger that ``embedder`` (made by :func:`as_embedder`) records its calls in, when
    they are paid; ``None`` when its calls cost nothing, it records in no ledger, or it is an
    embedder of the caller's own (which records where it likes)."""
    if isinstance(embedder, _Wrapped) and embedder.ledger is not None and embedder._is_paid():
        return embedder.ledger
    return None


class _Wrapped:
    """An :class:`Embedder` over a host-framework embedding model or a callable; with a ledger,
    each paid call is recorded there (see the module doc)."""

    def __init__(
        self,
        name: str,
        sync: Callable[[list[str]], Any] | None,
        async_: Callable[[list[str]], Any] | None,
        source: str,
        *,
        host: object = None,
        model: str | None = None,
        ledger: Ledger | None = None,
        paid: bool | None = None,
    ) -> None:
        self._name, self._sync, self._async, self._source = name, sync, async_, source
        self._host, self.model, self.ledger, self.paid = host, model, ledger, paid
        self._counters: dict[str, TokenCounter] = {}

    @property
    def name(self) -> str:
        return self._name

    def with_ledger(self, ledger: Ledger) -> _Wrapped:
        """This embedder recording its paid calls in ``ledger`` (itself when it already has one)."""
        if self.ledger is not None:
            return self
        return _Wrapped(
            self._name, self._sync, self._async, self._source,
            host=self._host, model=self.model, ledger=ledger, paid=self.paid,
        )  # fmt: skip

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if self._sync is None:
            raise InvalidInputError(
                "embedder", f"{self._source} is async-only; call aembed (or the async method) instead"
            )
        if not items:
            return _empty()
        rows, reported, replied = _reply(self._sync(items))
        # Charged before the rows are checked: a reply the cache cannot use (NaN, base64 text,
        # a vector short) was still billed by the provider, and its usage must not be lost.
        charge = self._charge(items, reported, replied)
        if charge is not None:
            self._record(*charge)
        return _unit_rows(rows, len(items), self._source)

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        items = _check_texts(texts)
        if not items:
            return _empty()
        if self._async is not None:
            raw = await self._async(items)
        else:
            assert self._sync is not None
            raw = await asyncio.to_thread(self._sync, items)
        rows, reported, replied = _reply(raw)
        charge = self._charge(items, reported, replied)  # (before the rows are checked: see embed)
        if charge is not None:
            await self._arecord(*charge)
        return _unit_rows(rows, len(items), self._source)

    # -- charging the call -----------------------------------------------------------------------

    def _charge(
        self, items: list[str], reported: int | None, replied: str | None
    ) -> tuple[Usage, str] | None:
        """What to record for one call (``None``: nothing, the call cost nothing or no ledger)."""
        model = self.model or replied
        if self.ledger is None or model is None or not self._is_paid():
            return None
        if reported is not None:
            return Usage(input_tokens=reported), model
        counter = self._counter(model)
        tokens = sum(int(counter.count(t)) for t in items)
        return Usage(input_tokens=tokens, estimated=True), model

    def _is_paid(self) -> bool:
        return self.paid if self.paid is not None else not _runs_locally(self._host)

    def _counter(self, model: str) -> TokenCounter:
        counter = self._counters.get(model)
        if counter is None:
            from .counting import TokenCounter
            from .estimating import unknown_model_counter

            assert self.ledger is not None
            try:
                counter = TokenCounter.for_model(model, registry=self.ledger.registry)
            except UnknownModelError:
                counter = unknown_model_counter(model)
            self._counters[model] = counter
        return counter

    def _record(self, usage: Usage, model: str) -> None:
        """Record the call under the current attribution (overhead inside an ``overhead`` block);
        a ledger that cannot take it is logged: the vectors are the caller's, whatever the
        accounting says."""
        assert self.ledger is not None
        try:
            self.ledger.record(usage, model=model, unknown_model="unpriced")
        except TokenBudgetError:
            _not_recorded(usage, model)

    async def _arecord(self, usage: Usage, model: str) -> None:
        """Async twin of :meth:`_record`."""
        assert self.ledger is not None
        try:
            await self.ledger.arecord(usage, model=model, unknown_model="unpriced")
        except TokenBudgetError:
            _not_recorded(usage, model)


def _not_recorded(usage: Usage, model: str) -> None:
    logger.warning("embedding call not recorded (%s, %d tokens)", model, usage.input_tokens, exc_info=True)


def _empty() -> Vectors:
    return np.zeros((0, 0), dtype=np.float32)


def as_embedder(
    obj: object,
    *,
    name: str | None = None,
    ledger: Ledger | None = None,
    model: str | None = None,
    paid: bool | None = None,
) -> Embedder:
    """Adapt a LangChain ``Embeddings``, LlamaIndex ``BaseEmbedding`` or callable to :class:`Embedder`.

    Args:
        obj: The embedding model, a callable ``f(list[str]) -> list[vector]`` (sync or async; it
            may return an OpenAI-shaped reply, ``data`` and ``usage``), or an :class:`Embedder`
            (returned as is: an embedder of your own records its own calls). ``None`` gives a
            :class:`HashingEmbedder`.
        name: Identifies the model in cache scopes (default: its ``model``/``model_name``
            attribute or class name).
        ledger: Record each paid embedding call there, charged to the current payer (as
            overhead inside an ``overhead`` block; see the module doc). An embedder already
            recording in a ledger keeps its own.
        model: The embedding model calls are priced on (default: the host model's
            ``model_name`` / ``model``, or the model a callable's reply names; without one,
            nothing is recorded).
        paid: Whether the calls cost money (default: they do unless the model runs locally: a
            sentence-transformers (LangChain ``HuggingFaceEmbeddings``, LlamaIndex
            ``HuggingFaceEmbedding``), FastEmbed, Ollama, llama.cpp or GPT4All class, or a fake /
            mock; Hugging Face's hosted Inference API, Endpoints and TEI are paid).

    Raises:
        InvalidInputError: ``obj`` is none of these, or ``ledger`` is not a ``Ledger``.

    Example:
        >>> from tokenbudget_core.ledger import Ledger
        >>> ledger = Ledger("memory://")
        >>> embed = lambda texts: [[1.0, float(len(t))] for t in texts]
        >>> embedder = as_embedder(embed, ledger=ledger, model="text-embedding-3-small")
        >>> embedder.embed(["What is a token?"]).shape
        (1, 2)
        >>> ledger.store.rollup([ledger.day()])[0].values["input_tokens"]
        5
    """
    _check_ledger(ledger)
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInputError("model", "must be a non-empty model name", value=model)
    if paid is not None and not isinstance(paid, bool):
        raise InvalidInputError("paid", "must be True, False or None", value=paid)
    if obj is None:
        return HashingEmbedder()
    if isinstance(obj, HashingEmbedder):
        return obj
    if isinstance(obj, _Wrapped):
        return obj.with_ledger(ledger) if ledger is not None else obj
    named = getattr(obj, "model_name", None) or getattr(obj, "model", None)
    label = name or (f"{type(obj).__name__}:{named}" if isinstance(named, str) else type(obj).__name__)
    charging: dict[str, Any] = {"ledger": ledger, "paid": paid}
    if hasattr(obj, "embed_documents") or hasattr(obj, "get_text_embedding_batch"):
        charging.update(
            host=obj, model=model or (named if isinstance(named, str) and named != "unknown" else None)
        )
    if hasattr(obj, "embed_documents"):  # LangChain Embeddings
        return _Wrapped(label, obj.embed_documents, getattr(obj, "aembed_documents", None), label, **charging)
    if hasattr(obj, "get_text_embedding_batch"):  # LlamaIndex BaseEmbedding
        return _Wrapped(
            label,
            obj.get_text_embedding_batch,
            getattr(obj, "aget_text_embedding_batch", None),
            label,
            **charging,
        )
    if isinstance(obj, Embedder):
        return obj
    if callable(obj):
        fn_name = name or getattr(obj, "__qualname__", None) or type(obj).__name__
        charging.update(host=getattr(obj, "__self__", obj), model=model)
        if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(type(obj).__call__):
            return _Wrapped(fn_name, None, obj, fn_name, **charging)
        return _Wrapped(fn_name, obj, None, fn_name, **charging)
    raise InvalidInputError(
        "embedder",
        f"cannot embed with a {type(obj).__name__}",
        fix="pass a LangChain Embeddings, a LlamaIndex BaseEmbedding, or a callable list[str] -> vectors",
    )


def _check_ledger(ledger: object) -> None:
    if ledger is None:
        return
    from .ledger import Ledger

    if not isinstance(ledger, Ledger):
        raise InvalidInputError("ledger", "must be a Ledger", value=type(ledger).__name__)


def cosine(a: Sequence[float] | Vectors, b: Sequence[float] | Vectors) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros).

    Raises:
        InvalidInputError: ``a`` or ``b`` is not a vector of numbers, or they differ in size.
    """
    x, y = _vector("a", a), _vector("b", b)
    if x.shape != y.shape:
        raise InvalidInputError("b", f"vectors differ in size: {x.shape} vs {y.shape}")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    return 0.0 if nx == 0 or ny == 0 else float(x @ y) / (nx * ny)


def _vector(field: str, value: object) -> Vectors:
    fix = "pass a list or 1-D array of numbers"
    if isinstance(value, str | bytes):
        raise InvalidInputError(
            field, "must be a vector of numbers, not text", value=type(value).__name__, fix=fix
        )
    try:
        v: Vectors = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(
            field, "must be a vector of numbers", value=type(value).__name__, fix=fix
        ) from e
    if v.ndim != 1:
        raise InvalidInputError(field, f"must be one vector (1-D), got shape {v.shape}", fix=fix)
    return v
