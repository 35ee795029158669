"""A LangChain ``BaseCache`` on tokenbudget's response caches (exact or semantic).

LangChain hands a cache an opaque ``prompt`` (for chat models, the JSON of the messages) and
an ``llm_string`` (the model's settings). Both are read as plain data into a core
:class:`~tokenbudget_core.cache_keys.CacheRequest`; generations are stored as a plain-JSON
:class:`~tokenbudget_core.cached_response.CachedResponse` and rebuilt as fresh ``Generation`` /
``ChatGeneration`` objects on a hit, never with LangChain's ``loads``. Messages the core cannot
translate (a PDF block) are keyed on the prompt text as an ``opaque`` request, which a semantic
cache serves only exactly; images are part of the semantic match. What may be cached
(sampled requests, tool calls, cut-off answers), the scope rules and the similarity threshold
are the core cache's.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation

from tokenbudget_core.cache_keys import (
    CacheRequest,
    CacheScope,
    integration_provider,
    with_default_temperature,
)
from tokenbudget_core.cached_response import CachedResponse, CacheHit, stop_reason_of
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.money import decimal_text
from tokenbudget_core.response_cache import ResponseCacheBase
from tokenbudget_core.usage import Usage

from .messages import to_core_messages

if TYPE_CHECKING:
    from tokenbudget_core.response_cache import ExactCache
    from tokenbudget_core.semantic_cache import SemanticCache

__all__ = ["CACHE_HIT_KEY", "TokenBudgetLLMCache"]

CACHE_HIT_KEY = "tokenbudget_cache"
"""The ``response_metadata`` key of a served cache hit's audit data."""

logger = logging.getLogger("tokenbudget.cache")

ScopeLike = CacheScope | Callable[[], CacheScope | None] | None
_MESSAGE_TYPES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "tool": ToolMessage,
    "chat": ChatMessage,
    "function": FunctionMessage,
    **{  # a streamed reply kept in the history is a chunk: read as the message it adds up to
        f"{cls.__name__}Chunk": cls
        for cls in (HumanMessage, AIMessage, SystemMessage, ToolMessage, ChatMessage, FunctionMessage)
    },
}
_MESSAGE_FIELDS = ("content", "name", "tool_calls", "tool_call_id")
_EXTRA_FIELDS: dict[type[BaseMessage], tuple[str, ...]] = {
    ChatMessage: (*_MESSAGE_FIELDS, "role"),
    ToolMessage: (*_MESSAGE_FIELDS, "status"),  # Anthropic sends it as is_error
}
_UNREADABLE: list[BaseMessage] = []
"""What ``_messages`` returns for a list of LangChain messages it cannot read (never filled)."""
_MODEL_KEYS = ("model", "model_name", "model_id", "_type")


class TokenBudgetLLMCache(BaseCache):
    """LangChain's LLM cache interface over a tokenbudget ``ExactCache`` or ``SemanticCache``.

    Use it process-wide with ``set_llm_cache(...)`` or per model with ``cache=``.

    Args:
        cache: The core cache (``ExactCache`` or ``SemanticCache``); it decides what is stored,
            for how long, in which scope, and what counts as a near-duplicate.
        scope: The :class:`~tokenbudget_core.cache_keys.CacheScope` entries belong to, or a
            callable returning it per call (e.g. from the app's tenant context); ``None`` takes
            the user and feature of the current ``attribute()`` block.

    Raises:
        InvalidInputError: ``cache`` is not a tokenbudget response cache, or ``scope`` is neither
            a ``CacheScope`` nor a callable.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage
        >>> from tokenbudget_core.cache_keys import CacheScope
        >>> from tokenbudget_core.response_cache import ExactCache
        >>> model = GenericFakeChatModel(messages=iter([AIMessage("Paris.")]),
        ...     cache=TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme")))
        >>> model.invoke("Capital of France?").content, model.invoke("Capital of France?").content
        ('Paris.', 'Paris.')
    """

    def __init__(self, cache: ExactCache | SemanticCache, *, scope: ScopeLike = None) -> None:
        if not isinstance(cache, ResponseCacheBase):
            raise InvalidInputError(
                "cache", f"must be an ExactCache or SemanticCache, got {type(cache).__name__}", value=cache,
                fix="TokenBudgetLLMCache(ExactCache()) or TokenBudgetLLMCache(SemanticCache())",
            )  # fmt: skip
        if scope is not None and not isinstance(scope, CacheScope) and not callable(scope):
            raise InvalidInputError(
                "scope", "must be a CacheScope, a callable returning one, or None", value=scope
            )
        self.cache = cache
        self.scope = scope

    def _scope(self) -> CacheScope | None:
        return self.scope() if callable(self.scope) else self.scope

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for this prompt and model settings, or ``None``."""
        hit = self.cache.lookup(to_cache_request(prompt, llm_string), scope=self._scope())
        return None if hit is None or not hit.served else _generations(hit.response, self._audit(hit))

    def _audit(self, hit: CacheHit) -> dict[str, Any]:
        """What a served hit puts in each message's ``response_metadata["tokenbudget_cache"]``.

        Cost callbacks read it: a hit is not a model call, and ``recorded`` says whether the
        core cache already recorded it (with what it saved) in a ledger.
        """
        return {
            "kind": hit.kind,
            "key": hit.key,
            "score": hit.score,
            "matched_prompt": hit.matched_prompt,
            "saved_usd": None if hit.saved_usd is None else decimal_text(hit.saved_usd),
            "saved_tokens": hit.saved_tokens,
            "recorded": self.cache.ledger is not None,
        }

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations (the core cache may decline: sampled, tool calls, cut off...).

        Raises:
            InvalidInputError: ``return_val`` is not a list of LangChain ``Generation`` objects.
        """
        request = to_cache_request(prompt, llm_string)
        response = _response(_generations_of(return_val), request.model)
        if response is not None:
            self.cache.store(request, response, scope=self._scope())

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of the core cache."""
        self.cache.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async twin of :meth:`lookup`."""
        hit = await self.cache.alookup(to_cache_request(prompt, llm_string), scope=self._scope())
        return None if hit is None or not hit.served else _generations(hit.response, self._audit(hit))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async twin of :meth:`update`."""
        request = to_cache_request(prompt, llm_string)
        response = _response(_generations_of(return_val), request.model)
        if response is not None:
            await self.cache.astore(request, response, scope=self._scope())

    async def aclear(self, **kwargs: Any) -> None:
        """Async twin of :meth:`clear`."""
        await self.cache.aclear()


def _generations_of(value: object) -> Sequence[Generation]:
    if not isinstance(value, list | tuple) or not all(isinstance(g, Generation) for g in value):
        raise InvalidInputError(
            "return_val", "must be a list of LangChain Generation objects", value=type(value).__name__
        )
    return value


# -- LangChain's strings to a CacheRequest --------------------------------------------------------


def _settings(llm_string: str) -> tuple[dict[str, Any], str | None, str | None]:
    """The model settings in an ``llm_string`` (its JSON part and its ``[(key, value)]`` part), the
    class name and the provider (a core provider id) of the integration that wrote it."""
    settings: dict[str, Any] = {}
    name = None
    provider = None
    rest = llm_string
    try:
        data, end = json.JSONDecoder().raw_decode(llm_string)
    except ValueError:
        data, end = None, 0
    if isinstance(data, dict):
        if isinstance(data.get("kwargs"), dict):
            settings.update(data["kwargs"])
        ids = data.get("id")
        name = ids[-1] if isinstance(ids, list) and ids and isinstance(ids[-1], str) else None
        if isinstance(ids, list):
            provider = integration_provider(ids[:-1])  # its serialisation namespace
        rest = llm_string[end:].removeprefix("---")
    try:
        items = ast.literal_eval(rest) if rest else None  # literals only: never runs code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        items = None
    if isinstance(items, list):
        settings.update(i for i in items if isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str))
    kind = settings.get("_type")
    if provider is None:
        provider = integration_provider([kind])
    return settings, name, provider


def _messages(prompt: str) -> list[BaseMessage] | None:
    """The chat messages in a chat model's prompt (the JSON of the messages), read as plain data.

    ``None``: not a list of serialized LangChain objects (a completion model's prompt);
    ``_UNREADABLE``: such a list with a message this function cannot read.
    """
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not data or not all(isinstance(i, dict) and "lc" in i for i in data):
        return None
    out: list[BaseMessage] = []
    for item in data:
        kwargs = item.get("kwargs")
        cls = _MESSAGE_TYPES.get(str(kwargs.get("type"))) if isinstance(kwargs, dict) else None
        if cls is None or kwargs is None:
            return _UNREADABLE
        fields = _EXTRA_FIELDS.get(cls, _MESSAGE_FIELDS)
        try:
            out.append(cls(**{k: kwargs[k] for k in fields if kwargs.get(k) is not None}))
        except (ValueError, TypeError):
            return _UNREADABLE
    return out


def to_cache_request(prompt: str, llm_string: str) -> CacheRequest:
    """The core request for LangChain's ``prompt`` and ``llm_string``.

    The model name and the sampling settings (``temperature``, ``top_p``) are read from the
    ``llm_string``, which is also kept whole as a parameter (every setting is part of the key).
    A provider integration that sets no temperature (``ChatOpenAI()``, ``ChatAnthropic()``)
    samples at its provider's default: the core's
    :func:`~tokenbudget_core.cache_keys.with_default_temperature` says which.

    Raises:
        InvalidInputError: ``prompt`` or ``llm_string`` is not a string.
    """
    if not isinstance(llm_string, str):
        raise InvalidInputError("llm_string", "must be a string", value=type(llm_string).__name__)
    settings, name, provider = _settings(llm_string)
    found = [settings.get(k) for k in _MODEL_KEYS]
    model = next((m for m in found if isinstance(m, str) and m.strip()), name or "unknown-model")
    params: dict[str, Any] = {"llm_string": llm_string}
    extra = settings.get("model_kwargs")
    for key in ("temperature", "top_p"):
        value = settings.get(key)
        if value is None and isinstance(extra, dict):
            value = extra.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[key] = value
    params = with_default_temperature(params, provider)  # unset: the provider's default
    messages = _messages(prompt) if isinstance(prompt, str) else None
    if messages is not None:
        try:
            if messages is not _UNREADABLE:
                failed = [
                    m.tool_call_id for m in messages if isinstance(m, ToolMessage) and m.status == "error"
                ]
                if failed:  # a failed tool result is another request than a successful one
                    params["failed_tool_calls"] = failed
                return CacheRequest(model=model, messages=tuple(to_core_messages(messages)), params=params)
        except (InvalidInputError, TypeError):
            pass
        # messages the core cannot read (a PDF block, a message type unknown here): key on the
        # text, and let a semantic cache serve only the identical request
        return CacheRequest.from_text(model=model, prompt=prompt, params=params, opaque=True)
    return CacheRequest.from_text(model=model, prompt=prompt, params=params)


# -- generations <-> CachedResponse ---------------------------------------------------------------


def _response(generations: Sequence[Generation], model: str) -> CachedResponse | None:
    """The generations as a plain-JSON response; ``None`` (not stored) when they are not plain JSON."""
    items: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    usage: Usage | None = None
    reported: list[object] = []  # where each generation says why it ended
    for g in generations:
        item: dict[str, Any] = {"text": g.text, "generation_info": g.generation_info}
        reported.append(g.generation_info)
        if isinstance(g, ChatGeneration) and isinstance(g.message, AIMessage):
            m = g.message
            calls += [dict(c) for c in m.tool_calls]
            item["message"] = {
                "content": m.content, "tool_calls": [dict(c) for c in m.tool_calls], "name": m.name,
                "usage_metadata": dict(m.usage_metadata) if m.usage_metadata else None,
                "response_metadata": m.response_metadata, "additional_kwargs": m.additional_kwargs,
            }  # fmt: skip
            if usage is None and m.usage_metadata:
                usage = Usage.from_langchain(m.usage_metadata)
            answered_by = m.response_metadata.get("model_name") or m.response_metadata.get("model")
            if isinstance(answered_by, str) and answered_by:
                model = answered_by  # what a hit saves is priced on the model that answered
            reported.append(m.response_metadata)
        items.append(item)
    try:
        return CachedResponse(
            content=generations[0].text if generations else "", model=model,
            usage=usage if usage is not None else Usage(estimated=True),
            finish_reason=stop_reason_of(*reported) or "stop",
            tool_calls=tuple(calls), extra={"generations": items},
        )  # fmt: skip
    except InvalidInputError as e:
        logger.debug("LangChain generations not cached: %s", e)
        return None


def _generations(response: CachedResponse, audit: Mapping[str, Any]) -> list[Generation] | None:
    """Fresh LangChain objects from a cached response (``None``, a miss, for an unreadable entry).

    Chat messages carry ``audit`` under ``response_metadata["tokenbudget_cache"]``.
    """
    items = response.extra.get("generations")
    if not isinstance(items, Sequence) or isinstance(items, str):  # written by another host
        return [Generation(text=response.content)]
    try:
        out: list[Generation] = []
        for item in items:
            info = item.get("generation_info")
            message = item.get("message")
            if isinstance(message, Mapping):
                fields = {
                    k: message[k] for k in ("content", "name", "usage_metadata") if message.get(k) is not None
                }
                ai = AIMessage(
                    **fields, tool_calls=list(message.get("tool_calls") or []),
                    response_metadata={**(message.get("response_metadata") or {}), CACHE_HIT_KEY: {**audit}},
                    additional_kwargs=dict(message.get("additional_kwargs") or {}),
                )  # fmt: skip
                out.append(ChatGeneration(message=ai, generation_info=info))
            else:
                out.append(Generation(text=item["text"], generation_info=info))
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        logger.warning("unreadable LangChain cache entry ignored: %s", e)
        return None
