"""The semantic response cache: near-identical prompts in the same scope share an answer.

The text of a request (by default its last user turn) is embedded and compared, by cosine
similarity, with the entries of the same *partition*: the same scope (namespace, tenant and,
as configured, user and feature), model, system prompt, tool set, parameters, conversation
before the last user turn (unless ``match_history=False``) and after it (the current turn's
tool calls and results), the last user turn's images, and embedder (a request whose content
the host could not translate, ``CacheRequest(opaque=True)``, is served only exactly: by its
digest, never embedded).
Vectors of different partitions are never compared. A match at or above ``threshold`` is then
checked by the guard
(:mod:`~tokenbudget_core.semantic_guard`: negation, numbers, symbols, named entities...) and returned
with its score and the matched prompt, so every hit can be audited.

``shadow=True`` looks up and logs would-be hits (``served=False``, logger
``tokenbudget.cache``) without serving them, to measure the false-hit rate before turning
hits on. Embedding calls run inside :func:`~tokenbudget_core.attribution.overhead` ``("cache")``:
with a ``ledger``, each call of a paid embedding model is recorded there as that overhead. A
miss is embedded once: the vector :meth:`SemanticCache.lookup` made is kept (a few hundred, the
latest, per cache) for the :meth:`SemanticCache.store` of the same text that follows, never for
another embedder.

An embedding is charged to the payer even when the call it serves is refused, so a paid embedding
is not made for a payer whose budgets are used up: when the embedder records its paid calls in a
ledger and the payer's budgets there stand at the ladder's ``hard_refusal`` (or the ledger, failing
closed, cannot tell), the lookup is a miss without embedding, and a store that would have to
embed stores nothing (an answer whose vector the lookup kept is still stored). The payer's spend
on lookups so stops at its limit (past it by at most the embeddings already under way); below it,
at ``cache_only`` or ``soft_refusal``, lookups go on and serve hits. The check is one
:meth:`~tokenbudget_core.ledger.Ledger.state` of the payer, made only for a paid embedder recording
in a ledger (no store read when no limit applies to the payer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .attribution import current_attribution, overhead
from .cache_keys import CacheRequest, CacheScope, ScopeField, canonical_json
from .cache_stores import CacheStore, VectorMatch
from .cached_response import CachedResponse, CacheHit
from .embeddings import Embedder, Vectors, _unit_rows, as_embedder, paying_ledger
from .errors import BudgetUnavailableError, InvalidInputError, check_flag
from .response_cache import DEFAULT_MAX_TTL, ResponseCacheBase, prompt_sha256, refuse_unknown_arguments
from .semantic_guard import GuardFeatures, compare, guard_features

if TYPE_CHECKING:
    from .ledger import Ledger
    from .ledger_records import BudgetState
    from .price_overrides import PriceTable
    from .registry import ModelRegistry

__all__ = ["SemanticCache"]

logger = logging.getLogger("tokenbudget.cache")


class _VectorMemo:
    """The vectors of the texts lookups embedded lately, each taken out by the store of the same
    text that follows a miss: the text is embedded (and paid for) once.

    Keyed by the text's SHA-256; each vector kept with the embedder that made it (the object, not
    its ``id``, which a new embedder could reuse) and given back only to that very embedder.
    Bounded: past ``size`` vectors, the least recently kept is dropped (its store embeds again,
    as it would without the memo). Thread-safe; a forked child gets a fresh lock.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._vectors: OrderedDict[bytes, tuple[Embedder, Vectors]] = OrderedDict()
        self._lock = threading.Lock()
        _MEMOS.add(self)

    def keep(self, embedder: Embedder, text: str, vector: Vectors) -> None:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            self._vectors[key] = (embedder, vector)
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)

    def take(self, embedder: Embedder, text: str) -> Vectors | None:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            kept = self._vectors.pop(key, None)
        return kept[1] if kept is not None and kept[0] is embedder else None

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it: it did not come along


_MEMOS: weakref.WeakSet[_VectorMemo] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for memo in list(_MEMOS):
        memo._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _may_charge(state: BudgetState | None) -> bool:
    """Whether the current payer may be charged one more embedding call, its budgets standing at
    ``state`` (``None``: a ledger failing closed cannot tell): not once they are used up
    (``hard_refusal``)."""
    if state is None:
        logger.info("semantic cache skipped: the budget store is unreachable (the ledger fails closed)")
        return False
    if state.step != "hard_refusal":
        return True
    payer = current_attribution()
    logger.info(
        "semantic cache skipped for feature=%s user=%s: its budgets are used up, an embedding call "
        "would be charged past them",
        payer.feature or "-",
        payer.user or "-",
    )
    return False


class SemanticCache(ResponseCacheBase):
    """Serve near-identical requests (same scope, model, system prompt, tools) from a cache.

    Args:
        store: ``memory://`` (default), ``sqlite:///path``, ``redis://...`` (Redis 8 vector sets)
            or a :class:`~tokenbudget_core.cache_stores.CacheStore`.
        embedder: A LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a callable
            ``list[str] -> vectors`` or an :class:`~tokenbudget_core.embeddings.Embedder`;
            default :class:`~tokenbudget_core.embeddings.HashingEmbedder` (casing, whitespace and
            punctuation variants, not paraphrases). The embedder's vectors are scaled to unit
            length, so every store scores their cosine similarity.
        threshold: The lowest cosine similarity that counts as a match (0 < threshold <= 1).
        guard: Refuse matches that differ in negation, numbers, symbols, named entities, content
            words, word roles, direction or code (see :mod:`~tokenbudget_core.semantic_guard`).
        shadow: Log would-be hits and return them with ``served=False`` instead of serving them.
        text_of: What to embed of a request (default: its last user turn).
        candidates: How many nearest entries to check against the threshold and the guard.
        match_history: Only match requests whose earlier turns are the same (default). Set it to
            False for stand-alone questions whose answers do not depend on the conversation
            before them (FAQ, support macros); the scope, model, system prompt, tools, parameters,
            everything after the last user turn (its tool calls and tool results) and the guard
            still apply.
        ledger: As for :class:`~tokenbudget_core.response_cache.ExactCache` (each served hit
            recorded there); also each call of a paid embedding model, charged to the current
            payer as overhead (``cache``) and priced on the embedding model (see
            :func:`~tokenbudget_core.embeddings.as_embedder`; an embedder that already records in
            a ledger keeps its own). No paid embedding call is made for a payer whose budgets
            in that ledger are used up (see the module doc).
        ttl, max_ttl, max_entry_bytes, cache_sampled, cache_tool_calls, hash_prompts,
            scope_fields, registry, prices, clock: As for
            :class:`~tokenbudget_core.response_cache.ExactCache`.

    Raises:
        InvalidInputError: A bad option, named.
        MissingDependencyError: A ``redis://`` store without the ``redis`` extra.

    Example:
        >>> from tokenbudget_core.usage import Usage
        >>> cache = SemanticCache(threshold=0.9)
        >>> ask = lambda text: CacheRequest.from_text(model="gpt-4o", prompt=text, params={"temperature": 0})
        >>> answer = CachedResponse(content="A piece of text.", model="gpt-4o", usage=Usage(output_tokens=5))
        >>> cache.store(ask("What is a token?"), answer)
        True
        >>> hit = cache.lookup(ask("what is a TOKEN"))
        >>> hit.response.content, hit.matched_prompt, round(hit.score, 2)
        ('A piece of text.', 'What is a token?', 1.0)
        >>> cache.lookup(ask("What is not a token?")) is None  # the guard: negation differs
        True
    """

    kind: Literal["exact", "semantic"] = "semantic"

    def __init__(
        self,
        store: str | CacheStore = "memory://",
        *,
        embedder: object = None,
        threshold: float = 0.92,
        guard: bool = True,
        shadow: bool = False,
        text_of: Callable[[CacheRequest], str] | None = None,
        candidates: int = 4,
        match_history: bool = True,
        ttl: float = 3600.0,
        max_ttl: float = DEFAULT_MAX_TTL,
        max_entry_bytes: int = 256_000,
        cache_sampled: bool = False,
        cache_tool_calls: bool = False,
        hash_prompts: bool = False,
        ledger: Ledger | None = None,
        scope_fields: Sequence[ScopeField] = ("tenant", "user", "feature"),
        registry: ModelRegistry | None = None,
        prices: PriceTable | None = None,
        clock: Callable[[], float] | None = None,
        **unknown: object,
    ) -> None:
        refuse_unknown_arguments(type(self), unknown)
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        super().__init__(
            store,
            ttl=ttl,
            max_ttl=max_ttl,
            max_entry_bytes=max_entry_bytes,
            cache_sampled=cache_sampled,
            cache_tool_calls=cache_tool_calls,
            hash_prompts=hash_prompts,
            ledger=ledger,
            scope_fields=scope_fields,
            registry=registry,
            prices=prices,
            **options,
        )
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise InvalidInputError(
                "threshold", "must be a cosine similarity in (0, 1]", value=threshold, fix="e.g. 0.92"
            )
        if isinstance(candidates, bool) or not isinstance(candidates, int) or not 1 <= candidates <= 100:
            raise InvalidInputError("candidates", "must be an integer in 1..100", value=candidates)
        if text_of is not None and not callable(text_of):
            raise InvalidInputError("text_of", "must be a callable CacheRequest -> str", value=text_of)
        self.embedder: Embedder = as_embedder(embedder, ledger=ledger)
        self.threshold = float(threshold)
        self.guard = check_flag("guard", guard)
        self.shadow = check_flag("shadow", shadow)
        self.candidates = candidates
        self.text_of = text_of
        self.match_history = check_flag("match_history", match_history)
        self._memo = _VectorMemo()

    # -- the steps -------------------------------------------------------------------------------

    def _text(self, request: CacheRequest) -> str:
        if self.text_of is None:
            return request.last_user_text
        text = self.text_of(request)
        if not isinstance(text, str):
            raise InvalidInputError(
                "text_of", f"returned a {type(text).__name__}, not the text to embed", fix="return a str"
            )
        return text

    def partition(self, request: CacheRequest, *, dimensions: int) -> str:
        """The partition of ``request``'s entries (SHA-256 of everything besides the text).

        The last user turn's images (:attr:`~tokenbudget_core.cache_keys.CacheRequest.media_hash`)
        are part of it: the same question about another image is another question; so is its
        ``name`` (the same question from another participant). So is the
        embedder's name and the size of its vectors (``dimensions``): an embedder reconfigured
        to another size (across a deploy, on a persistent store) starts partitions of its own
        instead of failing against the old vectors. (A Redis store's ``quantization`` is not
        part of it: that store keeps each quantization's vectors apart itself.) (An
        :attr:`~tokenbudget_core.cache_keys.CacheRequest.opaque` request never gets here: it
        is looked up and stored by its digest, like the exact cache does.)
        """
        parts: dict[str, str | int | None] = {
            "model": request.model.strip(),
            "system": request.system_hash,
            "tools": request.tools_hash,
            "params": request.params_hash,
            "history": request.history_hash if self.match_history else None,
            "turn": None if self.match_history else request.turn_hash,  # (in history_hash already)
            "embedder": self.embedder.name,
            "dimensions": dimensions,
        }
        if request.media_hash:  # (text-only requests keep the partitions they had)
            parts["media"] = request.media_hash
        if request.last_user_name is not None:  # who asks (unnamed requests keep their partitions)
            parts["speaker"] = request.last_user_name
        return hashlib.sha256(canonical_json(parts).encode()).hexdigest()

    def _row(self, vectors: object) -> Vectors:
        """The one vector the embedder returned, scaled to unit length: every store then scores the
        cosine, whatever the length of the embedder's vectors (an all-zero vector, like the hashing
        embedder's for an empty text, stays zero: similar to nothing, a miss)."""
        row: Vectors = _unit_rows(vectors, 1, f"the embedder {self.embedder.name!r}")[0]
        return row

    def _choose(
        self,
        request: CacheRequest,
        where: CacheScope,
        text: str,
        matches: Sequence[VectorMatch],
        partition: str | None = None,
    ) -> CacheHit | None:
        """The first of ``matches`` (best first) to serve: at or above the threshold, readable,
        filed under ``where`` and, when given, the request's ``partition`` (an entry of another
        partition, which a store must never return, is skipped), and passed by the guard."""
        mine: GuardFeatures | None = None
        for match in matches:
            if match.score < self.threshold:
                break
            opened = self._open(match.payload, where)
            if opened is None:
                continue
            data, response = opened
            if partition is not None and data.get("partition") != partition:
                logger.warning(
                    "semantic cache entry %s is filed under another partition: ignored", data.get("key")
                )
                continue
            if self.guard:
                mine = mine or guard_features(text)
                try:
                    reason = compare(mine, GuardFeatures.from_json(data.get("guard") or {}))
                except InvalidInputError:
                    reason = "entry has no guard features"
                if reason is not None:
                    logger.info(
                        "semantic match refused by the guard (%s): %s",
                        reason,
                        json.dumps(self._audit(data, text, match.score, where, reason=reason)),
                    )
                    continue
            score = min(1.0, max(-1.0, match.score))  # float32 rounding can exceed 1
            hit = self._hit(request, response, data, score=score, served=not self.shadow)
            if self.shadow:
                logger.info(
                    "shadow semantic hit (not served): %s",
                    json.dumps(self._audit(data, text, match.score, where, reason=None)),
                )
            return hit
        return None

    def _audit(
        self, data: dict[str, Any], text: str, score: float, where: CacheScope, *, reason: str | None
    ) -> dict[str, Any]:
        return {
            "scope": where.key(),
            "key": data.get("key"),
            "score": round(score, 6),
            "prompt": None if self.hash_prompts else text,
            "prompt_sha256": prompt_sha256(text),
            "matched_prompt": data.get("prompt"),
            "matched_sha256": data.get("prompt_sha256"),
            "guard": reason,
        }

    def _kept(self, embedder: Embedder, text: str, vector: Vectors, hit: CacheHit | None) -> CacheHit | None:
        """``hit``, after keeping ``vector`` for the store of a lookup that served nothing."""
        if hit is None or not hit.served:
            self._memo.keep(embedder, text, vector)
        return hit

    def _search(self, where: CacheScope, partition: str, vector: Vectors) -> list[VectorMatch]:
        none: list[VectorMatch] = []
        return self._safely(
            lambda: self.store_backend.search(where, partition, vector, self.candidates), none
        )

    def _refused(self, request: CacheRequest, response: CachedResponse) -> bool:
        reason = self.refusal(request, response)
        if reason is not None:
            logger.debug("not cached: %s", reason)
        return reason is not None

    def _entry(
        self, request: CacheRequest, response: CachedResponse, where: CacheScope, text: str, partition: str
    ) -> str | None:
        """The entry to store, ``None`` when it is over ``max_entry_bytes`` (checked first on the
        prompt alone: see :meth:`_over_size`)."""
        payload = None
        if not self._over_size(text):
            payload = self._envelope(
                request, response, where, text, partition=partition, guard=guard_features(text).to_json()
            )
        if payload is None:
            logger.debug("not cached: entry over max_entry_bytes=%d", self.max_entry_bytes)
        return payload

    def _over_size(self, text: str) -> bool:
        """Whether an entry holding ``text`` would be over ``max_entry_bytes`` whatever else it
        holds: it is at least as large as the prompt's UTF-8 (JSON escapes only lengthen it). Then
        the prompt is neither embedded nor read by the guard, work the store would throw away.
        (With ``hash_prompts`` the entry holds no prompt: only the whole entry tells.)"""
        return not self.hash_prompts and len(text.encode("utf-8", "surrogatepass")) > self.max_entry_bytes

    def _may_embed(self) -> bool:
        """Whether a (paid) embedding call may be made for the current payer (see the module doc)."""
        ledger = paying_ledger(self.embedder)
        if ledger is None:
            return True
        try:
            return _may_charge(ledger.state())
        except BudgetUnavailableError:
            return _may_charge(None)

    async def _amay_embed(self) -> bool:
        """Async twin of :meth:`_may_embed`."""
        ledger = paying_ledger(self.embedder)
        if ledger is None:
            return True
        try:
            return _may_charge(await ledger.astate())
        except BudgetUnavailableError:
            return _may_charge(None)

    # -- the API ---------------------------------------------------------------------------------

    def lookup(self, request: CacheRequest, *, scope: CacheScope | None = None) -> CacheHit | None:
        """The cached answer to a near-identical request in ``scope``, or ``None``.

        In shadow mode a would-be hit is logged and returned with ``served=False``. ``None``, with
        no embedding call, for a payer whose budgets are used up (see the module doc).

        Raises:
            InvalidInputError: ``request`` or ``scope`` is of the wrong type, or the embedder
                returns something that is not one vector per text.
        """
        request = self._request(request)
        where = self._scope(scope)
        if request.sampled() and not self.cache_sampled:
            return None
        if request.opaque:
            return self._lookup_exact(request, where, served=not self.shadow)
        text = self._text(request)
        embedder = self.embedder
        if not self._may_embed():
            return None
        with overhead("cache"):
            vector = self._row(embedder.embed([text]))
        partition = self.partition(request, dimensions=vector.shape[0])
        found = self._choose(request, where, text, self._search(where, partition, vector), partition)
        return self._kept(embedder, text, vector, found)

    def store(
        self, request: CacheRequest, response: CachedResponse, *, scope: CacheScope | None = None
    ) -> bool:
        """Store ``response`` for ``request`` in ``scope``; False when it may not be stored.

        The same rules as :meth:`ExactCache.store <tokenbudget_core.response_cache.ExactCache.store>`;
        also False when the text would have to be embedded for a payer whose budgets are used up.

        Raises:
            InvalidInputError: ``request``, ``response`` or ``scope`` is of the wrong type.
        """
        request = self._request(request)
        where = self._scope(scope)
        if request.opaque:
            return self._store_exact(request, response, where)
        text = self._text(request)
        if self._refused(request, response):
            return False
        if self._over_size(text):
            logger.debug("not cached: entry over max_entry_bytes=%d", self.max_entry_bytes)
            return False
        vector = self._memo.take(self.embedder, text)
        if vector is None:
            if not self._may_embed():
                return False
            with overhead("cache"):
                vector = self._row(self.embedder.embed([text]))
        partition, key = self.partition(request, dimensions=vector.shape[0]), request.digest()
        payload = self._entry(request, response, where, text, partition)
        if payload is None:
            return False
        add = self.store_backend.add_vector
        return self._safely(lambda: add(where, partition, key, vector, payload, self.ttl) or True, False)

    async def alookup(self, request: CacheRequest, *, scope: CacheScope | None = None) -> CacheHit | None:
        """Async twin of :meth:`lookup` (embeds with the embedder's async method)."""
        request = self._request(request)
        where = self._scope(scope)
        if request.sampled() and not self.cache_sampled:
            return None
        if request.opaque:
            exact: CacheHit | None = await self._async(
                lambda: self._lookup_exact(request, where, served=not self.shadow)
            )
            return exact
        text = self._text(request)
        embedder = self.embedder
        if not await self._amay_embed():
            return None
        with overhead("cache"):
            vector = self._row(await embedder.aembed([text]))
        partition = self.partition(request, dimensions=vector.shape[0])

        def find() -> CacheHit | None:
            found = self._choose(request, where, text, self._search(where, partition, vector), partition)
            return self._kept(embedder, text, vector, found)

        hit: CacheHit | None = await self._async(find)
        return hit

    async def astore(
        self, request: CacheRequest, response: CachedResponse, *, scope: CacheScope | None = None
    ) -> bool:
        """Async twin of :meth:`store`."""
        request = self._request(request)
        where = self._scope(scope)
        if request.opaque:
            stored: bool = await self._async(lambda: self._store_exact(request, response, where))
            return stored
        text = self._text(request)
        if self._refused(request, response):
            return False
        if self._over_size(text):
            logger.debug("not cached: entry over max_entry_bytes=%d", self.max_entry_bytes)
            return False
        vector = self._memo.take(self.embedder, text)
        if vector is None:
            if not await self._amay_embed():
                return False
            with overhead("cache"):
                vector = self._row(await self.embedder.aembed([text]))
        partition, key = self.partition(request, dimensions=vector.shape[0]), request.digest()
        add = self.store_backend.add_vector

        def put() -> bool:  # (the guard reads the whole prompt: off the event loop, as alookup's)
            payload = self._entry(request, response, where, text, partition)
            if payload is None:
                return False
            return self._safely(lambda: add(where, partition, key, vector, payload, self.ttl) or True, False)

        added: bool = await self._async(put)
        return added
