"""A LlamaIndex ``LLM`` that consults a tokenbudget response cache before calling the LLM it wraps.

``chat``/``complete`` and their async and streaming twins translate the request into a core
:class:`~tokenbudget_core.cache_keys.CacheRequest` and look it up in an ``ExactCache`` or
``SemanticCache``; a hit is answered without calling the wrapped LLM, a miss calls it and stores
the answer as plain JSON. A streamed miss is passed through chunk by chunk and its final
response stored, unless a chunk said it was cut off or failed (every chunk's stop reason is read:
OpenAI's closing usage-only chunk follows the one saying ``length``); a streamed hit is replayed
as a one-chunk stream. What may be cached, the scope rules and the similarity threshold are the
core cache's.

A sampled call (``temperature`` > 0 or ``top_p`` < 1) is not cached unless the cache opts in
(``cache_sampled=True``). The temperature is the one the wrapped LLM sends: the call's own, else
its ``additional_kwargs``', else its ``temperature`` field (LlamaIndex's ``OpenAI`` sends 0.1 by
default: sampled). An LLM of a provider integration that sends none is answered at the
provider's default temperature, which samples (the core's
:func:`~tokenbudget_core.cache_keys.with_default_temperature`, the rule the LangChain cache
applies too).

Every setting of the wrapped LLM is part of the key (secrets left out). Its prompt-formatting
functions (``messages_to_prompt``, ``completion_to_prompt``) are keyed by what decides their
output: their code and the values they close over and their defaults, so two closures of one
factory (``persona("Answer in English.")``, ``persona("Réponds en français.")``) are two keys. A
formatting function whose output depends on what a key cannot capture (a closure over, or a
default of, an object that is no plain JSON value; a bound method; a callable object) makes
every call go through uncached, rather than risk serving another prompt's answer.

A conversation with content the core cannot translate (a PDF or other document, audio, video)
is cached too, as an ``opaque`` request: only the very same messages (the same file bytes) are
served its answer; it is never matched by similarity.

``CachedLLM`` is a ``FunctionCallingLLM``: wrapping one (``metadata.is_function_calling_model``),
it serves agents (``FunctionAgent``) and ``chat_with_tools``. The wrapped LLM formats the tools
(``_prepare_chat_with_tools``), validates the answer and reads its tool calls
(``get_tool_calls_from_response``); the formatted request goes through the cache like any chat.
Tools the cache cannot key (tool objects rather than JSON definitions, as ``MockFunctionCallingLLM``
passes them) make the turn go through uncached. A cached answer's tool calls come back as
``ToolCallBlock``s (the core cache stores answers with tool calls only when asked:
``ExactCache(cache_tool_calls=True)``).

Who a call is for: the payer the wrapped LLM's
:class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler` charges (its ``feature`` /
``user``, under an enclosing ``attribute()`` block's ids, which win), read from the handlers on
the wrapped LLM's callback manager (or, when it has none, on the LLMs it wraps: a ``RoutedLLM``'s
tiers); without one, the payer a
:class:`~llamaindex_tokenbudget.cost_event_handler.CostEventHandler` with ``feature=`` / ``user=``
on LlamaIndex's dispatchers records every LLM call on. The lookup, a hit's record in the cache's
ledger, the embedding overhead of a ``SemanticCache`` and the store of a miss are all made under
that payer (:func:`~tokenbudget_core.attribution.in_force`), so with ``scope=None`` entries are
scoped by it, and hits, savings and overhead are reported on it and counted against its budgets.
A served hit is also recorded in the ledgers of the handlers whose payer it was made under (the
wrapped LLM's budget handlers, else the ``CostEventHandler``s) that keep other books than the
cache's (a cache with no ledger, or another one), once per set of books, as LangChain's handler
records it.

Behind a ``StructuredLLM`` (``cached.as_structured_llm(Model)``), whose own LLM event a
``BudgetCallbackHandler`` or ``CostEventHandler`` sees, a hit costs nothing as a direct one does:
the handlers are told the cache answered, and the enclosing event, which made no provider call,
is released (not recorded), instead of being charged an estimate.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import types
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import dispatcher as llm_dispatcher
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr

from tokenbudget_core.attribution import Attribution, current_attribution, in_force
from tokenbudget_core.cache_keys import (
    CacheRequest,
    CacheScope,
    canonical_json,
    integration_provider,
    model_settings,
    plain_json,
    with_default_temperature,
)
from tokenbudget_core.cached_response import CachedResponse, CacheHit, StreamStop, stop_reason_of
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.money import decimal_text
from tokenbudget_core.registry import default_registry
from tokenbudget_core.response_cache import Answerer, ResponseCacheBase, hit_model
from tokenbudget_core.usage import Usage
from tokenbudget_core.usage_sources import as_dict

from . import budget_callback, cost_event_handler
from .budget_callback import (
    ROUTE_KEY,
    BudgetCallbackHandler,
    Warned,
    caller_frame,
    inner_llms,
    warn_unreached,
)
from .cost_event_handler import CostEventHandler
from .messages import check_messages, check_prompt, to_core_messages
from .usage import CACHE_HIT_KEY

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

    from tokenbudget_core.ledger import Ledger
    from tokenbudget_core.response_cache import ExactCache
    from tokenbudget_core.semantic_cache import SemanticCache

__all__ = ["CachedLLM"]

logger = logging.getLogger("tokenbudget.cache")

ScopeLike = CacheScope | Callable[[], CacheScope | None] | None


class CachedLLM(FunctionCallingLLM):
    """Wrap a LlamaIndex LLM so repeated (or, with a ``SemanticCache``, near-identical) requests
    are answered from a tokenbudget response cache.

    Args:
        llm: The LLM called on a miss.
        cache: The core cache (``ExactCache`` or ``SemanticCache``).
        scope: The :class:`~tokenbudget_core.cache_keys.CacheScope` entries belong to, or a callable
            returning it per call; ``None`` takes the tenant, user and feature of the call's
            payer: the ``attribute()`` block in force, its ids first, then the ``feature`` /
            ``user`` of the wrapped LLM's ``BudgetCallbackHandler`` (else of a
            ``CostEventHandler`` on the dispatcher). The scope is read when the
            call is made: a stream read later (or inside another ``attribute()`` block) is
            stored for the caller who started it.
        model: The model name for keys, and for pricing when the answer does not say which
            model gave it; it must be known to the registry (the cache's, else the core's).
            Default: ``llm.metadata.model_name``, taken as it is: a model the registry does not
            know (a local model) still keys the cache, but what its hits saved cannot be priced
            (``saved_usd`` is ``None``). An LLM that names no model (``MockLLM``: ``"unknown"``)
            needs ``model=``. What a hit saved is priced on the model that answered, by the
            core's rule the LangChain cache applies too
            (:func:`~tokenbudget_core.response_cache.answering_model`): a ``RoutedLLM``'s tier
            (its route's ``answered_by``, whose row the hit is recorded on too, as the call was
            charged there), else the raw response's ``model`` when the registry knows it, else
            this one. Around a ``RoutedLLM`` (whose metadata names no single model), ``model=``
            may be left out: its answers are priced and recorded on their tier. With a ledger on
            the cache, an answer neither of whose models the ledger's registry knows is not
            cached (a hit could not be recorded): logged once as a warning.

    Warning:
        With ``scope=None`` and **no payer known** (no ``attribute()`` block naming one, no
        ``BudgetCallbackHandler`` with ``feature=`` / ``user=`` on the wrapped LLM, and no such
        ``CostEventHandler`` on the dispatcher), every caller
        shares one scope: user B is served the answer cached for user A, and the cache's hits
        and embedding overhead are recorded on no payer. Answers that depend on who asks need a
        handler naming the user, an ``attribute(user=...)`` block, or an explicit ``scope=`` (a
        callable per call).

    Raises:
        InvalidInputError: ``llm`` is not a LlamaIndex LLM, ``cache`` is not a tokenbudget cache,
            ``scope`` is neither a ``CacheScope`` nor a callable, or no model is named (neither
            ``model`` nor the LLM's metadata).
        UnknownModelError: ``model`` is not in the registry.

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> from tokenbudget_core.response_cache import ExactCache
        >>> llm = CachedLLM(MockLLM(), ExactCache(), scope=CacheScope(tenant="acme"), model="gpt-4o-mini")
        >>> llm.complete("hello").text == llm.complete("hello").text
        True
    """

    tokenbudget_eventless: ClassVar[bool] = True
    """It makes no callback event of its own: the wrapped LLM's events charge its calls (the budget
    handlers on this LLM's callback manager must be on the wrapped LLM's too, as
    ``BudgetCallbackHandler.install`` of this LLM puts them; one that is not is warned about:
    ``warn_unreached``)."""
    llm: LLM = Field(description="The LLM called on a cache miss.")
    model: str = Field(description="The model name used in cache keys and to price what a hit saved.")
    _cache: Any = PrivateAttr()  # ExactCache | SemanticCache (checked in __init__)
    _scope: ScopeLike = PrivateAttr(default=None)
    _unknown_model_told: bool = PrivateAttr(default=False)
    _warned: Warned = PrivateAttr(default_factory=set)  # handlers warned about (warn_unreached)

    def __init__(
        self,
        llm: LLM,
        cache: ExactCache | SemanticCache,
        *,
        scope: ScopeLike = None,
        model: str | None = None,
    ) -> None:
        if not isinstance(llm, LLM):
            raise InvalidInputError("llm", f"must be a LlamaIndex LLM, got {type(llm).__name__}", value=llm)
        if not isinstance(cache, ResponseCacheBase):
            raise InvalidInputError(
                "cache", f"must be an ExactCache or SemanticCache, got {type(cache).__name__}", value=cache
            )
        if scope is not None and not isinstance(scope, CacheScope) and not callable(scope):
            raise InvalidInputError(
                "scope", "must be a CacheScope, a callable returning one, or None", value=scope
            )
        if model is not None:
            if not isinstance(model, str) or not model.strip():
                raise InvalidInputError("model", "must be a non-empty model name", value=model)
            (cache.registry or default_registry()).get(model)  # an unknown model fails here
            name = model
        else:
            name = llm.metadata.model_name
            if not isinstance(name, str) or not name.strip() or name == "unknown":
                raise InvalidInputError(
                    "model",
                    f"{type(llm).__name__} does not name its model",
                    value=name,
                    fix="pass model='<model name>' (the model the cache keys and prices hits with)",
                )
        fields: dict[str, Any] = {"llm": llm, "model": name}
        super().__init__(**fields)
        self._cache = cache
        self._scope = scope

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped LLM's metadata."""
        return self.llm.metadata

    # -- translation -------------------------------------------------------------------------------

    def _payer(self) -> Attribution:
        """The payer of a call made now: the one the wrapped LLM's budget handler charges, else
        the one a ``CostEventHandler`` on LlamaIndex's LLM dispatchers records (a handler on the
        cache's ledger first), else the ``attribute()`` block in force."""
        ledger = getattr(self._cache, "ledger", None)
        named: list[BudgetCallbackHandler | CostEventHandler] = [*budget_handlers(self.llm)]
        if not named:
            named = [*cost_handlers()]
        named.sort(
            key=lambda h: not h.ledger.shares_books_with(ledger)
        )  # the cache's ledger first, else in order
        return named[0].payer() if named else current_attribution()

    def _where(self) -> tuple[Attribution, CacheScope]:
        """The payer and scope of a call made now (read once, when the call starts: a stream
        consumed later, or in another ``attribute()`` block, is still stored for the caller who
        made it, and its store's overhead charged to that caller).

        First, every call (all of them come here before the wrapped LLM is asked) checks that
        the budget handlers on this LLM's callback manager (an engine's, ``Settings``') reach the
        wrapped LLM, whose events charge the call, and warns once of one that does not
        (:func:`warn_unreached`)."""
        warn_unreached(self, self._warned)
        payer = self._payer()
        cache: ResponseCacheBase = self._cache
        with in_force(payer):
            return payer, cache.scope_of(self._scope() if callable(self._scope) else self._scope)

    def _settings(self) -> dict[str, Any]:
        """Every setting of the wrapped LLM, as LangChain's ``llm_string`` holds a model's: its
        pydantic fields (the callback manager and rate limiter are excluded by LlamaIndex, secrets
        by :func:`~tokenbudget_core.cache_keys.model_settings`), its prompt formatting, its type
        and metadata.

        Raises:
            InvalidInputError: A prompt-formatting function cannot be keyed (:func:`_describe`):
                the call goes through uncached.
        """
        llm = self.llm
        dumped = llm.model_dump(mode="json", fallback=_describe, warnings=False)
        for name in _PROMPT_FORMATTING:  # excluded from LlamaIndex's dump, yet they shape the prompt
            value = getattr(llm, name, None)
            if value is not None:
                dumped[name] = _describe(value, f"llm.{name}")
        dumped["type"] = _describe(type(llm))
        dumped["metadata"] = llm.metadata.model_dump(mode="json", fallback=_describe, warnings=False)
        return model_settings(dumped, "llm")

    def _params(self, mode: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's parameters: the mode, the wrapped LLM's settings, the call's own arguments,
        and the ``temperature`` / ``top_p`` the request carries, read by the core to tell a sampled
        call. An unset temperature is the provider's default
        (:func:`~tokenbudget_core.cache_keys.with_default_temperature`), for an LLM of a provider
        integration (``llama_index.llms.<name>``, :func:`_provider`)."""
        params: dict[str, Any] = {"mode": mode, "llm": self._settings(), **kwargs}
        for key in ("temperature", "top_p"):
            value = _sent(self.llm, key, kwargs)
            if value is not None:
                params[key] = value
        return with_default_temperature(params, _provider(self.llm))

    def _chat_request(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> CacheRequest | None:
        """The cache request of a chat call; ``None`` (call through, uncached) when it cannot be keyed.

        Messages the core cannot translate (a document, audio or video block) make an ``opaque``
        request, keyed by :func:`_fingerprint`: served only to the very same messages, never
        matched by similarity.
        """
        try:
            params = self._params("chat", kwargs)
            try:
                core = tuple(to_core_messages(messages))
            except InvalidMessageError:
                prompt = _fingerprint(messages)
                return CacheRequest.from_text(model=self.model, prompt=prompt, params=params, opaque=True)
            return CacheRequest(model=self.model, messages=core, params=params)
        except InvalidInputError as e:  # e.g. a non-JSON keyword argument: call through, uncached
            logger.debug("request not cacheable: %s", e)
            return None

    def _complete_request(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CacheRequest | None:
        try:
            params = self._params("complete", {**kwargs, "formatted": formatted})
            return CacheRequest.from_text(model=self.model, prompt=prompt, params=params)
        except InvalidInputError as e:
            logger.debug("request not cacheable: %s", e)
            return None

    def _response(
        self,
        text: str | None,
        raw: Any,
        reported: Any,
        extra: dict[str, Any],
        calls: Sequence[Any],
        stream: _StreamTail | None = None,
    ) -> CachedResponse:
        """The answer as an entry: its usage (from ``raw``), why it ended and the model that
        answered (the core's rules: :class:`~tokenbudget_core.cached_response.StreamStop` /
        :func:`~tokenbudget_core.cached_response.stop_reason_of`,
        :func:`~tokenbudget_core.response_cache.answering_model`), which prices what a hit on it
        saves.

        ``reported``: the response's own ``additional_kwargs`` (some integrations put the stop
        reason there rather than in ``raw``; a ``RoutedLLM`` its route). ``stream``: what every
        chunk of a streamed answer said (``raw`` and ``reported`` are then its last chunk's).
        """
        try:
            usage = Usage.from_llamaindex(raw) if raw is not None else Usage(estimated=True)
        except InvalidInputError:
            usage = Usage(estimated=True)
        routed = _route_of(reported)
        if stream is not None:
            reason = stream.stop.reason()
            routed = routed or stream.routed  # the route may be on an earlier chunk only
        else:
            reason = _finish_reason(raw, reported)
        cache: ResponseCacheBase = self._cache
        answerer: Answerer = cache.answering_model(self.model, reported=_model_of(raw), routed=routed)
        return CachedResponse(
            content=text or "", model=answerer.model, usage=usage, finish_reason=reason,
            tool_calls=tuple({"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls),
            extra=answerer.mark(extra),
        )  # fmt: skip

    def _chat_entry(self, response: ChatResponse, stream: _StreamTail | None = None) -> CachedResponse | None:
        try:
            calls = to_core_messages([response.message])[0].tool_calls
            extra = {"additional_kwargs": dict(response.message.additional_kwargs)}
            return self._response(
                response.message.content, response.raw, response.additional_kwargs, extra, calls, stream
            )
        except InvalidInputError as e:
            logger.debug("response not cached: %s", e)
            return None

    def _completion_entry(
        self, response: CompletionResponse, stream: _StreamTail | None = None
    ) -> CachedResponse | None:
        try:
            return self._response(response.text, response.raw, response.additional_kwargs, {}, (), stream)
        except InvalidInputError as e:
            logger.debug("response not cached: %s", e)
            return None

    def _storable(self, request: CacheRequest | None, entry: CachedResponse | None) -> bool:
        """Whether to hand ``entry`` to the cache: not one a hit on which the cache's ledger
        could not record (the core's
        :meth:`~tokenbudget_core.response_cache.ResponseCacheBase.unrecordable`, which the cache
        would refuse in its debug log only). That is said once, as a warning, with the fix."""
        if request is None or entry is None:
            return False
        cache: ResponseCacheBase = self._cache
        if cache.unrecordable(request, entry):
            if not self._unknown_model_told:
                self._unknown_model_told = True
                logger.warning(
                    "CachedLLM answers not cached: neither model=%r nor the model that answered (%r) "
                    "is known to the cache ledger's registry; pass model='<a registered model>' or "
                    "register the model",
                    request.model,
                    entry.model,
                )
            return False
        return True

    # -- tools: the wrapped LLM formats them and reads its answers ---------------------------------

    def _tool_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM) or not self.llm.metadata.is_function_calling_model:
            raise InvalidInputError(
                "llm",
                f"{type(self.llm).__name__} does not call tools (not a function-calling LLM)",
                fix="wrap a FunctionCallingLLM (OpenAI, Anthropic...), or use a ReActAgent",
            )
        return self.llm

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The wrapped LLM's request for a chat with tools (it formats the tools its own way).

        Raises:
            InvalidInputError: The wrapped LLM does not call tools.
        """
        return self._tool_llm()._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """The wrapped LLM's check of an answer to a chat with tools."""
        return self._tool_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of an answer (fresh or cached), read by the wrapped LLM."""
        return self._tool_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    # -- chat --------------------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer from the cache, else call the wrapped LLM and store its answer."""
        request = self._chat_request(check_messages(messages), kwargs)
        payer, where = self._where()
        hit = _lookup(self._cache, request, payer, where, self.llm)
        if hit is not None and hit.served:
            return _chat_hit(hit)
        _must_not_send(refusal_in_force())
        response = self.llm.chat(messages, **kwargs)
        entry = self._chat_entry(response) if request else None
        if request and entry and self._storable(request, entry):
            with in_force(payer):
                self._cache.store(request, entry, scope=where)
        return response

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async twin of :meth:`chat`."""
        request = self._chat_request(check_messages(messages), kwargs)
        payer, where = self._where()
        hit = await _alookup(self._cache, request, payer, where, self.llm)
        if hit is not None and hit.served:
            return _chat_hit(hit)
        _must_not_send(refusal_in_force())
        response = await self.llm.achat(messages, **kwargs)
        entry = self._chat_entry(response) if request else None
        if request and entry and self._storable(request, entry):
            with in_force(payer):
                await self._cache.astore(request, entry, scope=where)
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """A hit replayed as one chunk; a miss streamed through and its final response stored."""
        request = self._chat_request(check_messages(messages), kwargs)
        payer, where = self._where()
        hit = _lookup(self._cache, request, payer, where, self.llm)

        refusal = refusal_in_force()  # (read now: the stream may be read elsewhere)

        def gen() -> ChatResponseGen:
            if hit is not None and hit.served:
                response = _chat_hit(hit)
                yield response.model_copy(update={"delta": response.message.content})
                return
            tail = _StreamTail()
            _must_not_send(refusal)
            for chunk in self.llm.stream_chat(messages, **kwargs):
                tail.add(chunk)
                yield chunk
            last = tail.last
            entry = self._chat_entry(last, tail) if request and last is not None else None
            if request and entry and self._storable(request, entry):
                with in_force(payer):
                    self._cache.store(request, entry, scope=where)

        return gen()

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async twin of :meth:`stream_chat`."""
        request = self._chat_request(check_messages(messages), kwargs)
        payer, where = self._where()
        hit = await _alookup(self._cache, request, payer, where, self.llm)

        refusal = refusal_in_force()  # (read now: the stream may be read elsewhere)

        async def gen() -> ChatResponseAsyncGen:
            if hit is not None and hit.served:
                response = _chat_hit(hit)
                yield response.model_copy(update={"delta": response.message.content})
                return
            tail = _StreamTail()
            _must_not_send(refusal)
            async for chunk in await self.llm.astream_chat(messages, **kwargs):
                tail.add(chunk)
                yield chunk
            last = tail.last
            entry = self._chat_entry(last, tail) if request and last is not None else None
            if request and entry and self._storable(request, entry):
                with in_force(payer):
                    await self._cache.astore(request, entry, scope=where)

        return gen()

    # -- complete ----------------------------------------------------------------------------------

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer from the cache, else call the wrapped LLM and store its answer."""
        request = self._complete_request(check_prompt(prompt), formatted, kwargs)
        payer, where = self._where()
        hit = _lookup(self._cache, request, payer, where, self.llm)
        if hit is not None and hit.served:
            return _completion_hit(hit)
        _must_not_send(refusal_in_force())
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        entry = self._completion_entry(response) if request else None
        if request and entry and self._storable(request, entry):
            with in_force(payer):
                self._cache.store(request, entry, scope=where)
        return response

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async twin of :meth:`complete`."""
        request = self._complete_request(check_prompt(prompt), formatted, kwargs)
        payer, where = self._where()
        hit = await _alookup(self._cache, request, payer, where, self.llm)
        if hit is not None and hit.served:
            return _completion_hit(hit)
        _must_not_send(refusal_in_force())
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        entry = self._completion_entry(response) if request else None
        if request and entry and self._storable(request, entry):
            with in_force(payer):
                await self._cache.astore(request, entry, scope=where)
        return response

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """A hit replayed as one chunk; a miss streamed through and its final response stored."""
        request = self._complete_request(check_prompt(prompt), formatted, kwargs)
        payer, where = self._where()
        hit = _lookup(self._cache, request, payer, where, self.llm)

        refusal = refusal_in_force()  # (read now: the stream may be read elsewhere)

        def gen() -> CompletionResponseGen:
            if hit is not None and hit.served:
                response = _completion_hit(hit)
                yield response.model_copy(update={"delta": response.text})
                return
            tail = _StreamTail()
            _must_not_send(refusal)
            for chunk in self.llm.stream_complete(prompt, formatted=formatted, **kwargs):
                tail.add(chunk)
                yield chunk
            last = tail.last
            entry = self._completion_entry(last, tail) if request and last is not None else None
            if request and entry and self._storable(request, entry):
                with in_force(payer):
                    self._cache.store(request, entry, scope=where)

        return gen()

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async twin of :meth:`stream_complete`."""
        request = self._complete_request(check_prompt(prompt), formatted, kwargs)
        payer, where = self._where()
        hit = await _alookup(self._cache, request, payer, where, self.llm)

        refusal = refusal_in_force()  # (read now: the stream may be read elsewhere)

        async def gen() -> CompletionResponseAsyncGen:
            if hit is not None and hit.served:
                response = _completion_hit(hit)
                yield response.model_copy(update={"delta": response.text})
                return
            tail = _StreamTail()
            _must_not_send(refusal)
            async for chunk in await self.llm.astream_complete(prompt, formatted=formatted, **kwargs):
                tail.add(chunk)
                yield chunk
            last = tail.last
            entry = self._completion_entry(last, tail) if request and last is not None else None
            if request and entry and self._storable(request, entry):
                with in_force(payer):
                    await self._cache.astore(request, entry, scope=where)

        return gen()


def _lookup(
    cache: Any, request: CacheRequest | None, payer: Attribution, where: CacheScope, llm: LLM
) -> CacheHit | None:
    """``cache.lookup`` under ``payer`` (a hit is recorded on it, a semantic lookup's embedding
    charged to it); ``None`` for a request that cannot be keyed. A served hit is also recorded in
    the ledgers of the payer's handlers (``llm``'s budget handlers, else the cost handlers) that
    keep other books than the cache's (:func:`_hit_ledgers`), as LangChain's handler records
    one. An enclosing LLM call (a
    ``StructuredLLM``'s) is told whether the cache answered
    (:func:`_answered`): answered, it made no provider call and is not charged."""
    if request is None:
        _answered(False)
        return None
    with in_force(payer):
        hit: CacheHit | None = cache.lookup(request, scope=where)  # (recorded by the core's rule)
        if hit is not None and hit.served:
            for ledger, model in _hit_ledgers(cache, llm, request, hit):
                ledger.record(
                    Usage(requests=1), model=model, cache_hit=True, saved_usd=hit.saved_usd,
                    unknown_model="unpriced",
                )  # fmt: skip
    _answered(hit is not None and hit.served)
    return hit


async def _alookup(
    cache: Any, request: CacheRequest | None, payer: Attribution, where: CacheScope, llm: LLM
) -> CacheHit | None:
    """Async twin of :func:`_lookup`."""
    if request is None:
        _answered(False)
        return None
    with in_force(payer):
        hit: CacheHit | None = await cache.alookup(request, scope=where)
        if hit is not None and hit.served:
            for ledger, model in _hit_ledgers(cache, llm, request, hit):
                await ledger.arecord(
                    Usage(requests=1), model=model, cache_hit=True, saved_usd=hit.saved_usd,
                    unknown_model="unpriced",
                )  # fmt: skip
    _answered(hit is not None and hit.served)
    return hit


def _hit_ledgers(cache: Any, llm: LLM, request: CacheRequest, hit: CacheHit) -> list[tuple[Ledger, str]]:
    """The ledgers a served hit is recorded in besides the cache's own (which ``lookup`` records
    it in): those of the handlers whose payer the call is made under (as :meth:`CachedLLM._payer`
    finds them: ``llm``'s budget handlers, else, without one, the ``CostEventHandler``s on
    LlamaIndex's dispatchers, whose books would otherwise show no cache activity) keeping other
    books (one per set of books), each
    with the model it is recorded on by the core's rule
    (:func:`~tokenbudget_core.response_cache.hit_model`: a routed answer's tier, else the
    request's, else the one that answered), the one that answered when that registry knows
    neither (recorded unpriced)."""
    own = getattr(cache, "ledger", None)
    found: list[tuple[Ledger, str]] = []
    payers: list[BudgetCallbackHandler | CostEventHandler] = [*budget_handlers(llm)] or [*cost_handlers()]
    for handler in payers:
        ledger = handler.ledger
        if (own is not None and ledger.shares_books_with(own)) or any(
            ledger.shares_books_with(other) for other, _ in found
        ):
            continue
        found.append((ledger, hit_model(request, hit.response, ledger.registry) or hit.response.model))
    return found


def _route_of(reported: Any) -> str | None:
    """The tier a ``RoutedLLM``'s route in a response's ``additional_kwargs`` says answered."""
    route = reported.get(ROUTE_KEY) if isinstance(reported, dict) else None
    named = route.get("answered_by") if isinstance(route, dict) else None
    return named if isinstance(named, str) and named.strip() else None


def _model_of(raw: Any) -> str | None:
    """The model a raw response names (its ``model``), if any."""
    try:
        data = None if raw is None else as_dict(raw, "raw")
    except InvalidInputError:
        data = None
    named = data.get("model") if data is not None else None
    return named if isinstance(named, str) else None


class _StreamTail:
    """What a streamed answer's chunks said, gathered as they pass through: the last chunk (its
    message is the answer, its raw the usage), every chunk's raw response and metadata handed
    to the core's :class:`~tokenbudget_core.cached_response.StreamStop` (why the stream ended),
    and the tier a ``RoutedLLM`` route names on any chunk."""

    __slots__ = ("last", "routed", "stop")

    def __init__(self) -> None:
        self.last: Any = None
        self.stop = StreamStop()
        self.routed: str | None = None

    def add(self, chunk: Any) -> None:
        self.last = chunk
        reported = getattr(chunk, "additional_kwargs", None)
        self.stop.add(getattr(chunk, "raw", None), reported)
        self.routed = _route_of(reported) or self.routed


def _answered(served: bool) -> None:
    """Tell the budget and cost handlers' open calls enclosing the caller (a ``StructuredLLM``'s)
    whether the cache answered: answered, such a call made no provider call and is not charged."""
    frame = caller_frame(1)
    budget_callback.note_cache_answer(served, frame)
    cost_event_handler.note_cache_answer(served, frame)


_NESTED_DEPTH = 3
"""How deep :func:`budget_handlers` looks into LLMs wrapping LLMs for a budget handler."""


_CACHE_ONLY: ContextVar[Callable[[], BaseException] | None] = ContextVar(
    "tokenbudget_cached_llm_cache_only", default=None
)


@contextlib.contextmanager
def cache_only(refusal: Callable[[], BaseException]) -> Iterator[None]:
    """Inside the block a :class:`CachedLLM` answers from its cache, and on a miss raises
    ``refusal()`` instead of calling the LLM it wraps: nothing is sent (how a router asks the
    cache of a tier it did not route to after the budget refused the call)."""
    token = _CACHE_ONLY.set(refusal)
    try:
        yield
    finally:
        _CACHE_ONLY.reset(token)


def refusal_in_force() -> Callable[[], BaseException] | None:
    """The refusal of the :func:`cache_only` block in force (``None``: none)."""
    return _CACHE_ONLY.get()


def _must_not_send(refusal: Callable[[], BaseException] | None) -> None:
    if refusal is not None:
        raise refusal()


def budget_handlers(llm: LLM) -> list[BudgetCallbackHandler]:
    """The budget handlers naming a payer (``feature`` / ``user``) that charge ``llm``'s calls:
    those on its callback manager, else, when it has none, those of the LLMs it wraps (its fields
    holding LLMs, in mappings or lists too: a ``RoutedLLM``'s tiers, a ``StructuredLLM``'s LLM),
    nearest first."""
    level: list[LLM] = [llm]
    seen: set[int] = set()
    for _ in range(_NESTED_DEPTH):
        found: list[BudgetCallbackHandler] = []
        inner: list[LLM] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            manager = getattr(item, "callback_manager", None)
            found += [
                h
                for h in getattr(manager, "handlers", None) or ()
                if isinstance(h, BudgetCallbackHandler) and (h.feature is not None or h.user is not None)
            ]
            inner += inner_llms(item)
        if found or not inner:
            return found
        level = inner
    return []


def cost_handlers() -> list[CostEventHandler]:
    """The ``CostEventHandler``s naming a payer that LlamaIndex's LLM events reach: on the
    dispatcher its LLM wrappers send them to and the parents it propagates them to (the root)."""
    found: list[CostEventHandler] = []
    dispatcher: Any = llm_dispatcher
    for _ in range(_DISPATCHER_DEPTH):
        found += [
            h
            for h in dispatcher.event_handlers
            if isinstance(h, CostEventHandler) and (h.feature is not None or h.user is not None)
        ]
        if not dispatcher.propagate:
            break
        try:
            dispatcher = dispatcher.parent
        except (AssertionError, KeyError):  # no parent registered
            break
    return found


_DISPATCHER_DEPTH = 16
"""How many dispatchers up :func:`cost_handlers` looks (LlamaIndex's chain is two long)."""


def _sent(llm: LLM, key: str, kwargs: dict[str, Any]) -> float | None:
    """The ``temperature`` or ``top_p`` a call to ``llm`` sends: the call's own, else the LLM's
    ``additional_kwargs`` (merged into the request body by the integrations), else its field
    (LlamaIndex's ``OpenAI`` and ``Anthropic`` send theirs, 0.1 by default); ``None``: not sent."""
    extra = getattr(llm, "additional_kwargs", None)
    for source in (kwargs, extra if isinstance(extra, dict) else {}, {key: getattr(llm, key, None)}):
        value = source.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _provider(llm: LLM) -> str | None:
    """The provider whose API ``llm`` calls, by its integration's package (``llama_index.llms.<name>``,
    the nearest in its class's ancestry): :func:`~tokenbudget_core.cache_keys.integration_provider`.
    ``None`` for an LLM of no integration (``MockLLM``, a ``CustomLLM``) or of an unknown one
    (``OpenAILike``: any OpenAI-compatible server)."""
    for cls in type(llm).__mro__:
        parts = (getattr(cls, "__module__", None) or "").split(".")
        if parts[:2] == ["llama_index", "llms"] and len(parts) > 2:
            return integration_provider([parts[2]])
    return None


_PROMPT_FORMATTING = ("messages_to_prompt", "completion_to_prompt", "query_wrapper_prompt", "output_parser")


def _describe(value: Any, where: str | None = None) -> str:
    """A setting that is no JSON value, as text: a prompt template by its template, a class by its
    qualified name, another object by its type, and a function by what decides its output
    (:func:`_function`): its qualified name, its code, and the values it closes over and its
    defaults.

    ``where`` (a prompt-formatting function's field, :data:`_PROMPT_FORMATTING`): strict. A
    function whose output depends on what the key cannot capture (a closure over, or a default
    of, an object that is no plain JSON value; a bound method's object; a callable object)
    raises, and the call goes through uncached rather than risk another prompt's answer. For
    another field (pydantic's ``fallback``), such a callable is described by its qualified name.

    Raises:
        InvalidInputError: ``where`` is given and the function cannot be described.
    """
    template = getattr(value, "get_template", None)
    if callable(template) and not isinstance(value, type):
        try:
            return str(template())
        except (TypeError, ValueError):
            pass
    if callable(value) and not isinstance(value, type):
        try:
            return _function(value, set())
        except _Undescribable as e:
            if where is not None:
                raise InvalidInputError(
                    where,
                    f"{_name(value)} cannot be keyed: its output depends on {e}, which a cache key "
                    "cannot capture, so calls go through uncached",
                    fix="bind plain values (strings, numbers, lists, dicts), or use a prompt template",
                ) from None
            return _name(value)
    return _name(value if isinstance(value, type) else type(value))


class _Undescribable(Exception):
    """What a function depends on that a cache key cannot capture (the message says what)."""


def _name(target: Any) -> str:
    """A function's or class's ``module.qualname``."""
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}" if module else name


def _function(value: Any, seen: set[int]) -> str:
    """A function as ``module.qualname sha256:<digest>``: the digest of its code (bytecode,
    constants, the names it reads), the values its closure cells hold and its defaults (plain JSON
    values, or functions, classes and modules described by name or by this same rule); a
    ``functools.partial`` by its function and arguments; a classmethod by its class and function;
    a builtin by its name and the plain value it is bound to (``"{} ?".format``).

    Raises:
        _Undescribable: A callable object, a method bound to an object, or a closure over (a
            default of, an argument bound to) an object that is no plain JSON value.
    """
    if id(value) in seen:  # a closure referring to itself
        return f"recursive {_name(value)}"
    seen = seen | {id(value)}
    parts: Any
    if isinstance(value, functools.partial):
        parts = [
            "partial",
            _part(value.func, seen),
            [_part(a, seen) for a in value.args],
            {k: _part(v, seen) for k, v in value.keywords.items()},
        ]
    elif isinstance(value, types.FunctionType):
        cells = []
        for cell in value.__closure__ or ():
            try:
                cells.append(_part(cell.cell_contents, seen))
            except ValueError:  # an empty cell (a name not bound yet)
                cells.append("<empty>")
        parts = [
            _code(value.__code__),
            cells,
            [_part(d, seen) for d in value.__defaults__ or ()],
            {k: _part(v, seen) for k, v in (value.__kwdefaults__ or {}).items()},
        ]
    elif isinstance(value, types.BuiltinFunctionType | types.MethodWrapperType):
        owner = value.__self__
        stateless = owner is None or isinstance(owner, types.ModuleType | type)
        parts = ["builtin", None if stateless else _part(owner, seen)]
    elif isinstance(value, types.MethodType) and isinstance(value.__self__, type):  # a classmethod
        parts = ["classmethod", _name(value.__self__), _function(value.__func__, seen)]
    elif isinstance(value, types.MethodType):
        raise _Undescribable(f"the {type(value.__self__).__name__} its method is bound to")
    else:
        raise _Undescribable(f"the state of a callable {type(value).__name__}")
    digest = hashlib.sha256(canonical_json(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_name(value)} sha256:{digest}"


def _part(value: Any, seen: set[int]) -> Any:
    """A value a function closes over, a default or a bound argument: a class or module by its
    name, a function by :func:`_function`, else plain JSON.

    Raises:
        _Undescribable: Neither.
    """
    if isinstance(value, type):
        return _name(value)
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if callable(value):
        return _function(value, seen)
    try:
        return plain_json(value, "value")
    except InvalidInputError:
        raise _Undescribable(f"a {type(value).__name__}") from None


def _code(code: types.CodeType) -> list[Any]:
    """What a code object computes: its bytecode, its constants (nested functions' code too) and
    the names it reads."""
    return [code.co_code.hex(), [_constant(c) for c in code.co_consts], list(code.co_names)]


def _constant(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return _code(value)
    if isinstance(value, tuple):
        return [_constant(v) for v in value]
    if isinstance(value, frozenset):  # its iteration order varies between processes
        return sorted(canonical_json(_constant(v)) for v in value)
    return repr(value)  # None, str, bytes, numbers, Ellipsis


def _fingerprint(messages: Sequence[ChatMessage]) -> str:
    """A digest of the messages' canonical JSON, content of every kind included: inline data as
    given, a file block's file by the digest of its bytes (read now: a changed file is another
    request), a URL by its address (its content is not fetched).

    Raises:
        InvalidMessageError: An item is not a ``ChatMessage``, or a file block's file cannot be read.
    """
    parts: list[Any] = []
    for i, m in enumerate(messages):
        if not isinstance(m, ChatMessage):
            raise InvalidMessageError(f"messages[{i}]", f"must be a ChatMessage, got {type(m).__name__}")
        files: list[str] = []
        pending = list(m.blocks)
        while pending:
            block = pending.pop()
            pending += getattr(block, "blocks", None) or ()  # citable and citation blocks
            path = getattr(block, "path", None)
            if path is not None:
                try:
                    files.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
                except OSError as e:
                    raise InvalidMessageError(f"messages[{i}]", f"cannot read {path}: {e}") from e
        try:
            dumped = m.model_dump(mode="json")
        except ValueError as e:  # pydantic cannot serialize some field
            raise InvalidMessageError(f"messages[{i}]", f"cannot be serialized: {e}") from e
        parts.append([dumped, files])
    try:
        canonical = canonical_json(parts)
    except ValueError as e:  # a NaN in some field
        raise InvalidMessageError("messages", f"cannot be serialized: {e}") from e
    return (
        "llamaindex-messages sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    )


def _audit(hit: CacheHit) -> dict[str, Any]:
    saved = None if hit.saved_usd is None else decimal_text(hit.saved_usd)
    return {CACHE_HIT_KEY: {"kind": hit.kind, "key": hit.key, "score": hit.score, "saved_usd": saved}}


def _tool_call_blocks(calls: Sequence[Any]) -> list[ToolCallBlock]:
    """The stored tool calls (``{"id", "name", "arguments"}``, arguments as JSON text) as blocks."""
    blocks: list[ToolCallBlock] = []
    for call in calls:
        call_id = str(call.get("id") or "")
        arguments = call.get("arguments") or ""
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        blocks.append(
            ToolCallBlock(
                tool_call_id=call_id or None,
                tool_name=str(call.get("name") or ""),
                tool_kwargs=parsed if isinstance(parsed, dict) else str(arguments),
            )
        )
    return blocks


def _chat_hit(hit: CacheHit) -> ChatResponse:
    kwargs = hit.response.extra.get("additional_kwargs")
    calls = _tool_call_blocks(hit.response.tool_calls)
    text = hit.response.content
    blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
    message = ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[*blocks, *calls],
        additional_kwargs=dict(kwargs) if isinstance(kwargs, dict) else {},
    )
    return ChatResponse(message=message, additional_kwargs=_audit(hit))


def _completion_hit(hit: CacheHit) -> CompletionResponse:
    return CompletionResponse(text=hit.response.content, additional_kwargs=_audit(hit))


def _finish_reason(raw: Any, extra: Any) -> str:
    """Why the answer ended, by the core's rule (:func:`~tokenbudget_core.cached_response.stop_reason_of`)
    over the raw response and the response's ``additional_kwargs``; ``stop`` when neither names it."""
    try:
        data = None if raw is None else as_dict(raw, "raw")
    except InvalidInputError:
        data = None
    return stop_reason_of(data, extra) or "stop"
