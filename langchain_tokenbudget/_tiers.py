"""Plumbing the LangChain routing adapters share: chat models per tier, around the core's ``TierRouter``.

Nothing here decides a route: :class:`Tiers` reads each chat model's name (for the core's pricing
and context windows), builds the core :class:`~tokenbudget_core.routing.TierRouter` from those
names, translates a LangChain request (messages, tools, config) into a ``route()`` call, maps the
models of the decision and its fallback chain back to chat models, and writes the decision into
``response_metadata``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from tokenbudget_core.attribution import charged_attribution
from tokenbudget_core.complexity import ComplexityClassifier
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, fresh_refusal
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.routing import RouteDecision, TierRouter

from ._bridge import core_tools
from .budget_callback import MAX_OUTPUT_KEYS, ROUTE_KEY, first, payer_from, tenant_of
from .llm_cache import scoped_runs
from .messages import to_core_request

__all__ = ["ROUTE_KEY", "Tiers", "annotate", "check_fallback_chains", "model_name_of", "own_output_cap"]

_NAME_FALLBACK = (
    "a fallback is priced by the name its chat model gives: use one that names its model "
    "(e.g. ChatOpenAI(model='gpt-4.1')), or give its class a model_name field "
    "(class Named(MyChatModel): model_name: str = 'gpt-4.1'); models= names tiers only"
)


def own_output_cap(chat: object) -> int | None:
    """The output cap a chat model sets itself (``max_tokens`` / ``max_completion_tokens`` /
    ``max_output_tokens``), read as a ``BudgetMiddleware`` reads it for its reservation; ``None``
    when it sets none."""
    return first(int, MAX_OUTPUT_KEYS, {k: getattr(chat, k, None) for k in MAX_OUTPUT_KEYS}) or None


def check_fallback_chains(fallbacks: object) -> None:
    """Refuse a ``fallbacks`` entry that is not a list of chat models (one chat model given bare
    reads to pydantic as a sequence of its fields), naming the tier and the fix.

    Raises:
        InvalidInputError: ``fallbacks[tier]`` is a chat model, a string or not a sequence.
    """
    if not isinstance(fallbacks, Mapping):
        return
    for tier, chats in fallbacks.items():
        if isinstance(chats, (BaseChatModel, str, bytes)) or not isinstance(chats, Sequence):
            raise InvalidInputError(
                f"fallbacks[{tier!r}]",
                "must be a list of chat models tried in order",
                value=chats,
                fix=f"wrap it in a list: fallbacks={{{tier!r}: [ChatOpenAI(model='gpt-4.1')]}}",
            )


def model_name_of(
    model: object,
    *,
    field: str,
    explicit: str | None = None,
    fix: str = "name the model to price it with: models={'<tier>': 'gpt-4o-mini', ...}",
) -> str:
    """The model name to price a chat model with: ``explicit``, else its ``model_name`` / ``model``.

    Raises:
        InvalidInputError: Not a chat model, or it does not name its model.
    """
    if not isinstance(model, BaseChatModel):
        raise InvalidInputError(
            field,
            f"must be a LangChain chat model (BaseChatModel), got {type(model).__name__}",
            fix="pass the chat model itself, e.g. ChatOpenAI(model='gpt-4o-mini'), not a binding",
        )
    if explicit is not None:
        return explicit
    attrs = {k: getattr(model, k, None) for k in ("model_name", "model")}
    name = first(str, ("model_name", "model"), attrs)
    if name is None:
        raise InvalidInputError(
            field,
            f"{type(model).__name__} does not name its model",
            fix=fix,
        )
    return name


class Tiers:
    """Chat models per tier (cheapest first) and the core router over their model names.

    Args:
        tiers: Tier name -> chat model, ordered cheapest -> premium.
        models: Tier name -> model name to price and count with, for chat models that do not name
            theirs (or name it differently from the registry). Tiers only: a fallback is priced by
            the name its chat model gives (``model_name`` / ``model``).
        fallbacks: Tier name -> chat models to try, in order, when the tier's model fails with a
            retryable provider error.
        max_output_tokens: Output tokens routing assumes for a tier whose chat model sets no
            ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``) of its own and a
            call that sets none.
        feature: Default feature for budget-aware routing, when the call's context, metadata,
            configurable and tags name none (the precedence of ``BudgetMiddleware(feature=)``).
        user: Default user, likewise.
        router_options: The remaining :class:`~tokenbudget_core.routing.TierRouter` options.

    Raises:
        InvalidInputError: Empty tiers, a value that is not a chat model or names no model,
            ``models`` or ``fallbacks`` that is not a mapping by tier or names a tier that does not
            exist.
        UnknownModelError: A tier's model is not in the registry.
    """

    def __init__(
        self,
        tiers: object,
        *,
        models: Mapping[str, str] | None = None,
        fallbacks: Mapping[str, Sequence[BaseChatModel]] | None = None,
        classifier: ComplexityClassifier | None = None,
        ledger: Ledger | None = None,
        registry: ModelRegistry | None = None,
        max_output_tokens: int = 1024,
        feature: str | None = None,
        user: str | None = None,
    ) -> None:
        for option, value in (("feature", feature), ("user", user)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInputError(option, "must be a non-empty string", value=value)
        self.feature, self.user = feature, user
        if not isinstance(tiers, Mapping) or not tiers:
            raise InvalidInputError(
                "tiers",
                "must be a non-empty mapping of tier name -> chat model, cheapest first",
                value=tiers,
                fix="e.g. {'small': ChatOpenAI(model='gpt-4o-mini'), 'large': ChatOpenAI(model='gpt-4o')}",
            )
        shaped: tuple[tuple[str, object, str], ...] = (
            ("models", models, "models={'small': 'gpt-4o-mini', 'large': 'gpt-4o'}"),
            ("fallbacks", fallbacks, "fallbacks={'large': [ChatOpenAI(model='gpt-4.1')]}"),
        )
        for option, given, example in shaped:
            if given is not None and not isinstance(given, Mapping):
                raise InvalidInputError(
                    option,
                    f"must be a mapping by tier name, got {type(given).__name__}",
                    value=given,
                    fix=f"e.g. {example}",
                )
        models = dict(models or {})
        for tier, explicit in models.items():
            if tier not in tiers:
                raise InvalidInputError(f"models[{tier!r}]", "is not a tier", fix=f"one of {list(tiers)}")
            if not isinstance(explicit, str) or not explicit.strip():
                raise InvalidInputError(
                    f"models[{tier!r}]",
                    "must be a model name (a non-empty string)",
                    value=explicit,
                    fix="e.g. models={'small': 'gpt-4o-mini', 'large': 'gpt-4o'}",
                )
        self.tier_chat: dict[str, BaseChatModel] = {str(t): chat for t, chat in tiers.items()}
        self.fallback_chats: dict[str, list[BaseChatModel]] = {}
        names: dict[str, str] = {}
        for tier, chat in tiers.items():
            names[str(tier)] = model_name_of(chat, field=f"tiers[{tier!r}]", explicit=models.get(tier))
        fallback_names: dict[str, list[str]] = {}
        check_fallback_chains(fallbacks)
        for tier, chats in (fallbacks or {}).items():
            fallback_names[tier] = []
            self.fallback_chats[tier] = list(chats)
            for i, chat in enumerate(chats):
                name = model_name_of(chat, field=f"fallbacks[{tier!r}][{i}]", fix=_NAME_FALLBACK)
                fallback_names[tier].append(name)
        self.chats: dict[int, tuple[str, BaseChatModel]] = {}
        """Every chat model a call may go to (tiers, then fallbacks), once each, by ``id()``, with
        its model name: a chat model is told apart by identity, not by name (a fallback may be the
        tier's model on another endpoint)."""
        for tier, chat in self.tier_chat.items():
            self.chats.setdefault(id(chat), (names[tier], chat))
        for tier, chats in self.fallback_chats.items():
            for name, chat in zip(fallback_names[tier], chats, strict=True):
                self.chats.setdefault(id(chat), (name, chat))
        self.router = TierRouter(
            names,
            classifier=classifier,
            ledger=ledger,
            fallbacks=fallback_names,
            registry=registry,
            max_output_tokens=max_output_tokens,
        )

    def picker(self, decision: RouteDecision) -> Callable[[str], BaseChatModel]:
        """The chat model of each attempt of the decision's chain, in turn (see
        :meth:`TierRouter.picker <tokenbudget_core.routing.TierRouter.picker>`)."""
        return self.router.picker(decision, self.tier_chat, self.fallback_chats)

    def cache_only(
        self, config: Mapping[str, Any], refused: BudgetExceededError | None
    ) -> AbstractContextManager[None]:
        """With a refusal (an alternate tier :meth:`TierRouter.answer
        <tokenbudget_core.routing.TierRouter.answer>` asks), every chat model run inside is
        answered from its model's ``TokenBudgetLLMCache`` under the call's payer or refused with
        ``refused`` before it is sent (:func:`~langchain_tokenbudget.llm_cache.scoped_runs`);
        without one, nothing changes."""
        if refused is None:
            return contextlib.nullcontext()
        meta: Mapping[str, Any] = config.get("metadata") or {}
        tags = config.get("tags") or ()
        payer = payer_from(None, meta, config.get("configurable"), tags=tags)
        who = charged_attribution(
            tenant=tenant_of(meta, tags),
            feature=payer["feature"] or self.feature,
            user=payer["user"] or self.user,
            conversation=payer["conversation"],
        )
        return scoped_runs(who, fresh_refusal(refused))

    def tier_of_model(self, model: object) -> str:
        """The tier whose model is ``model`` (a per-call ``model=`` override forces that tier).

        Raises:
            InvalidInputError: No tier serves that model.
        """
        for tier, name in self.router.tiers.items():
            if model == name:
                return tier
        raise InvalidInputError(
            "model",
            f"{model!r} is not the model of any tier",
            value=model,
            fix=f"one of {list(self.router.tiers.values())}, or force_tier= one of {list(self.router.tiers)}",
        )

    def output_cap(self, call_cap: int | None) -> dict[str, int] | None:
        """The per-tier default output to route with when the call names none (the core's
        ``default_output_tokens``): each tier's chat model's own cap, else the router's default;
        ``None`` (the router's default) when the call names a cap (then ``max_output_tokens``)
        or no tier sets one. Each is lowered to its model's output limit: a tier's own cap never
        makes another tier unable to answer.
        """
        if call_cap is not None:
            return None
        own = {tier: own_output_cap(self.tier_chat[tier]) for tier in self.router.tiers}
        if all(cap is None for cap in own.values()):
            return None
        default = self.router.max_output_tokens
        return {tier: default if cap is None else cap for tier, cap in own.items()}

    def request(
        self,
        messages: Sequence[BaseMessage],
        config: Mapping[str, Any],
        kwargs: dict[str, Any],
        *,
        tools: Sequence[Any] | None = None,
        max_output_tokens: int | None = None,
        context: object = None,
    ) -> dict[str, Any]:
        """The ``route()`` arguments of a LangChain call; pops ``force_tier`` / ``model`` from ``kwargs``.

        ``max_output_tokens`` is the call's own cap, else :meth:`output_cap` reads the tier models'.
        ``force_tier`` comes from the call (``force_tier=``, or ``model=`` naming a tier's model),
        else ``config["configurable"]["force_tier"]``; the payer from ``context``, the config's
        metadata, configurable and tags, else the ``feature=`` / ``user=`` given here.

        Raises:
            InvalidInputError: Items that are not messages, tools the core cannot read, an unknown
                ``model=`` (content the core cannot represent is estimated: ``to_core_request``).
        """
        configurable: Mapping[str, Any] = config.get("configurable") or {}
        force = kwargs.pop("force_tier", None)
        if "model" in kwargs:
            model_tier = self.tier_of_model(kwargs.pop("model"))
            force = force if force is not None else model_tier
        if force is None:
            force = configurable.get("force_tier")
        payer = payer_from(context, config.get("metadata"), configurable, tags=config.get("tags") or ())
        return {
            "messages": to_core_request(messages),  # a PDF block is estimated, not refused
            "force_tier": force,
            "max_output_tokens": max_output_tokens,
            "default_output_tokens": self.output_cap(max_output_tokens),
            "tools": core_tools(tools),
            "feature": payer["feature"] or self.feature,
            "user": payer["user"] or self.user,
        }

    def route(self, messages: Sequence[BaseMessage], config: Mapping[str, Any], kwargs: dict[str, Any],
              **options: Any) -> RouteDecision:  # fmt: skip
        """Decide with the core router (see :meth:`request` for what is read from the call)."""
        return self.router.route(**self.request(messages, config, kwargs, **options))

    async def aroute(self, messages: Sequence[BaseMessage], config: Mapping[str, Any],
                     kwargs: dict[str, Any], **options: Any) -> RouteDecision:  # fmt: skip
        """Async twin of :meth:`route`."""
        return await self.router.aroute(**self.request(messages, config, kwargs, **options))


def annotate(message: Any, decision: RouteDecision, model: str) -> Any:
    """A copy of ``message`` with the decision (and the model that answered) in ``response_metadata``."""
    meta = getattr(message, "response_metadata", None)
    if not isinstance(meta, dict):
        return message
    route = {**decision.as_metadata(), "answered_by": model}
    return message.model_copy(update={"response_metadata": {**meta, ROUTE_KEY: route}})
