"""Route each model call of a ``create_agent`` agent to the cheapest adequate tier: RoutingMiddleware.

Before every model call the request the model would receive (system message, messages, tools,
the structured-output schema of ``response_format``, ``max_tokens``) is translated and the
core :class:`~tokenbudget_core.routing.TierRouter` decides the tier: complexity, budget and
context window. The request then goes to that tier's chat model
(``request.override(model=...)``; the agent binds its tools to it), down the tier's fallback
chain on retryable provider errors. The decision shows in the reply's
``response_metadata["tokenbudget_route"]``.

Put it before a :class:`~langchain_tokenbudget.budget_middleware.BudgetMiddleware` in
``middleware=[...]`` (outer): the budget middleware then reserves and charges the model the
router chose, and (the call being made under :func:`~tokenbudget_core.routing.using_route`)
records what routing saved against the premium tier. The route is that call's alone: middleware
between the two that calls other models of its own (a
:class:`~langchain_tokenbudget.context_middleware.ContextWindowMiddleware`'s summaries) makes
those calls with no route (:func:`~tokenbudget_core.routing.without_route`), and a budget adapter
takes a call for the routed one only when it goes to the route's model
(:func:`~tokenbudget_core.routing.routed_call`), so they are charged on their own model.

Requests of the package's own that pass through it are not routed
(:func:`~tokenbudget_core.routing.own_call`: made under ``without_route()`` or inside
``overhead()``): a :class:`~langchain_tokenbudget.context_middleware.ContextWindowMiddleware`
outside it sends its summaries to the ``summariser`` it was given, and they are not routed calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Never

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from tokenbudget_core.complexity import ComplexityClassifier
from tokenbudget_core.counting import is_function_tool
from tokenbudget_core.errors import BudgetExceededError, option_names, refuse_positional, refuse_unknown
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.routing import RouteDecision, TierRouter, own_call, using_route

from . import _need_agents
from ._bridge import sent_tools
from ._tiers import Tiers, annotate
from .budget_callback import MAX_OUTPUT_KEYS, first

try:
    from langchain.agents.middleware.types import (
        AgentMiddleware,
        AgentState,
        ExtendedModelResponse,
        ModelRequest,
        ModelResponse,
    )
    from langgraph.config import get_config
except ImportError as e:  # langchain (agents) absent or too old: named, with its pip command
    _need_agents(e)

__all__ = ["RoutingMiddleware"]

Reply = ModelResponse[Any] | ExtendedModelResponse[Any] | AIMessage


def _config() -> Mapping[str, Any]:
    try:
        return get_config()
    except RuntimeError:  # called outside a graph run
        return {}


def _own_names(chat: object) -> tuple[str, ...]:
    """The names a tier's chat model goes by itself (an Azure deployment, a proxy alias), which
    its calls report instead of the pricing name the router was given with ``models=``."""
    names = (getattr(chat, k, None) for k in ("model_name", "model", "deployment_name"))
    return tuple(n for n in names if isinstance(n, str) and n)


def _annotated(reply: Any, decision: RouteDecision, model: str) -> Any:
    if isinstance(reply, AIMessage):
        return annotate(reply, decision, model)
    if isinstance(reply, ExtendedModelResponse):
        return dataclasses.replace(reply, model_response=_annotated(reply.model_response, decision, model))
    if isinstance(reply, ModelResponse):
        result = [annotate(m, decision, model) if isinstance(m, AIMessage) else m for m in reply.result]
        return dataclasses.replace(reply, result=result)
    return reply


class RoutingMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Send each model call of an agent to the cheapest adequate tier's chat model.

    The agent's own model is not called: every request of the agent goes to a tier model (the
    package's own calls passing through, such as an outer ``ContextWindowMiddleware``'s summaries,
    go to the model they were made for, unrouted). ``force_tier``
    comes from ``runtime.context`` (attribute or key ``force_tier``) or
    ``config["configurable"]["force_tier"]``; the payer for budget-aware routing from the
    context, the run's metadata, configurable and tags, else the ``feature=`` / ``user=``
    defaults given here, as for :class:`BudgetMiddleware` (a middleware cannot read another's
    options: pass a ``BudgetMiddleware``'s defaults to both).

    Args:
        tiers: Tier name -> chat model, ordered cheapest -> premium.
        models: Tier name -> model name to price and count with, for chat models that do not
            name theirs. Tiers only: a fallback is priced by the name its own chat model gives.
        fallbacks: Tier name -> chat models to try, in order, on retryable provider errors.
        classifier: A :class:`~tokenbudget_core.complexity.ComplexityClassifier` (default: heuristic).
        ledger: Budget awareness: step down tiers as the payer's budget fills, refuse at its limit.
        registry: Model facts and pricing names (default: the core's registry).
        max_output_tokens: Output tokens routing assumes for a tier whose chat model sets no
            ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``) of its own, when the
            request sets none; the core takes one cap for all tiers, so the largest a tier will be
            asked for.
        feature: Default feature for budget-aware routing (when the context, metadata,
            configurable and tags name none): give the same ``feature=`` / ``user=`` as the
            ``BudgetMiddleware`` that charges the calls, or the router decides for another payer
            (one with no budget used) than the one charged.
        user: Default user, likewise.

    Raises:
        InvalidInputError: Empty tiers, a tier that is not a chat model or names no model, a
            ``models=`` / ``fallbacks=`` that is not a mapping by tier (named), a ``models=``
            value that is not a model name (named ``models['<tier>']``), a misspelt
            option (named, with the closest one) or one passed by position (named, with the
            keyword to pass it by); at call time an unknown ``force_tier``.
        UnknownModelError: A tier's model is not in the registry.
        ContextOverflowError: At call time, when the request fits no tier.
        BudgetExceededError: At call time, when the payer's budget is used up (nothing is sent).

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> small = GenericFakeChatModel(messages=iter(["Paris."]))
        >>> large = GenericFakeChatModel(messages=iter(["A long essay..."]))
        >>> routing = RoutingMiddleware(
        ...     {"small": small, "large": large}, models={"small": "gpt-4o-mini", "large": "gpt-4o"}
        ... )
        >>> agent = create_agent(small, middleware=[routing])
        >>> reply = agent.invoke({"messages": [("user", "Capital of France?")]})["messages"][-1]
        >>> reply.content, reply.response_metadata["tokenbudget_route"]["model"]
        ('Paris.', 'gpt-4o-mini')
    """

    def __init__(
        self,
        tiers: Mapping[str, BaseChatModel],
        *positional: Never,  # (refused: a type checker flags them, the constructor names them)
        models: Mapping[str, str] | None = None,
        fallbacks: Mapping[str, Sequence[BaseChatModel]] | None = None,
        classifier: ComplexityClassifier | None = None,
        ledger: Ledger | None = None,
        registry: ModelRegistry | None = None,
        max_output_tokens: int = 1024,
        feature: str | None = None,
        user: str | None = None,
        **unknown: Any,
    ) -> None:
        options = option_names(RoutingMiddleware.__init__)
        refuse_positional("RoutingMiddleware", positional, options[1:], after="tiers")
        if unknown:  # a misspelt option (fallback=...): named, with the closest one
            refuse_unknown("RoutingMiddleware", unknown, options)
        super().__init__()
        self._tiers = Tiers(
            tiers,
            models=models,
            fallbacks=fallbacks,
            classifier=classifier,
            ledger=ledger,
            registry=registry,
            max_output_tokens=max_output_tokens,
            feature=feature,
            user=user,
        )

    @property
    def router(self) -> TierRouter:
        """The core router deciding the routes."""
        return self._tiers.router

    def _plan(self, request: ModelRequest[Any]) -> tuple[list[BaseMessage], Mapping[str, Any], dict[str, Any],
                                                          dict[str, Any]]:  # fmt: skip
        """The messages, config, call kwargs (``force_tier``) and route options of a request."""
        context = getattr(request.runtime, "context", None)
        force = (
            context.get("force_tier")
            if isinstance(context, Mapping)
            else getattr(context, "force_tier", None)
        )
        system = [request.system_message] if request.system_message is not None else []
        tools = [t for t in sent_tools(request) if not isinstance(t, dict) or is_function_tool(t)]
        options = {
            "tools": tools or None,
            "max_output_tokens": first(int, MAX_OUTPUT_KEYS, request.model_settings),
            "context": context,
        }
        kwargs = {"force_tier": force} if force is not None else {}
        return [*system, *request.messages], _config(), kwargs, options

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Reply],
    ) -> Reply:
        """Route the request, then call the chosen tier's model (fallbacks on retryable errors).

        Raises:
            BudgetExceededError: The payer's budget is used up: nothing was sent.
            ContextOverflowError: The request fits no tier.
        """
        if own_call():  # a summary (or other own call) made for its model on purpose: sent as it is
            return handler(request)
        messages, config, kwargs, options = self._plan(request)

        def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Reply]:
            pick = self._tiers.picker(decision)

            def attempt(model: str) -> tuple[str, Reply]:
                chat = pick(model)
                with using_route(decision, model=model, names=_own_names(chat)):
                    return model, handler(request.override(model=chat))

            with self._tiers.cache_only(config, refused):  # an alternate: its cache, or refused
                return self._tiers.router.call(decision, attempt)

        decision, (model, reply) = self._tiers.router.answer(
            self._tiers.route(messages, config, kwargs, **options), run
        )
        return _annotated(reply, decision, model)  # type: ignore[no-any-return]

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[Reply]],
    ) -> Reply:
        """Async twin of :meth:`wrap_model_call`."""
        if own_call():
            return await handler(request)
        messages, config, kwargs, options = self._plan(request)

        async def run(decision: RouteDecision, refused: BudgetExceededError | None) -> tuple[str, Reply]:
            pick = self._tiers.picker(decision)

            async def attempt(model: str) -> tuple[str, Reply]:
                chat = pick(model)
                with using_route(decision, model=model, names=_own_names(chat)):
                    return model, await handler(request.override(model=chat))

            with self._tiers.cache_only(config, refused):
                return await self._tiers.router.acall(decision, attempt)

        decision, (model, reply) = await self._tiers.router.aanswer(
            await self._tiers.aroute(messages, config, kwargs, **options), run
        )
        return _annotated(reply, decision, model)  # type: ignore[no-any-return]
