"""An LLM that routes each call to the cheapest adequate tier: :class:`RoutedLLM`.

It is a LlamaIndex ``LLM`` over one ``LLM`` per tier, usable wherever LlamaIndex takes an LLM
(chat engines, query engines, agents). Each call is translated (chat messages with
:func:`~llamaindex_tokenbudget.messages.to_core_request`, blocks the core cannot represent
estimated, or the completion prompt) and the
core :class:`~tokenbudget_core.routing.TierRouter` decides the tier: complexity, budget and
context window. The budget read is that of the payer the tiers' calls are charged to, as
:class:`~llamaindex_tokenbudget.cached_llm.CachedLLM` finds it: the ``feature`` / ``user`` of
the :class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler` on this LLM's
callback manager, else on its tiers' (a handler on the router's ledger first; without one, a
:class:`~llamaindex_tokenbudget.cost_event_handler.CostEventHandler`'s), under an enclosing
:func:`~tokenbudget_core.attribute` block's ids, which win. The
chosen tier's LLM then answers as itself, so its own callback events (and a
:class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler`) see the model that
answered. Retryable provider errors go down the tier's fallback chain (a stream only until its
first chunk). The decision is in ``response.additional_kwargs["tokenbudget_route"]`` (every
chunk of a stream), and the tier LLM is called, and each chunk of its stream read (a lazy stream,
as a ``CustomLLM``'s async ones, makes its provider call in the first read), under
:func:`~tokenbudget_core.routing.using_route`, so a budget handler charging it prices it on the
tier's model and records what routing saved against the premium tier. A ``RoutedLLM`` may be a
tier of another: the answer's ``answered_by`` names the model that answered (the inner router's
tier), and the call is charged on it with the saving against the outer router's premium model
(the one its ``tokenbudget_route`` names: the inner router calls its tier under the outer route).

Tool calling: ``RoutedLLM`` is a ``FunctionCallingLLM``, and reports
``metadata.is_function_calling_model`` when every tier and fallback LLM is one. Then
``chat_with_tools`` and its async and streaming twins (what ``FunctionAgent`` calls) route the
conversation, its tool definitions counted as input, and the chosen tier's own ``*_with_tools``
formats the tools for its provider; ``get_tool_calls_from_response`` is answered by the LLM that
answered (``tokenbudget_route["answered_by"]``). When some tier cannot call tools, agents refuse
the ``RoutedLLM`` up front (``FunctionAgent``: "LLM must be a FunctionCallingLLM") and the
``*_with_tools`` methods raise :class:`~tokenbudget_core.errors.InvalidInputError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, ValidationError
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, fresh_refusal, refuse_unknown
from tokenbudget_core.messages import Message
from tokenbudget_core.routing import (
    RouteDecision,
    TierRouter,
    current_route,
    output_cap,
    tiers_argument,
    using_route,
)

from ._bridge import host_error
from .budget_callback import BudgetCallbackHandler, Warned, warn_unreached
from .cached_llm import CachedLLM, budget_handlers, cache_only, cost_handlers
from .cost_event_handler import CostEventHandler
from .messages import check_messages, check_prompt, to_core_request

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["ROUTE_KEY", "RoutedLLM"]

ROUTE_KEY = "tokenbudget_route"
R = TypeVar("R", ChatResponse, CompletionResponse)


def _own_output_cap(llm: LLM) -> int | None:
    """The output a tier LLM asks for itself (its ``max_tokens``, as LlamaIndex's OpenAI and
    Anthropic integrations send it); ``None`` when it sets none."""
    cap = getattr(llm, "max_tokens", None)
    return cap if type(cap) is int and cap > 0 else None


def _model_name(llm: object, *, field: str, explicit: str | None) -> str:
    if not isinstance(llm, LLM):
        raise InvalidInputError(
            field, f"must be a LlamaIndex LLM, got {type(llm).__name__}", fix="pass the LLM itself"
        )
    if explicit is not None:
        return explicit
    for name in (llm.metadata.model_name, getattr(llm, "model", None)):
        if isinstance(name, str) and name and name != "unknown":
            return name
    raise InvalidInputError(
        field,
        f"{type(llm).__name__} does not name its model",
        fix="name the model to price it with: models={'<tier>': 'gpt-4o-mini', ...}",
    )


def _annotated(response: R, decision: RouteDecision, model: str) -> R:
    """``response`` with ``decision`` in its ``tokenbudget_route``, answered by ``model``, unless a
    ``RoutedLLM`` tier (a router nested in this one) already named the model that answered."""
    nested = response.additional_kwargs.get(ROUTE_KEY)
    answered_by = nested.get("answered_by") if isinstance(nested, Mapping) else None
    response.additional_kwargs[ROUTE_KEY] = {
        **decision.as_metadata(),
        "answered_by": answered_by if isinstance(answered_by, str) and answered_by else model,
    }
    return response


def _in_force(
    decision: RouteDecision, enclosing: RouteDecision | None, model: str
) -> AbstractContextManager[None]:
    """The route to put in force while the tier ``model`` is called: ``decision``, or, for a
    router nested as a tier of another (``enclosing``, the route in force when it was called),
    that outer route with this call's model: the call is charged on the model that answers, and
    what routing saved against the outermost premium model, the one the answer's
    ``tokenbudget_route`` names."""
    return using_route(enclosing or decision, model=model)


class RoutedLLM(FunctionCallingLLM):
    """An LLM that sends each call to the cheapest adequate of its tier LLMs.

    Args:
        tiers: Tier name -> LLM, ordered cheapest -> premium (also the first positional argument).
        models: Tier name -> model name to price and count with, for LLMs that do not name theirs.
        fallbacks: Tier name -> LLMs to try, in order, on retryable provider errors.
        classifier: A :class:`~tokenbudget_core.complexity.ComplexityClassifier` (default: heuristic).
        ledger: Budget awareness: step down tiers as the payer's budget fills, refuse at its limit.
            The payer is the one the tiers' ``BudgetCallbackHandler(feature=, user=)`` charges
            (an ``attribute()`` block's ids win), as ``CachedLLM`` finds it. A call the budget
            refuses on the tier it was stepped down to is looked up in the caches of the tiers it
            stepped over (the classifier's first), cache-only: a tier that is a ``CachedLLM``
            answers from its cache, a miss is refused, never sent (another tier is not asked).
        registry: Model facts and pricing names (default: the core's registry).
        max_output_tokens: Output tokens routing assumes when the call sets no ``max_tokens``
            and a tier's LLM sets none itself (a tier LLM's own ``max_tokens`` is what it asks for).

    Per call, ``force_tier="large"`` skips the classifier (it is not passed on to the tier LLM).
    With function-calling tiers, ``chat_with_tools`` (and agents) route too; the chosen tier
    formats the tools.

    Raises:
        InvalidInputError: Empty tiers, an unknown option (``ledgr=``), a tier that is not an
            LLM or names no model; at call time
            an unknown ``force_tier`` or a ``max_tokens`` that is not a positive integer.
        UnknownModelError: A tier's model is not in the registry.
        ContextOverflowError: At call time, when the request fits no tier.
        BudgetExceededError: At call time, when the payer's budget is used up (nothing is sent).

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> llm = RoutedLLM(
        ...     tiers={"small": MockLLM(), "large": MockLLM()},
        ...     models={"small": "gpt-4o-mini", "large": "gpt-4o"},
        ... )
        >>> response = llm.complete("What is the capital of France?")
        >>> response.additional_kwargs["tokenbudget_route"]["model"]
        'gpt-4o-mini'
    """

    tokenbudget_eventless: ClassVar[bool] = True
    """It makes no callback event of its own: the tier LLM that answers makes (and charges) the call
    (the budget handlers on this LLM's callback manager must be on the tiers' too, as
    ``BudgetCallbackHandler.install`` of this LLM puts them; one that is not is warned about:
    ``warn_unreached``)."""
    tiers: dict[str, Any] = Field(description="Tier name -> LLM, ordered cheapest -> premium.")
    models: dict[str, str] | None = Field(default=None, description="Tier name -> model name to price with.")
    fallbacks: dict[str, list[Any]] | None = Field(
        default=None, description="Tier name -> LLMs to try, in order, on retryable provider errors."
    )
    classifier: Any = Field(default=None, description="The complexity classifier (default: heuristic).")
    ledger: Any = Field(default=None, description="Ledger for budget-aware routing.")
    registry: Any = Field(default=None, description="Model registry (default: the core's).")
    max_output_tokens: int = Field(default=1024, description="Output tokens routing assumes by default.")

    _router: TierRouter = PrivateAttr()
    _llms: dict[str, LLM] = PrivateAttr()  # model name -> its first LLM (tiers, then fallbacks)
    _every: list[LLM] = PrivateAttr()  # every LLM a call may go to, once each (by identity)
    _warned: Warned = PrivateAttr(default_factory=set)  # handlers warned about (warn_unreached)

    def __init__(self, tiers: Mapping[str, Any] | None = None, /, *extra: object, **data: Any) -> None:
        tiers_argument("RoutedLLM", tiers, extra, data)
        refuse_unknown("RoutedLLM", data, list(type(self).model_fields))  # pydantic would ignore a typo
        if not isinstance(data.get("tiers"), Mapping) or not data["tiers"]:
            raise InvalidInputError(
                "tiers",
                "must be a non-empty mapping of tier name -> LLM, cheapest first",
                value=data.get("tiers"),
                fix="RoutedLLM(tiers={'small': OpenAI(model='gpt-4o-mini'), 'large': ...})",
            )
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise host_error(e) from e
        models = self.models or {}
        for tier in models:
            if tier not in self.tiers:
                raise InvalidInputError(
                    f"models[{tier!r}]", "is not a tier", fix=f"one of {list(self.tiers)}"
                )
        self._llms = {}
        names: dict[str, str] = {}
        for tier, llm in self.tiers.items():
            names[tier] = _model_name(llm, field=f"tiers[{tier!r}]", explicit=models.get(tier))
            self._llms.setdefault(names[tier], llm)
        fallback_names: dict[str, list[str]] = {}
        for tier, llms in (self.fallbacks or {}).items():
            fallback_names[tier] = []
            for i, llm in enumerate(llms):
                name = _model_name(llm, field=f"fallbacks[{tier!r}][{i}]", explicit=None)
                fallback_names[tier].append(name)
                self._llms.setdefault(name, llm)
        every = [*self.tiers.values(), *(llm for llms in (self.fallbacks or {}).values() for llm in llms)]
        self._every = list({id(llm): llm for llm in every}.values())
        self._router = TierRouter(
            names,
            classifier=self.classifier,
            ledger=self.ledger,
            fallbacks=fallback_names,
            registry=self.registry,
            max_output_tokens=self.max_output_tokens,
        )

    @classmethod
    def class_name(cls) -> str:
        return "RoutedLLM"

    @property
    def router(self) -> TierRouter:
        """The core router deciding the routes."""
        return self._router

    @property
    def metadata(self) -> LLMMetadata:
        """The largest tier window (the router escalates to it); chat, tools if all tiers have them."""
        metas = [llm.metadata for llm in self.tiers.values()]
        return LLMMetadata(
            context_window=max(m.context_window for m in metas),
            num_output=max(m.num_output for m in metas),
            is_chat_model=all(m.is_chat_model for m in metas),
            is_function_calling_model=self._calls_tools(),
            model_name="|".join(self._router.tiers.values()),
        )

    def _calls_tools(self) -> bool:
        """Every LLM a call may go to (tiers and fallbacks) is a function-calling LLM."""
        return all(
            isinstance(llm, FunctionCallingLLM) and llm.metadata.is_function_calling_model
            for llm in self._every
        )

    def _pick(self, decision: RouteDecision) -> Callable[[str], LLM]:
        """The LLM of each attempt of the decision's chain, in turn: told apart by place, not by
        model name (a fallback may be its tier's model on another endpoint)."""
        return self._router.picker(decision, self.tiers, self.fallbacks)

    def _cache_only(
        self, decision: RouteDecision, refused: BudgetExceededError | None
    ) -> AbstractContextManager[None]:
        """With a refusal (an alternate tier :meth:`TierRouter.answer
        <tokenbudget_core.routing.TierRouter.answer>` asks), the tier's ``CachedLLM`` answers
        from its cache or raises ``refused`` on a miss, never calling its LLM
        (:func:`~llamaindex_tokenbudget.cached_llm.cache_only`); a tier that is no ``CachedLLM``
        is not asked (``refused`` is raised: nothing could stop its call being sent)."""
        if refused is None:
            return contextlib.nullcontext()
        if not isinstance(self.tiers[decision.tier], CachedLLM):
            raise refused
        return cache_only(fresh_refusal(refused))

    # -- translation ------------------------------------------------------------------------------

    def _payer(self) -> tuple[str | None, str | None]:
        """The ``feature`` / ``user`` defaults of the payer a call made now is charged to, for the
        router to read that payer's budgets (the core puts an enclosing ``attribute()`` block's
        ids over them, as the handler charging the call does).

        In LlamaIndex the payer is named on a ``BudgetCallbackHandler`` (``feature=`` /
        ``user=``), not on the call: the one on this LLM's callback manager (which
        must reach the tiers: :func:`warn_unreached`), else on the tiers' and fallbacks' own,
        nearest first; a
        handler on the router's ledger (whose budgets are read) before one of other books;
        without one, a ``CostEventHandler`` naming a payer on LlamaIndex's dispatchers. The
        rule is ``CachedLLM``'s (:meth:`~llamaindex_tokenbudget.cached_llm.CachedLLM._payer`),
        so a cached and routed call looks up, routes and is charged for one payer.
        ``(None, None)``: no handler names one (the ``attribute()`` block alone, if any). A
        learned classifier's own calls are charged to this payer too (overhead ``router``)."""
        named: list[BudgetCallbackHandler | CostEventHandler] = [*budget_handlers(self)]
        if not named:  # (the dispatchers are looked at only then, as CachedLLM does)
            named = [*cost_handlers()]
        if self.ledger is not None:  # the books routing reads: the payer charged on them first
            named.sort(key=lambda h: not h.ledger.shares_books_with(self.ledger))  # (stable)
        return (named[0].feature, named[0].user) if named else (None, None)

    def _request(
        self, what: str | Sequence[ChatMessage], kwargs: dict[str, Any], tools: Sequence[Any] = ()
    ) -> dict[str, Any]:
        force = kwargs.pop("force_tier", None)
        out = kwargs.get("max_tokens")  # sent to the tier LLM as given: checked before routing
        if out is not None:
            output_cap("max_tokens", out)
        messages: str | list[Message] = what if isinstance(what, str) else to_core_request(what)
        # a tier LLM that sets its own max_tokens is asked for that (each lowered to its limit)
        own = {tier: cap for tier, llm in self.tiers.items() if (cap := _own_output_cap(llm)) is not None}
        feature, user = self._payer()
        return {
            "feature": feature,  # the budgets stepping the route down (or refusing it) are its
            "user": user,
            "messages": messages,  # a document block is estimated, not refused
            "force_tier": force,
            "max_output_tokens": out,
            "default_output_tokens": own if out is None and own else None,
            "tools": [_tool_definition(t, i) for i, t in enumerate(tools)] or None,
        }

    def _call(
        self,
        what: str | Sequence[ChatMessage],
        kwargs: dict[str, Any],
        fn: Callable[[LLM], R],
        tools: Sequence[Any] = (),
    ) -> R:
        warn_unreached(self, self._warned)  # the tiers' events charge the call: do they see its handlers?
        enclosing = current_route()

        def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, R]:
            pick = self._pick(decision)

            def attempt(m: str) -> tuple[str, R]:
                with _in_force(decision, enclosing, m):
                    return m, fn(pick(m))

            with self._cache_only(decision, refused):  # an alternate: its cache, or refused
                return self._router.call(decision, attempt)

        decision, (model, response) = self._router.answer(
            self._router.route(**self._request(what, kwargs, tools)), run
        )
        return _annotated(response, decision, model)

    async def _acall(
        self,
        what: str | Sequence[ChatMessage],
        kwargs: dict[str, Any],
        fn: Callable[[LLM], Awaitable[R]],
        tools: Sequence[Any] = (),
    ) -> R:
        warn_unreached(self, self._warned)  # the tiers' events charge the call: do they see its handlers?
        enclosing = current_route()

        async def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, R]:
            pick = self._pick(decision)

            async def attempt(m: str) -> tuple[str, R]:
                with _in_force(decision, enclosing, m):
                    return m, await fn(pick(m))

            with self._cache_only(decision, refused):
                return await self._router.acall(decision, attempt)

        decision, (model, response) = await self._router.aanswer(
            await self._router.aroute(**self._request(what, kwargs, tools)), run
        )
        return _annotated(response, decision, model)

    def _stream(
        self,
        what: str | Sequence[ChatMessage],
        kwargs: dict[str, Any],
        fn: Callable[[LLM], Generator[R, None, None]],
        tools: Sequence[Any] = (),
    ) -> Generator[R, None, None]:
        warn_unreached(self, self._warned)  # the tiers' events charge the call: do they see its handlers?
        enclosing = current_route()

        def run(
            decision: RouteDecision, refused: BudgetExceededError | None
        ) -> tuple[str, R | None, Generator[R, None, None]]:
            pick = self._pick(decision)

            def start(m: str) -> tuple[str, R | None, Generator[R, None, None]]:
                # The route is in force for the call and for every read of its stream (a lazy
                # stream makes its provider call, and its budget event starts or ends, in a
                # read), never while the consumer holds a chunk.
                with _in_force(decision, enclosing, m):
                    gen = fn(pick(m))
                    try:
                        return m, next(gen, None), gen
                    except BaseException:
                        gen.close()
                        raise

            with self._cache_only(decision, refused):
                return self._router.call(decision, start)

        decision, (model, head, rest) = self._router.answer(
            self._router.route(**self._request(what, kwargs, tools)), run
        )

        def chunks() -> Generator[R, None, None]:
            try:
                if head is not None:
                    yield _annotated(head, decision, model)
                while True:
                    try:
                        with _in_force(decision, enclosing, model):
                            chunk = next(rest)
                    except StopIteration:
                        return
                    yield _annotated(chunk, decision, model)
            finally:
                with _in_force(decision, enclosing, model):
                    rest.close()

        return chunks()

    async def _astream(
        self,
        what: str | Sequence[ChatMessage],
        kwargs: dict[str, Any],
        fn: Callable[[LLM], Awaitable[AsyncGenerator[R, None]]],
        tools: Sequence[Any] = (),
    ) -> AsyncGenerator[R, None]:
        warn_unreached(self, self._warned)  # the tiers' events charge the call: do they see its handlers?
        enclosing = current_route()

        async def run(
            decision: RouteDecision, refused: BudgetExceededError | None
        ) -> tuple[str, R | None, AsyncGenerator[R, None]]:
            pick = self._pick(decision)

            async def start(m: str) -> tuple[str, R | None, AsyncGenerator[R, None]]:
                # As in _stream: a CustomLLM's async stream makes its provider call (stream_chat,
                # whose events the budget handlers charge) only when it is first read.
                with _in_force(decision, enclosing, m):
                    gen = await fn(pick(m))
                    try:
                        return m, await anext(gen, None), gen
                    except BaseException:
                        await gen.aclose()
                        raise

            with self._cache_only(decision, refused):
                return await self._router.acall(decision, start)

        decision, (model, head, rest) = await self._router.aanswer(
            await self._router.aroute(**self._request(what, kwargs, tools)), run
        )

        async def chunks() -> AsyncGenerator[R, None]:
            try:
                if head is not None:
                    yield _annotated(head, decision, model)
                while True:
                    try:
                        with _in_force(decision, enclosing, model):
                            chunk = await anext(rest)
                    except StopAsyncIteration:
                        return
                    yield _annotated(chunk, decision, model)
            finally:
                with _in_force(decision, enclosing, model):
                    await rest.aclose()

        return chunks()

    # -- the LLM interface: route, then the tier LLM's own method ----------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Route the conversation, then the chosen tier's ``chat``.

        Raises:
            BudgetExceededError: The payer's budget is used up: nothing was sent.
            ContextOverflowError: The conversation fits no tier.
            InvalidInputError: An unknown ``force_tier`` or unreadable messages.
        """
        check_messages(messages)
        return self._call(messages, kwargs, lambda llm: llm.chat(messages, **kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Route the prompt, then the chosen tier's ``complete``."""
        check_prompt(prompt)
        return self._call(prompt, kwargs, lambda llm: llm.complete(prompt, formatted=formatted, **kwargs))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Route, then stream the chosen tier's ``stream_chat``."""
        check_messages(messages)
        return self._stream(messages, kwargs, lambda llm: llm.stream_chat(messages, **kwargs))

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Route, then stream the chosen tier's ``stream_complete``."""
        check_prompt(prompt)
        return self._stream(
            prompt, kwargs, lambda llm: llm.stream_complete(prompt, formatted=formatted, **kwargs)
        )

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async twin of :meth:`chat`."""
        check_messages(messages)
        return await self._acall(messages, kwargs, lambda llm: llm.achat(messages, **kwargs))

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async twin of :meth:`complete`."""
        check_prompt(prompt)
        return await self._acall(
            prompt, kwargs, lambda llm: llm.acomplete(prompt, formatted=formatted, **kwargs)
        )

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async twin of :meth:`stream_chat`."""
        check_messages(messages)
        return await self._astream(messages, kwargs, lambda llm: llm.astream_chat(messages, **kwargs))

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async twin of :meth:`stream_complete`."""
        check_prompt(prompt)
        return await self._astream(
            prompt, kwargs, lambda llm: llm.astream_complete(prompt, formatted=formatted, **kwargs)
        )

    # -- tool calling: route, then the tier LLM's own *_with_tools (it formats the tools) ----------

    def _tool_llm(self, llm: LLM) -> FunctionCallingLLM:
        if not isinstance(llm, FunctionCallingLLM) or not self._calls_tools():
            raise InvalidInputError(
                "tiers",
                "every tier and fallback LLM must be a function-calling LLM to chat with tools",
                fix="use function-calling LLMs (OpenAI, Anthropic...) in every tier, or a ReActAgent",
            )
        return llm

    def _tool_turn(
        self,
        method: str,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None,
        chat_history: Sequence[Any] | None,
        **options: Any,
    ) -> tuple[list[ChatMessage], Callable[[LLM], Any]]:
        """The conversation a chat with tools sends (to route on), and the tier call making it."""
        self._tool_llm(next(iter(self._llms.values())))
        if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence):
            raise InvalidInputError("tools", "must be a list of LlamaIndex tools", value=tools)
        if chat_history is not None and (
            isinstance(chat_history, str) or not isinstance(chat_history, Sequence)
        ):
            raise InvalidInputError("chat_history", "must be a list of ChatMessage", value=chat_history)
        messages = list(check_messages(chat_history or []))
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role="user", content=user_msg))
        elif user_msg is not None:
            messages.append(check_messages([user_msg])[0])
        options.pop("force_tier", None)  # the router's option, not the tier's

        def call(llm: LLM) -> Any:
            return getattr(self._tool_llm(llm), method)(tools, user_msg, chat_history, **options)

        return messages, call

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
        """Not used: each tier formats the tools for its own provider (see :meth:`chat_with_tools`).

        Raises:
            InvalidInputError: Always; the tier is not known before the request is routed.
        """
        raise InvalidInputError(
            "tools",
            "a RoutedLLM formats tools for the tier it routes to, not in advance",
            fix="call chat_with_tools / achat_with_tools / stream_chat_with_tools / astream_chat_with_tools",
        )

    def chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Route the conversation (its tools counted), then the chosen tier's ``chat_with_tools``.

        Raises:
            InvalidInputError: A tier or fallback does not call tools, or a bad argument.
            BudgetExceededError: The payer's budget is used up: nothing was sent.
            ContextOverflowError: The conversation fits no tier.
        """
        messages, fn = self._tool_turn(
            "chat_with_tools", tools, user_msg, chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )  # fmt: skip
        response: ChatResponse = self._call(messages, kwargs, fn, tools)
        return response

    async def achat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Async twin of :meth:`chat_with_tools`."""
        messages, fn = self._tool_turn(
            "achat_with_tools", tools, user_msg, chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )  # fmt: skip
        response: ChatResponse = await self._acall(messages, kwargs, fn, tools)
        return response

    def stream_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseGen:
        """Route, then stream the chosen tier's ``stream_chat_with_tools``."""
        messages, fn = self._tool_turn(
            "stream_chat_with_tools", tools, user_msg, chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )  # fmt: skip
        return self._stream(messages, kwargs, fn, tools)

    async def astream_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseAsyncGen:
        """Async twin of :meth:`stream_chat_with_tools`."""
        messages, fn = self._tool_turn(
            "astream_chat_with_tools", tools, user_msg, chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )  # fmt: skip
        return await self._astream(messages, kwargs, fn, tools)

    def _answerer(self, model: str) -> LLM | None:
        """The LLM of this router that answers as ``model``: its tier (or fallback) of that name,
        else the nested ``RoutedLLM`` tier one of whose LLMs does."""
        found = self._llms.get(model)
        if found is None:
            nested = (llm for llm in self._llms.values() if isinstance(llm, RoutedLLM))
            found = next((llm for llm in nested if llm._answerer(model) is not None), None)
        return found

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of an answer, read by the tier LLM that gave it (else the first tier)."""
        route = response.additional_kwargs.get(ROUTE_KEY) if isinstance(response, ChatResponse) else None
        answered_by = route.get("answered_by") if isinstance(route, Mapping) else None
        llm = self._answerer(answered_by) if isinstance(answered_by, str) else None
        return self._tool_llm(llm or next(iter(self._llms.values()))).get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


def _tool_definition(tool: Any, i: int) -> dict[str, Any]:
    """A LlamaIndex tool as the OpenAI-style definition the router counts (a dict as it is)."""
    if isinstance(tool, Mapping):
        return dict(tool)
    metadata = getattr(tool, "metadata", None)
    to_openai = getattr(metadata, "to_openai_tool", None)
    if not callable(to_openai):
        raise InvalidInputError(f"tools[{i}]", "must be a LlamaIndex tool (with metadata)", value=tool)
    definition = to_openai(skip_length_check=True)
    return dict(definition)
