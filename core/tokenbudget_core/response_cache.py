"""The exact response cache: identical requests in the same scope are answered once.

::

    cache = ExactCache("sqlite:///cache.db", ttl=3600, ledger=ledger)
    request = CacheRequest(model="gpt-4o", messages=messages, params={"temperature": 0})
    scope = CacheScope(tenant="acme")
    hit = cache.lookup(request, scope=scope)
    if hit is None:
        response = call_the_model(...)
        cache.store(request, CachedResponse(content=..., model="gpt-4o", usage=usage), scope=scope)

The key is the SHA-256 of the canonical request (model, messages, tools, every parameter)
inside its scope (namespace and tenant always; user and feature as ``scope_fields`` say).
What is never stored: cut-off or failed answers (a ``finish_reason`` other than a normal stop),
tool-call answers unless ``cache_tool_calls``, sampled requests (``temperature`` > 0,
``top_p`` < 1) unless ``cache_sampled``, and entries over ``max_entry_bytes``. Every entry
expires (``ttl``, at most ``max_ttl``: a day unless raised on purpose, and never more than
:data:`MAX_TTL`, what every store can hold). Each served hit reports
the tokens and dollars it saved and, with a ledger attached, is recorded there as a cache hit
of the current :func:`~tokenbudget_core.attribution.attribute` payer; an adapter that may still
find a hit unservable looks up inside :func:`hits_not_recorded` and records the hits it does
serve with :meth:`~ResponseCacheBase.record_hit`.

Which model an entry names and which a hit is recorded on are decided here, once for every
adapter: :func:`answering_model` (the model that answered: a router's tier, else the model the
reply names when the registry knows it, else the one asked for), which prices what a hit saves,
and :func:`hit_model` (a routed answer's tier, else the model asked for, else the one that
answered), the ledger row a hit is recorded on.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from .cache_keys import CacheRequest, CacheScope, ScopeField, check_scope_fields, resolve_scope
from .cache_stores import CacheStore, open_cache_store
from .cache_stores.memory import MemoryCacheStore
from .cached_response import CachedResponse, CacheHit
from .clocks import check_clock, clock_reading
from .errors import CacheUnavailableError, InvalidInputError, UnknownModelError, check_flag, refuse_unknown
from .price_overrides import PriceTable, check_price_options
from .pricing import cost_or_none
from .registry import ModelRegistry, check_registry
from .usage import Usage

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "ANSWERED_BY",
    "DEFAULT_MAX_TTL",
    "MAX_TTL",
    "Answerer",
    "ExactCache",
    "ResponseCacheBase",
    "ServedHit",
    "answering_model",
    "hit_model",
    "hits_not_recorded",
    "served_hit",
]

DEFAULT_MAX_TTL = 86_400.0
"""The longest TTL a cache accepts unless ``max_ttl`` is raised explicitly (one day)."""
MAX_TTL = float(2**31 - 1)
"""The longest ``ttl`` / ``max_ttl`` a cache accepts at all (2**31 - 1 s, about 68 years): what
every store holds alike (Redis refuses expiries far beyond it)."""
_ENVELOPE = 1
T = TypeVar("T")
logger = logging.getLogger("tokenbudget.cache")


_UNRECORDED: ContextVar[bool] = ContextVar("tokenbudget_cache_hits_unrecorded", default=False)


@contextmanager
def hits_not_recorded() -> Iterator[None]:
    """Inside this block, cache lookups return their served hits without recording them in the
    cache's ledger: for an adapter that may still find a hit unservable (an entry it cannot
    rebuild is a miss, and its host pays the model). It records each hit it does serve with
    :meth:`ResponseCacheBase.record_hit` (or :meth:`~ResponseCacheBase.arecord_hit`).

    The block holds for the async twins too (their worker threads run in a copy of the context).
    """
    token = _UNRECORDED.set(True)
    try:
        yield
    finally:
        _UNRECORDED.reset(token)


ANSWERED_BY = "answered_by"
"""The key of a :class:`~tokenbudget_core.cached_response.CachedResponse`'s ``extra`` naming the
tier of a router that answered (:meth:`Answerer.mark`): its hits are recorded on that tier
(:func:`hit_model`), as the call was charged there."""


class Answerer(NamedTuple):
    """The model that answered a call (:func:`answering_model`)."""

    model: str
    """The model: the entry's ``model``, which prices what a hit on it saves."""
    routed: bool
    """A router named it (the tier that answered): the entry's hits are recorded on it."""

    def mark(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``extra`` (an entry's host data) plus, for a routed answer, the tier under
        :data:`ANSWERED_BY`, which :func:`hit_model` reads back."""
        marked = dict(extra or {})
        if self.routed:
            marked[ANSWERED_BY] = self.model
        return marked


def answering_model(
    requested: str,
    *,
    reported: object = None,
    routed: object = None,
    registry: ModelRegistry | None = None,
) -> Answerer:
    """The model that answered a call: the one an entry names, which prices what a hit saves.
    The rule every adapter applies (each only reads the names out of its host's reply).

    Args:
        requested: The model the request names (its cache key's).
        reported: The model the reply names (a raw response's ``model``, LangChain's
            ``response_metadata["model_name"]``): taken only when ``registry`` knows it (a dated
            snapshot prices as itself); a name it does not know (a wrapper's type, a deployment
            alias) would leave the saving unpriced, so the requested model prices it instead.
        routed: The tier a router says answered (a route's ``answered_by``): it wins, and the
            answer is ``routed`` (its hits are recorded on that tier, :func:`hit_model`).
            Anything but a non-blank string is no route.
        registry: The registry that prices hits (default: the process-wide one).

    Raises:
        InvalidInputError: ``requested`` is not a non-empty string, or ``registry`` not a
            :class:`~tokenbudget_core.registry.ModelRegistry`.

    Example:
        >>> answering_model("gpt-4o", reported="gpt-4o-2024-08-06")
        Answerer(model='gpt-4o-2024-08-06', routed=False)
        >>> answering_model("gpt-4o", reported="my-proxy-deployment")
        Answerer(model='gpt-4o', routed=False)
        >>> answering_model("gpt-4o", reported="gpt-4o", routed="gpt-4o-mini")
        Answerer(model='gpt-4o-mini', routed=True)
    """
    if not isinstance(requested, str) or not requested.strip():
        raise InvalidInputError("requested", "must be a non-empty model name", value=requested)
    known = check_registry(registry)
    if isinstance(routed, str) and routed.strip():
        return Answerer(routed, True)
    if isinstance(reported, str) and reported in known:
        return Answerer(reported, False)
    return Answerer(requested, False)


def hit_model(request: CacheRequest, response: CachedResponse, registry: ModelRegistry) -> str | None:
    """The model a served hit is recorded on in a ledger keeping ``registry``'s models; ``None``
    when it knows none of them. The rule every adapter applies (the core cache records its own
    ledger's hits by it).

    A routed answer's tier (:data:`ANSWERED_BY`, the model that answered) when known, as the
    routed call was charged on it; else the model asked for, as the call itself is charged on it
    (a reply naming a dated snapshot, ``gpt-4o-2024-08-06`` for ``gpt-4o``, must not put the
    model's hits on a row of their own); else the one that answered (the host may name a model
    the registry does not know, e.g. a wrapper's type). What the hit saved is still priced on
    the model that answered (:func:`answering_model`).

    Raises:
        InvalidInputError: ``registry`` is not a :class:`~tokenbudget_core.registry.ModelRegistry`.
    """
    known = check_registry(registry)
    tier = response.extra.get(ANSWERED_BY)
    if isinstance(tier, str) and tier == response.model and tier in known:
        return tier
    return next((m for m in (request.model, response.model) if m in known), None)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidInputError(name, "must be a positive number of seconds", value=value)
    if value > MAX_TTL:  # (also an int too large for a float: never an OverflowError)
        raise InvalidInputError(
            name,
            f"must be at most {MAX_TTL:.0f} s (MAX_TTL, about 68 years)",
            value=value,
            fix=f"use at most tokenbudget_core.response_cache.MAX_TTL ({MAX_TTL:.0f}) seconds",
        )
    return float(value)


class ServedHit(NamedTuple):
    """A reply a response cache served instead of the model: it cost nothing."""

    saved_usd: Decimal | None
    """What the hit saved, as the cache's audit says (``None``: not known)."""
    recorded: bool
    """The cache already recorded the hit in a ledger."""


def served_hit(audit: object = None, usage: object = None) -> ServedHit | None:
    """Whether a reply was served from a response cache: the one rule every adapter applies to
    the marks it finds on a reply (adapters only translate where the marks live).

    Args:
        audit: The audit a tokenbudget response cache attaches to a hit it serves (LangChain:
            ``response_metadata["tokenbudget_cache"]``; LlamaIndex:
            ``additional_kwargs["cache_hit"]``): a mapping, its ``saved_usd`` decimal text and
            ``recorded`` flag read. Anything else is no mark.
        usage: The reply's usage mapping: a host's own cache marks its hits with a ``total_cost``
            of 0 (LangChain keeps the original call's ``usage_metadata`` on a cached reply, and
            sets it so); nothing saved is known, no ledger recorded it.

    Returns:
        The hit (a reply that cost $0), or ``None``: the reply of a model call.

    Raises:
        InvalidInputError: The audit's ``saved_usd`` is text but no finite, non-negative
            amount of dollars (``"abc"``, ``"NaN"``, ``"Infinity"``, ``"-1"``).
    """
    if isinstance(audit, Mapping):
        saved = audit.get("saved_usd")
        return ServedHit(_saved_usd(saved) if isinstance(saved, str) else None, bool(audit.get("recorded")))
    if isinstance(usage, Mapping) and usage.get("total_cost") == 0:
        return ServedHit(None, False)
    return None


def _saved_usd(text: str) -> Decimal:
    """A hit audit's ``saved_usd`` decimal text as dollars.

    Raises:
        InvalidInputError: Not a finite, non-negative decimal number.
    """
    try:
        amount = Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise InvalidInputError(
            "audit.saved_usd",
            "must be a finite, non-negative amount of dollars as decimal text",
            value=text,
            fix="pass the audit a tokenbudget cache attached to the hit (e.g. '0.0012'), unchanged",
        )
    return amount


def prompt_sha256(text: str) -> str:
    """SHA-256 (hex) of a prompt, as stored instead of the text when prompts are hashed."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def refuse_unknown_arguments(cls: type, unknown: Mapping[str, object]) -> None:
    """Refuse a keyword ``cls()`` does not take (a typo, or a store option such as ``timeout_s``:
    those go to the store, ``cls(open_cache_store(url, timeout_s=5))``), named with the closest.

    Raises:
        InvalidInputError: The first unknown keyword.
    """
    if unknown:
        known = [p for p in inspect.signature(cls).parameters if p not in ("store", "unknown")]
        refuse_unknown(cls.__name__, unknown, known, kind="argument")


class ResponseCacheBase:
    """Options, storability rules, envelopes and accounting shared by the exact and semantic caches."""

    kind: Literal["exact", "semantic"] = "exact"

    def __init__(
        self,
        store: str | CacheStore = "memory://",
        *,
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
        clock: Callable[[], float] = time.time,
        **unknown: object,
    ) -> None:
        refuse_unknown_arguments(type(self), unknown)
        self.max_ttl = _positive("max_ttl", max_ttl)
        self.ttl = _positive("ttl", ttl)
        if self.ttl > self.max_ttl:
            raise InvalidInputError(
                "ttl",
                f"{ttl} s is longer than max_ttl ({max_ttl:g} s)",
                value=ttl,
                fix="use a shorter ttl, or raise max_ttl explicitly if entries may live that long",
            )
        if isinstance(max_entry_bytes, bool) or not isinstance(max_entry_bytes, int) or max_entry_bytes < 1:
            raise InvalidInputError("max_entry_bytes", "must be a positive integer", value=max_entry_bytes)
        self.max_entry_bytes = max_entry_bytes
        self.cache_sampled = check_flag("cache_sampled", cache_sampled)
        self.cache_tool_calls = check_flag("cache_tool_calls", cache_tool_calls)
        self.hash_prompts = check_flag("hash_prompts", hash_prompts)
        self.scope_fields = check_scope_fields(scope_fields)
        if ledger is not None:
            from .ledger import Ledger

            if not isinstance(ledger, Ledger):
                raise InvalidInputError("ledger", "must be a Ledger", value=type(ledger).__name__)
        self.ledger = ledger
        check_price_options(registry, prices, fallback="the ledger's, else the process-wide one")
        self.registry = registry if registry is not None else (ledger.registry if ledger else None)
        self.prices = prices if prices is not None else (ledger.prices if ledger else None)
        check_clock(clock)
        self.clock = clock
        self.store_backend: CacheStore = open_cache_store(store)
        # Only exact operations on a memory store are quick enough for the event loop: a semantic
        # search (or insert) scans a partition's whole matrix, so it runs in a worker thread.
        self._inline = (
            self.kind == "exact"
            and isinstance(self.store_backend, MemoryCacheStore)
            and (ledger is None or ledger._inline)
        )

    # -- shared rules ------------------------------------------------------------------------------

    @staticmethod
    def _request(request: object) -> CacheRequest:
        if not isinstance(request, CacheRequest):
            raise InvalidInputError(
                "request",
                f"must be a CacheRequest, got {type(request).__name__}",
                fix="build one with CacheRequest(model=..., messages=..., params=...)",
            )
        return request

    def _scope(self, scope: CacheScope | None) -> CacheScope:
        return resolve_scope(scope, self.scope_fields)

    def scope_of(self, scope: CacheScope | None = None) -> CacheScope:
        """The scope a call made *now* is cached in: ``scope``, else the payer of the current
        :func:`~tokenbudget_core.attribution.attribute` block, kept to ``scope_fields``.

        Resolve it when a call starts and pass it to :meth:`lookup` and :meth:`store` when the
        answer is stored later (a stream read after the ``attribute()`` block ended, or inside
        another one): the answer is filed under the caller that asked for it.

        Raises:
            InvalidInputError: ``scope`` is not a :class:`CacheScope`.
        """
        return self._scope(scope)

    def refusal(self, request: CacheRequest, response: CachedResponse) -> str | None:
        """Why this answer would not be stored for this request (``None``: it would be).

        Raises:
            InvalidInputError: ``request`` or ``response`` is of the wrong type.
        """
        self._request(request)
        if not isinstance(response, CachedResponse):
            raise InvalidInputError(
                "response",
                f"must be a CachedResponse, got {type(response).__name__}",
                fix="CachedResponse(...)",
            )
        if request.sampled() and not self.cache_sampled:
            return "sampled request (temperature > 0 or top_p < 1); pass cache_sampled=True to cache it"
        if response.is_tool_call:
            if not self.cache_tool_calls:
                return "tool-call answer; pass cache_tool_calls=True to cache it"
            if response.finish_reason.casefold() not in ("tool_calls", "tool_use", "function_call", "stop"):
                return f"answer cut off or failed (finish_reason={response.finish_reason!r})"
        elif not response.complete:
            return f"answer cut off or failed (finish_reason={response.finish_reason!r})"
        if self.unrecordable(request, response):
            return (
                f"neither {request.model!r} nor {response.model!r} is known to the ledger's registry, "
                "so a hit could not be recorded; register the model to cache its answers"
            )
        return None

    def _hit_model(self, request: CacheRequest, response: CachedResponse) -> str | None:
        """The model a hit is recorded on in the cache's ledger (:func:`hit_model`)."""
        assert self.ledger is not None
        return hit_model(request, response, self.ledger.registry)

    def answering_model(self, requested: str, *, reported: object = None, routed: object = None) -> Answerer:
        """:func:`answering_model` with the registry that prices this cache's hits (its own,
        else its ledger's, else the process-wide one).

        Raises:
            InvalidInputError: ``requested`` is not a non-empty string.
        """
        return answering_model(requested, reported=reported, routed=routed, registry=self.registry)

    def unrecordable(self, request: CacheRequest, response: CachedResponse) -> bool:
        """Whether a hit on ``response`` could not be recorded: the cache keeps a ledger whose
        registry knows neither model of :func:`hit_model` (:meth:`refusal` then refuses the
        answer; an adapter may say so louder than the debug log)."""
        return self.ledger is not None and self._hit_model(request, response) is None

    def _now(self) -> float:
        """The clock's reading, checked (finite epoch seconds).

        Raises:
            InvalidInputError: Named ``clock``: it returned NaN, infinity, ``None``, a string...
        """
        return clock_reading(self.clock())

    def _envelope(
        self, request: CacheRequest, response: CachedResponse, scope: CacheScope, text: str, **more: Any
    ) -> str | None:
        now = self._now()
        data = {
            "v": _ENVELOPE,
            "kind": self.kind,
            "key": request.digest(),
            "scope": scope.key(),
            "created": now,
            "expires": now + self.ttl,
            "prompt": None if self.hash_prompts or request.opaque else text,  # opaque: a serialized payload
            "prompt_sha256": prompt_sha256(text),
            "response": response.to_json(),
            **more,
        }
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if len(payload.encode("utf-8", "surrogatepass")) > self.max_entry_bytes:
            return None
        return payload

    def _open(self, payload: str, scope: CacheScope) -> tuple[dict[str, Any], CachedResponse] | None:
        """Decode an envelope; ``None`` for an expired, foreign or malformed one (logged).

        Raises:
            InvalidInputError: The clock returned no time (read before the entry, so that this
                is never taken for a malformed entry).
        """
        now = self._now()
        try:
            data = json.loads(payload)
            if not isinstance(data, dict) or data.get("v") != _ENVELOPE:
                raise InvalidInputError("entry", "unknown entry format")
            if data.get("scope") != scope.key():
                logger.warning("cache entry %s is filed under another scope: ignored", data.get("key"))
                return None
            expires = data.get("expires")
            if isinstance(expires, bool) or not isinstance(expires, int | float) or not expires > now:
                return None  # (``not >``: an expiry of NaN is expired too)
            return data, CachedResponse.from_json(data["response"])
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("unreadable cache entry ignored: %s", e)
            return None

    def _saved(self, response: CachedResponse) -> tuple[Decimal | None, int | None]:
        """What a hit on ``response`` saved: dollars and tokens, ``None`` each when unknown (an
        unpriced model; an original call that reported no usage is never a $0 saving)."""
        if not response.usage_known:
            return None, None
        try:
            usd = cost_or_none(response.usage, response.model, registry=self.registry, prices=self.prices)
        except UnknownModelError:
            usd = None
        return usd, response.usage.input_tokens + response.usage.output_tokens

    def _hit(
        self,
        request: CacheRequest,
        response: CachedResponse,
        data: Mapping[str, Any],
        *,
        score: float,
        served: bool = True,
        kind: Literal["exact", "semantic"] | None = None,
    ) -> CacheHit:
        saved_usd, saved_tokens = self._saved(response)
        prompt = data.get("prompt")
        hit = CacheHit(
            response=response,
            kind=kind or self.kind,
            key=str(data.get("key")),
            score=score,
            matched_prompt=prompt if isinstance(prompt, str) else None,
            saved_usd=saved_usd,
            saved_tokens=saved_tokens,
            served=served,
        )
        if served and not _UNRECORDED.get():
            self.record_hit(request, hit)
        return hit

    def record_hit(self, request: CacheRequest, hit: CacheHit) -> None:
        """Record a hit served for ``request`` in the cache's ledger (nothing without a ledger, or
        for a hit that was not served): what a lookup does itself, outside :func:`hits_not_recorded`.

        Raises:
            InvalidInputError: ``request`` is not a :class:`CacheRequest` or ``hit`` not a
                :class:`~tokenbudget_core.cached_response.CacheHit`.
        """
        self._request(request)
        if not isinstance(hit, CacheHit):
            raise InvalidInputError("hit", f"must be a CacheHit, got {type(hit).__name__}")
        if not hit.served or self.ledger is None:
            return
        model = self._hit_model(request, hit.response)
        if model is None:  # stored by a process whose registry knew the model
            logger.warning(
                "cache hit not recorded: neither %r nor %r is known to the ledger's registry",
                request.model,
                hit.response.model,
            )
        else:
            self.ledger.record(Usage(requests=1), model=model, cache_hit=True, saved_usd=hit.saved_usd)

    async def arecord_hit(self, request: CacheRequest, hit: CacheHit) -> None:
        """Async twin of :meth:`record_hit`."""
        if self.ledger is None or self.ledger._inline:
            self.record_hit(request, hit)
        else:
            await asyncio.to_thread(self.record_hit, request, hit)

    def _lookup_exact(
        self, request: CacheRequest, where: CacheScope, *, served: bool = True
    ) -> CacheHit | None:
        """The entry stored under ``request``'s digest in ``where``: one store read (an ``exact`` hit,
        whichever cache found it)."""
        payload = self._safely(lambda: self.store_backend.get(where, request.digest()), None)
        if payload is None:
            return None
        opened = self._open(payload, where)
        if opened is None or opened[0].get("key") != request.digest():
            return None
        return self._hit(request, opened[1], opened[0], score=1.0, served=served, kind="exact")

    def _store_exact(self, request: CacheRequest, response: CachedResponse, where: CacheScope) -> bool:
        """Store under ``request``'s digest; False when :meth:`refusal` or the size refuses it."""
        reason = self.refusal(request, response)
        if reason is not None:
            logger.debug("not cached: %s", reason)
            return False
        payload = self._envelope(request, response, where, request.last_user_text)
        if payload is None:
            logger.debug("not cached: entry over max_entry_bytes=%d", self.max_entry_bytes)
            return False
        put = self.store_backend.put
        return self._safely(lambda: put(where, request.digest(), payload, self.ttl) or True, False)

    def _safely(self, fn: Callable[[], T], default: T) -> T:
        """Run a store operation; an unreachable store is a miss (logged), never a failed call."""
        try:
            return fn()
        except CacheUnavailableError as e:
            logger.warning("response cache skipped: %s", e)
            return default

    async def _async(self, fn: Callable[[], Any]) -> Any:
        if self._inline:
            return fn()
        return await asyncio.to_thread(fn)

    # -- management --------------------------------------------------------------------------------

    def invalidate(self, scope: CacheScope) -> int:
        """Drop every entry of ``scope`` (fields left ``None`` match any); how many were dropped.

        ``invalidate(CacheScope(tenant="acme"))`` drops all of acme's entries, whatever their
        user or feature.

        Raises:
            InvalidInputError: ``scope`` is not a :class:`CacheScope`.
        """
        if not isinstance(scope, CacheScope):
            raise InvalidInputError(
                "scope", "must be a CacheScope", value=scope, fix="CacheScope(tenant=...)"
            )
        return self.store_backend.invalidate(scope)

    def clear(self) -> None:
        """Drop every entry of the store (of every scope)."""
        self.store_backend.clear()

    async def ainvalidate(self, scope: CacheScope) -> int:
        """Async twin of :meth:`invalidate`."""
        result: int = await self._async(lambda: self.invalidate(scope))
        return result

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self._async(self.clear)

    def close(self) -> None:
        """Close the store's connections."""
        self.store_backend.close()


class ExactCache(ResponseCacheBase):
    """Serve identical requests (same scope, model, messages, tools and parameters) from a cache.

    Args:
        store: ``memory://`` (default), ``sqlite:///path``, ``redis://...`` or a
            :class:`~tokenbudget_core.cache_stores.CacheStore`.
        ttl: Seconds an entry lives (default an hour; at most ``max_ttl``).
        max_ttl: The longest ``ttl`` accepted (a day); raise it explicitly to keep entries longer.
        max_entry_bytes: Larger entries are not stored.
        cache_sampled: Also cache sampled requests (``temperature`` > 0 or ``top_p`` < 1).
        cache_tool_calls: Also cache answers that call tools.
        hash_prompts: Store prompts as SHA-256 only (no plaintext prompt in any entry).
        ledger: Record each served hit there (``cache_hit=True`` and what it saved).
        scope_fields: The scope fields entries are separated by; ``tenant`` is mandatory, and
            leaving out ``user`` shares answers between a tenant's users.
        registry: Model registry for pricing what hits save (default: the ledger's, else global).
        prices: Price overrides (default: the ledger's, else global).
        clock: Returns epoch seconds (tests pass a fake clock); not an ``async`` function. Each
            reading must be a finite number: ``store`` and ``lookup`` refuse any other (``None``,
            NaN, infinity...) with an ``InvalidInputError`` named ``clock``.

    Raises:
        InvalidInputError: A bad option, named (e.g. a ``ttl`` over ``max_ttl``, ``scope_fields``
            without ``tenant``, a ``clock`` that is not callable or is a coroutine function).
        MissingDependencyError: A ``redis://`` store without the ``redis`` extra.

    Example:
        >>> cache = ExactCache()
        >>> req = CacheRequest.from_text(
        ...     model="gpt-4o", prompt="Capital of France?", params={"temperature": 0}
        ... )
        >>> cache.store(req, CachedResponse(content="Paris.", model="gpt-4o",
        ...                                 usage=Usage(input_tokens=14, output_tokens=2)))
        True
        >>> hit = cache.lookup(req)
        >>> hit.response.content, hit.saved_tokens
        ('Paris.', 16)
        >>> cache.lookup(req, scope=CacheScope(tenant="other")) is None
        True
    """

    kind: Literal["exact", "semantic"] = "exact"

    def lookup(self, request: CacheRequest, *, scope: CacheScope | None = None) -> CacheHit | None:
        """The cached answer to ``request`` in ``scope`` (default: the current attribution), or ``None``.

        One store read (one round trip on Redis). Sampled requests are not looked up unless
        ``cache_sampled``.

        Raises:
            InvalidInputError: ``request`` is not a :class:`CacheRequest` or ``scope`` not a
                :class:`CacheScope`.
        """
        request = self._request(request)
        where = self._scope(scope)
        if request.sampled() and not self.cache_sampled:
            return None
        return self._lookup_exact(request, where)

    def store(
        self, request: CacheRequest, response: CachedResponse, *, scope: CacheScope | None = None
    ) -> bool:
        """Store ``response`` as the answer to ``request`` in ``scope``; False when it may not be stored.

        Not stored: cut-off or failed answers, tool-call answers (unless ``cache_tool_calls``),
        sampled requests (unless ``cache_sampled``), entries over ``max_entry_bytes``.
        :meth:`refusal` says why.

        Raises:
            InvalidInputError: ``request``, ``response`` or ``scope`` is of the wrong type.
        """
        return self._store_exact(self._request(request), response, self._scope(scope))

    async def alookup(self, request: CacheRequest, *, scope: CacheScope | None = None) -> CacheHit | None:
        """Async twin of :meth:`lookup`."""
        where = self._scope(scope)  # read the attribution here, not in a worker thread
        hit: CacheHit | None = await self._async(lambda: self.lookup(request, scope=where))
        return hit

    async def astore(
        self, request: CacheRequest, response: CachedResponse, *, scope: CacheScope | None = None
    ) -> bool:
        """Async twin of :meth:`store`."""
        where = self._scope(scope)
        stored: bool = await self._async(lambda: self.store(request, response, scope=where))
        return stored
