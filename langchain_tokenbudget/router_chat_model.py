"""A chat model that routes each call to the cheapest adequate tier: :class:`RouterChatModel`.

It is a ``BaseChatModel`` over one chat model per tier, so it drops in wherever LangChain takes
a chat model (LCEL, ``create_agent``, ``bind_tools``, ``with_structured_output``,
``with_fallbacks``). Each call is translated (messages, tools, ``max_tokens``, payer) and the
core :class:`~tokenbudget_core.routing.TierRouter` decides the tier: complexity, budget and
context window. The chosen tier's model is then called *as itself*: ``invoke``, ``stream``,
``batch`` and their async twins hand the call to the tier model with the caller's config, so
there is one model run per call, traced and charged (by a
:class:`~langchain_tokenbudget.budget_callback.BudgetCallbackHandler`) under the model that
answered. Retryable provider errors (429, overload, timeouts, 5xx) go down the tier's fallback
chain (a stream only until its first chunk).

The decision shows in the reply's ``response_metadata["tokenbudget_route"]`` (tier, model,
reason, score, budget step, estimated and premium cost, ``answered_by``) and in the run's
``metadata["tokenbudget_route"]``, which callbacks and tracers receive.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManager, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import merge_configs
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.routing import RouteDecision, output_cap, tiers_argument

from ._tiers import ROUTE_KEY, Tiers, annotate, check_fallback_chains
from .budget_callback import MAX_OUTPUT_KEYS, ROUTER_LLM_TYPE, first

__all__ = ["RouterChatModel"]

_ROUTER_OPTIONS = ("force_tier", "model")
"""Per-call options the router reads (``Tiers.request`` pops them): never sent to a tier model."""
_BOUND = "tokenbudget_bound_tools"
"""Bound kwarg: ``id()`` of a tier or fallback chat model -> that model with the tools bound (built
once, at ``bind_tools``)."""


@dataclass(kw_only=True)
class _Call:
    """One call, translated: what to route on and how to call a model of the chain."""

    messages: list[BaseMessage]
    config: RunnableConfig
    kwargs: dict[str, Any]
    bound: Mapping[int, Runnable[Any, Any]]
    route_options: dict[str, Any]
    attempts: int = field(default=0)

    def config_for(self, decision: RouteDecision, model: str) -> RunnableConfig:
        """The caller's config plus the decision in the run's metadata, with ``answered_by`` the
        ``model`` this attempt calls (budget callbacks charge it); a retry gets a new run id."""
        route = {**decision.as_metadata(), "answered_by": model}
        config = merge_configs(self.config, {"metadata": {ROUTE_KEY: route}})
        if self.attempts:
            config.pop("run_id", None)
        self.attempts += 1
        return config


def _no_cache(cache: object) -> None:
    """Refuse a response cache on the router itself: each call is answered by a tier model,
    whose run reads its own cache (or the global one) under the payer its budget handler
    charges. The router's own ``cache`` stays ``False``, so that on LangChain's ``generate()``
    path the router's run reads no cache either (the global one, unscoped, would serve one user
    another's answer); ``False`` is all it takes."""
    if cache is not None and cache is not False:
        raise InvalidInputError(
            "cache",
            "is never used by a RouterChatModel: each call is made by a tier model, which reads "
            "its own cache (or the global one)",
            value=cache,
            fix="set the cache on the tier models (e.g. ChatOpenAI(..., cache=...)) or for every "
            "model with langchain_core.globals.set_llm_cache(...)",
        )


class RouterChatModel(BaseChatModel):
    """A chat model that sends each call to the cheapest adequate of its tier models.

    Args:
        tiers: Tier name -> chat model, ordered cheapest -> premium (also the first positional
            argument).
        models: Tier name -> the model name to price and count with, for chat models that do not
            name theirs (default: each chat model's ``model_name`` / ``model``). Tiers only: a
            fallback is priced by the name its own chat model gives.
        fallbacks: Tier name -> chat models to try, in order, when the tier's model fails with a
            retryable provider error (429, overload, timeout, 5xx).
        classifier: A :class:`~tokenbudget_core.complexity.ComplexityClassifier` (default: the
            core's heuristic over these tiers).
        ledger: A :class:`~tokenbudget_core.ledger.Ledger`: step down tiers as the payer's budget
            fills, refuse (``BudgetExceededError``) when it is used up. A call the budget refuses
            on the tier it was stepped down to is looked up in the caches of the tiers it stepped
            over (the classifier's first), cache-only: a tier model's ``TokenBudgetLLMCache``
            answers under the call's payer, a miss is refused, never sent.
        registry: Model facts and pricing names (default: the core's registry).
        max_tokens: Output tokens sent to the tier model when set, and assumed by routing. Unset,
            routing assumes what each tier will be asked for: its chat model's own ``max_tokens``
            (``max_completion_tokens``, ``max_output_tokens``), else 1024; the core takes one cap
            for all tiers, so the largest of those (a call's own ``max_tokens`` comes first).
        temperature: Sent to the tier model when set.
        stop: Stop sequences sent to the tier model when the call gives none.
        streaming: ``invoke`` streams from the tier model and returns the joined reply.
        feature: Default feature for budget-aware routing, when the run's metadata /
            configurable / tags name none: give the same defaults as a ``BudgetMiddleware`` or
            budget callback that charges the calls, or the router decides for another payer.
        user: Default user, likewise.

    Per call: ``force_tier="large"`` (or ``config={"configurable": {"force_tier": "large"}}``) skips
    the classifier; ``model=`` naming a tier's model does the same. The payer for budget-aware
    routing comes from the run's metadata / configurable / tags, else ``feature=`` / ``user=``.

    Raises:
        InvalidInputError: Empty tiers, a tier that is not a chat model or names no model, an
            unknown option, a ``cache`` (set it on the tier models); at call time an unknown
            ``force_tier``, a ``max_tokens`` that is not a positive integer, or unreadable
            messages.
        UnknownModelError: A tier's model is not in the registry (name it with ``models=``).
        ContextOverflowError: At call time, when the request fits no tier's window.
        BudgetExceededError: At call time, when the payer's budget is used up (nothing is sent).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> router = RouterChatModel(
        ...     {
        ...         "small": GenericFakeChatModel(messages=iter(["Paris."])),
        ...         "large": GenericFakeChatModel(messages=iter(["A long essay..."])),
        ...     },
        ...     models={"small": "gpt-4o-mini", "large": "gpt-4o"},
        ... )
        >>> reply = router.invoke("What is the capital of France?")
        >>> reply.content, reply.response_metadata["tokenbudget_route"]["tier"]
        ('Paris.', 'small')
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    tiers: dict[str, Any] = Field(description="Tier name -> chat model, cheapest first.")
    models: dict[str, str] | None = Field(default=None, description="Tier name -> model name to price with.")
    fallbacks: dict[str, list[Any]] | None = Field(
        default=None, description="Tier name -> chat models to try on retryable provider errors."
    )
    classifier: Any = Field(default=None, description="The complexity classifier (default: heuristic).")
    ledger: Any = Field(default=None, description="Ledger for budget-aware routing.")
    feature: str | None = Field(
        default=None, description="Default feature for budget-aware routing (when the call names none)."
    )
    user: str | None = Field(
        default=None, description="Default user for budget-aware routing (when the call names none)."
    )
    registry: Any = Field(default=None, description="Model registry (default: the core's).")
    max_tokens: int | None = Field(default=None, description="Output cap: for routing, sent when set.")
    temperature: float | None = Field(default=None, description="Sent to the tier model when set.")
    stop: list[str] | None = Field(default=None, description="Default stop sequences.")
    streaming: bool = Field(default=False, description="invoke() streams from the tier and joins.")

    _tiers: Tiers = PrivateAttr()

    def __init__(
        self, tiers: Mapping[str, BaseChatModel] | None = None, /, *extra: object, **data: Any
    ) -> None:
        tiers_argument("RouterChatModel", tiers, extra, data)
        if not isinstance(data.get("tiers"), Mapping):
            raise InvalidInputError(
                "tiers",
                "must be a non-empty mapping of tier name -> chat model, cheapest first",
                value=data.get("tiers"),
                fix="RouterChatModel({'small': ChatOpenAI(model='gpt-4o-mini'), 'large': ...})",
            )
        check_fallback_chains(data.get("fallbacks"))  # before pydantic reads a bare model as a list
        try:
            super().__init__(**data)
        except ValidationError as e:
            error = e.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "RouterChatModel"
            raise InvalidInputError(where, str(error["msg"]), value=error.get("input")) from e
        _no_cache(self.cache)
        self.cache = False  # the router's own run never reads a cache (see _no_cache)
        self._tiers = Tiers(
            self.tiers,
            models=self.models,
            fallbacks=self.fallbacks,
            classifier=self.classifier,
            ledger=self.ledger,
            registry=self.registry,
            max_output_tokens=1024 if self.max_tokens is None else self.max_tokens,
            feature=self.feature,
            user=self.user,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cache":  # refused as in the constructor; None is kept as False (see _no_cache)
            _no_cache(value)
            value = False
        super().__setattr__(name, value)

    @property
    def router(self) -> Any:
        """The core :class:`~tokenbudget_core.routing.TierRouter` deciding the routes."""
        return self._tiers.router

    @property
    def _llm_type(self) -> str:
        return ROUTER_LLM_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"tiers": dict(self._tiers.router.tiers)}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="tokenbudget",
            ls_model_name=str(kwargs.get("model") or "|".join(self._tiers.router.tiers.values())),
            ls_model_type="chat",
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    # -- translation -----------------------------------------------------------------------------

    def _call(
        self, input: LanguageModelInput, config: RunnableConfig | None, stop: list[str] | None, kwargs: Any
    ) -> _Call:
        """Translate one call: its messages, config, route options, and the kwargs for the tier model."""
        own: dict[str, Any] = {k: v for k, v in (("tags", self.tags), ("metadata", self.metadata)) if v}
        if self.callbacks:
            own["callbacks"] = self.callbacks
        merged = merge_configs(ensure_config(config), own) if own else ensure_config(config)  # type: ignore[arg-type]
        kwargs = dict(kwargs)
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        bound: dict[int, Runnable[Any, Any]] = kwargs.pop(_BOUND, None) or {}
        if tools and not bound:  # tools given per call rather than with bind_tools()
            bound = self._bind_each(tools, tool_choice)
        for key, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            if value is not None:
                kwargs.setdefault(key, value)
        if stop or self.stop:
            kwargs["stop"] = stop or self.stop
        for key in MAX_OUTPUT_KEYS:  # sent to the tier model as given: checked before routing
            if kwargs.get(key) is not None:
                output_cap(key, kwargs[key])
        route_options = {"tools": tools, "max_output_tokens": first(int, MAX_OUTPUT_KEYS, kwargs)}
        messages = self._convert_input(input).to_messages()
        return _Call(
            messages=messages, config=merged, kwargs=kwargs, bound=bound, route_options=route_options
        )

    def _model(self, call: _Call, chat: BaseChatModel) -> Runnable[Any, Any]:
        if not call.bound:
            return chat
        found = call.bound.get(id(chat))
        if found is None:  # bound by another router object (one copied after bind_tools)
            raise InvalidInputError(
                "tools",
                f"were bound to other chat models than this router's {type(chat).__name__}",
                fix="call bind_tools() on the router object you invoke",
            )
        return found

    def _bind_each(
        self, tools: Sequence[Any], tool_choice: Any, **kwargs: Any
    ) -> dict[int, Runnable[Any, Any]]:
        """Every model of every tier and fallback chain with the tools bound, by ``id()`` of the
        chat model."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        out: dict[int, Runnable[Any, Any]] = {}
        for key, (name, chat) in self._tiers.chats.items():
            try:
                out[key] = chat.bind_tools(tools, **kwargs)
            except NotImplementedError as e:
                raise InvalidInputError(
                    "tools",
                    f"the model {name!r} ({type(chat).__name__}) does not support tool calling",
                    fix="use chat models with bind_tools() in every tier and fallback",
                ) from e
        return out

    def _route(self, call: _Call) -> RouteDecision:
        return self._tiers.route(call.messages, call.config, call.kwargs, **call.route_options)

    async def _aroute(self, call: _Call) -> RouteDecision:
        return await self._tiers.aroute(call.messages, call.config, call.kwargs, **call.route_options)

    # -- the calls: one model run each, under the model that answered ----------------------------

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Route, then call the tier's model (down its fallback chain on retryable errors).

        Raises:
            BudgetExceededError: The payer's budget is used up: nothing was sent.
            ContextOverflowError: The request fits no tier.
            InvalidInputError: An unknown ``force_tier`` or unreadable messages.
        """
        if self.streaming:
            return _joined(list(self.stream(input, config, stop=stop, **kwargs)))
        call = self._call(input, config, stop, kwargs)

        def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Any]:
            pick = self._tiers.picker(decision)

            def attempt(model: str) -> tuple[str, Any]:
                return model, self._model(call, pick(model)).invoke(
                    input, call.config_for(decision, model), **call.kwargs
                )

            with self._tiers.cache_only(call.config, refused):  # an alternate: its cache, or refused
                return self._tiers.router.call(decision, attempt)

        decision, (model, message) = self._tiers.router.answer(self._route(call), run)
        return annotate(message, decision, model)  # type: ignore[no-any-return]

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Async twin of :meth:`invoke`."""
        if self.streaming:
            return _joined([c async for c in self.astream(input, config, stop=stop, **kwargs)])
        call = self._call(input, config, stop, kwargs)

        async def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Any]:
            pick = self._tiers.picker(decision)

            async def attempt(model: str) -> tuple[str, Any]:
                reply = await self._model(call, pick(model)).ainvoke(
                    input, call.config_for(decision, model), **call.kwargs
                )
                return model, reply

            with self._tiers.cache_only(call.config, refused):
                return await self._tiers.router.acall(decision, attempt)

        decision, (model, message) = await self._tiers.router.aanswer(await self._aroute(call), run)
        return annotate(message, decision, model)  # type: ignore[no-any-return]

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Route, then stream the tier model's chunks (the first carries the decision).

        A retryable error before the first chunk moves to the next fallback; after it, it propagates.
        """
        call = self._call(input, config, stop, kwargs)
        decision = self._route(call)

        pick = self._tiers.picker(decision)

        def start(model: str) -> tuple[str, Any, Iterator[Any]]:
            chunks = iter(
                self._model(call, pick(model)).stream(input, call.config_for(decision, model), **call.kwargs)
            )
            with _closed_on_error(chunks):
                return model, next(chunks, None), chunks

        model, head, rest = self._tiers.router.call(decision, start)
        with contextlib.closing(rest):  # type: ignore[type-var]
            if head is not None:
                yield annotate(head, decision, model)
            yield from rest

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of :meth:`stream`."""
        call = self._call(input, config, stop, kwargs)
        decision = await self._aroute(call)

        pick = self._tiers.picker(decision)

        async def start(model: str) -> tuple[str, Any, AsyncIterator[Any]]:
            chunks = aiter(
                self._model(call, pick(model)).astream(input, call.config_for(decision, model), **call.kwargs)
            )
            try:
                return model, await anext(chunks, None), chunks
            except BaseException:
                await _aclose(chunks)
                raise

        model, head, rest = await self._tiers.router.acall(decision, start)
        try:
            if head is not None:
                yield annotate(head, decision, model)
            async for chunk in rest:
                yield chunk
        finally:
            await _aclose(rest)

    # -- BaseChatModel's own run path (generate(), legacy callers): the tier runs as a child ------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = _child(run_manager)
        return ChatResult(
            generations=[ChatGeneration(message=self.invoke(messages, config, stop=stop, **kwargs))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = _child(run_manager)
        reply = await self.ainvoke(messages, config, stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        config = _child(run_manager)
        for chunk in self.stream(messages, config, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        config = _child(run_manager)
        async for chunk in self.astream(messages, config, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=chunk)

    # -- tools and structured output: applied to every tier --------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every tier's (and fallback's) model; the router picks one per call.

        Raises:
            InvalidInputError: A tier model does not support tool calling, or a tool is unreadable.
        """
        bound = self._bind_each(tools, tool_choice, **kwargs)
        return self.bind(tools=list(tools), tool_choice=tool_choice, **{_BOUND: bound})

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Each tier model's own ``with_structured_output(schema, ...)``, behind the same routing.

        ``kwargs`` (``method``, ``strict``...) go to every tier model. The router's own
        ``max_tokens`` and ``temperature`` are set on each tier model (a copy with that field), so
        the cap routing assumes is the cap sent, as with :meth:`invoke`; for a tier model with no
        such field they are passed with each call, as :meth:`invoke` passes them, as are keyword
        arguments given to the structured runnable's ``invoke``.

        Raises:
            InvalidInputError: A tier model does not support structured output.
        """
        structured: dict[int, Runnable[Any, Any]] = {}
        settings = {
            k: v
            for k, v in (("max_tokens", self.max_tokens), ("temperature", self.temperature))
            if v is not None
        }
        passed: dict[int, dict[str, Any]] = {}
        for key, (name, chat) in self._tiers.chats.items():
            chat, passed[key] = _with_settings(chat, settings)
            try:
                structured[key] = chat.with_structured_output(schema, include_raw=include_raw, **kwargs)
            except NotImplementedError as e:
                raise InvalidInputError(
                    "schema",
                    f"the model {name!r} ({type(chat).__name__}) does not support structured output",
                    fix="use chat models with tool calling or structured output in every tier",
                ) from e
        return _StructuredRouter(router=self, structured=structured, passed=passed, include_raw=include_raw)


class _StructuredRouter(Runnable[LanguageModelInput, Any]):
    """The router's decision, then the chosen model's structured-output runnable."""

    def __init__(
        self,
        *,
        router: RouterChatModel,
        structured: dict[int, Runnable[Any, Any]],
        passed: dict[int, dict[str, Any]],
        include_raw: bool,
    ) -> None:
        self.router, self.structured, self.include_raw = router, structured, include_raw
        self.passed = passed  # id() of a chat model -> the router's settings it has no field for

    def _out(self, result: Any, decision: RouteDecision, model: str) -> Any:
        if self.include_raw and isinstance(result, dict) and "raw" in result:
            return {**result, "raw": annotate(result["raw"], decision, model)}
        return result

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        call = self.router._call(input, config, None, kwargs)
        tiers = self.router._tiers

        def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Any]:
            pick = tiers.picker(decision)

            def attempt(model: str) -> tuple[str, Any]:
                key = id(pick(model))
                args = {**self.passed[key], **_own_options(kwargs)}
                return model, self.structured[key].invoke(input, call.config_for(decision, model), **args)

            with tiers.cache_only(call.config, refused):
                return tiers.router.call(decision, attempt)

        decision, (model, result) = tiers.router.answer(self.router._route(call), run)
        return self._out(result, decision, model)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        call = self.router._call(input, config, None, kwargs)
        tiers = self.router._tiers

        async def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Any]:
            pick = tiers.picker(decision)

            async def attempt(model: str) -> tuple[str, Any]:
                key = id(pick(model))
                args = {**self.passed[key], **_own_options(kwargs)}
                reply = await self.structured[key].ainvoke(input, call.config_for(decision, model), **args)
                return model, reply

            with tiers.cache_only(call.config, refused):
                return await tiers.router.acall(decision, attempt)

        decision, (model, result) = await tiers.router.aanswer(await self.router._aroute(call), run)
        return self._out(result, decision, model)


def _own_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A structured call's keyword arguments for the tier model: without the router's own
    (``force_tier``, and ``model`` naming a tier's model), which route the call and are no
    provider's parameters."""
    return {k: v for k, v in kwargs.items() if k not in _ROUTER_OPTIONS}


def _with_settings(chat: BaseChatModel, settings: Mapping[str, Any]) -> tuple[BaseChatModel, dict[str, Any]]:
    """A copy of ``chat`` with the router's ``settings`` in its own fields (``max_tokens`` in
    whichever of ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` it has), and
    the settings it has no field for: those are passed with each call, as :meth:`invoke` passes
    them."""
    fields = getattr(type(chat), "model_fields", {})
    update: dict[str, Any] = {}
    leftover: dict[str, Any] = {}
    for key, value in settings.items():
        field = next((k for k in (MAX_OUTPUT_KEYS if key == "max_tokens" else (key,)) if k in fields), None)
        if field is None:
            leftover[key] = value
        else:
            update[field] = value
    return (chat.model_copy(update=update) if update else chat), leftover


def _child(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> RunnableConfig | None:
    """A config whose callbacks run the tier model as a child of the router's own run."""
    if run_manager is None:
        return None
    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return RunnableConfig(callbacks=manager)


def _joined(chunks: list[AIMessageChunk]) -> AIMessage:
    if not chunks:
        return AIMessage("")
    return message_chunk_to_message(functools.reduce(operator.add, chunks))  # type: ignore[return-value]


@contextlib.contextmanager
def _closed_on_error(chunks: Iterator[Any]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        raise


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
