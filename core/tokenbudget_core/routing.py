"""Tiered model routing: cheap models answer what they can, premium models only what needs them.

:class:`TierRouter` maps tier names (cheapest first) to models and decides, per request:

1. **the tier** a :class:`~tokenbudget_core.complexity.ComplexityClassifier` picks (or ``force_tier``);
2. **budget awareness**: with a :class:`~tokenbudget_core.ledger.Ledger`, as the payer's tightest
   daily budget passes each of ``budget_thresholds`` the request steps down one tier; at the
   limit (the ladder's ``hard_refusal``, optionally ``soft_refusal``) it is refused with
   :class:`~tokenbudget_core.errors.BudgetExceededError`;
3. **context awareness**: a model whose window cannot hold the input plus the output, or whose
   output limit is below the output cap the call asks for, is never chosen; the request escalates
   to the next tier that fits (or, when no pricier tier does, the cheaper ones), and
   :class:`~tokenbudget_core.errors.ContextOverflowError` when none fits. Fallbacks that cannot
   take the request either are left out of its decision (its reason says which and why).

Every :class:`RouteDecision` carries its reason and its counterfactual: what the same call would
cost on the premium tier, so reports can show what routing saved. :meth:`TierRouter.call` runs the
call down the tier's fallback chain on provider errors (rate limit, overload, timeout, 5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from .attribution import attribute, current_attribution, overhead
from .complexity import Classification, ComplexityClassifier, HeuristicClassifier, check_tiers
from .counting import SupportsTokenCount, TokenCounter, ToolLike, add_file_tokens, check_tools
from .errors import BudgetExceededError, ContextOverflowError, InvalidInputError, TokenBudgetError, check_flag
from .fallbacks import RETRYABLE_STATUS, acall_with_fallbacks, call_with_fallbacks, is_retryable
from .messages import Message, MessageLike, TextPart, to_messages
from .money import decimal_text
from .pricing import cost_or_none
from .registry import ModelInfo, ModelRegistry, check_registry
from .usage import Usage

if TYPE_CHECKING:
    from .ledger import BudgetState, Ledger

__all__ = [
    "RETRYABLE_STATUS",
    "RouteDecision",
    "TierRouter",
    "current_route",
    "output_cap",
    "routed_model",
    "tiers_argument",
    "is_retryable",
    "offline_counter",
    "own_call",
    "premium_model_of",
    "routed_call",
    "using_route",
    "without_route",
]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteDecision:
    """Where one request goes, why, and what it would have cost on the premium tier."""

    tier: str
    """The chosen tier."""
    model: str
    """The chosen tier's model."""
    reason: str
    """Everything that decided, e.g. ``classifier: score 0.72 (analyze, long prompt)``,
    ``forced``, ``escalated: 150,000 tokens exceed gpt-4o-mini's 128,000 window``,
    ``budget: user_daily_usd at 83% -> one tier down``."""
    rule: str | None
    """``forced``, the heuristic rules that fired (comma-separated), ``knn``, or ``None``."""
    score: float | None
    """The classifier's complexity score (``None`` when forced)."""
    classified_tier: str | None
    """The tier before budget and context adjustments (``None`` when forced)."""
    budget_step: str
    """The ledger ladder step (``normal``, ``cheaper_tier``...); ``normal`` without a ledger."""
    budget_shares: dict[str, float]
    """Used share of each of the payer's budgets today."""
    input_tokens: int
    """Input tokens of the request on the chosen model."""
    max_output_tokens: int = 0
    """Output tokens the estimate assumes: the cap the call asks for (a model whose output limit
    is below it is not chosen), else the router's default lowered to the model's output limit."""
    estimated_cost_usd: Decimal | None
    """Input plus maximum output priced on the chosen model (``None``: unpriced, never $0)."""
    premium_model: str
    """The premium tier's model."""
    premium_cost_usd: Decimal | None
    """Counterfactual: the same call (same input, same ``max_output_tokens``) on the premium model
    (when the premium model's window cannot hold the call or its output limit is below the cap, the
    chosen model's cost: routing saved nothing there)."""
    saved_usd: Decimal | None
    """``premium_cost_usd - estimated_cost_usd`` (``None`` when either is unpriced)."""
    fallbacks: tuple[str, ...]
    """Models to try, in order, when the chosen one fails with a retryable provider error: the
    tier's fallbacks that can hold the request (window and output limit), the others left out."""
    exact: bool = True
    """``False`` when the token count is an estimate (a tokenizer nobody publishes offline)."""
    adjustments: tuple[str, ...] = field(default=())
    """What moved the tier after classification: ``budget``, ``context`` (in order)."""
    cache_alternates: tuple[RouteDecision, ...] = field(default=())
    """When the budget stepped this decision down (and nothing else moved it): the same request
    on each tier it stepped over, the classifier's own first. From the ladder's ``cache_only``
    step the ledger sends no call and only caches answer, and an answer may be cached on the
    tier the payer's questions went to before the budget ran down: :meth:`TierRouter.answer`
    asks those tiers when the call is refused there. Each has no fallbacks and no alternates."""

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-safe dict (money as decimal strings) for response metadata and cost records.

        Example:
            >>> d = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}).route("Hi").as_metadata()
            >>> d["tier"], d["model"]
            ('small', 'gpt-4o-mini')
        """

        def money(v: Decimal | None) -> str | None:
            return None if v is None else decimal_text(v)

        return {
            "tier": self.tier,
            "model": self.model,
            "reason": self.reason,
            "rule": self.rule,
            "score": self.score,
            "classified_tier": self.classified_tier,
            "budget_step": self.budget_step,
            "budget_shares": dict(self.budget_shares),
            "input_tokens": self.input_tokens,
            "max_output_tokens": self.max_output_tokens,
            "exact": self.exact,
            "estimated_cost_usd": money(self.estimated_cost_usd),
            "premium_model": self.premium_model,
            "premium_cost_usd": money(self.premium_cost_usd),
            "saved_usd": money(self.saved_usd),
            "fallbacks": list(self.fallbacks),
            "adjustments": list(self.adjustments),
            "cache_tiers": [d.tier for d in self.cache_alternates],
        }


_ROUTE: ContextVar[tuple[RouteDecision, str, frozenset[str]] | None] = ContextVar(
    "tokenbudget_route", default=None
)
_OWN_CALL: ContextVar[bool] = ContextVar("tokenbudget_own_call", default=False)


@contextlib.contextmanager
def using_route(
    decision: RouteDecision, *, model: str | None = None, names: Sequence[str] = ()
) -> Iterator[None]:
    """Make ``decision`` the :func:`current_route` while the routed call is made.

    Routers wrap the call to the chosen model in it, so that budget adapters that see only the
    tier model's call (callback handlers, agent middleware) can reserve and charge it on the
    model it goes to (:func:`routed_model`) and hand the ledger the routing counterfactual
    (``premium_model=``).

    Args:
        decision: The route.
        model: The model this attempt calls (a fallback's, when the tier's failed); default:
            the decision's model.
        names: The names the called chat model itself goes by (its ``model_name`` / ``model``),
            when they differ from ``model`` (the pricing name a router was given for an Azure
            deployment or a proxy alias): a call naming one of them is the routed call too.

    Raises:
        InvalidInputError: ``decision`` is not a :class:`RouteDecision`, or ``model`` or one of
            ``names`` not a name.
    """
    if not isinstance(decision, RouteDecision):
        raise InvalidInputError("decision", "must be a RouteDecision from route()", value=decision)
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInputError("model", "must be a model name (a non-empty string)", value=model)
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise InvalidInputError("names", "must be a sequence of model names", value=names)
    token = _ROUTE.set((decision, model or decision.model, frozenset(names)))
    own = _OWN_CALL.set(False)  # a routed call inside a call's own call is routed again
    try:
        yield
    finally:
        _OWN_CALL.reset(own)
        _ROUTE.reset(token)


@contextlib.contextmanager
def without_route() -> Iterator[None]:
    """No route in force while the block runs (:func:`current_route` is ``None``), inside a
    :func:`using_route` block too.

    For the calls a routed call makes of its own to other models (a memory's summariser, a
    guard's classifier): budget adapters then reserve and charge them on their own model and
    record no routing for them, instead of taking them for the routed call; and routers that
    choose the model of the requests passing through them (``RoutingMiddleware``) leave them
    alone (:func:`own_call`), so they go to the model they were made for.
    """
    token = _ROUTE.set(None)
    own = _OWN_CALL.set(True)
    try:
        yield
    finally:
        _OWN_CALL.reset(own)
        _ROUTE.reset(token)


def own_call() -> bool:
    """Whether a request made here is a call of the package's own, made to a model chosen on
    purpose: inside a :func:`without_route` block (with no :func:`using_route` inside it), or
    inside :func:`~tokenbudget_core.attribution.overhead` (a summary, a classifier's call).

    Routers that pick the model of every request passing through them (agent middleware) send
    such a request on as it is: not re-routed, not counted as a routed call.

    Example:
        >>> from tokenbudget_core.attribution import overhead
        >>> own_call()
        False
        >>> with overhead("summariser"):
        ...     own_call()
        True
    """
    return _OWN_CALL.get() or current_attribution().overhead is not None


def tiers_argument(owner: str, tiers: object, extra: Sequence[object], options: dict[str, Any]) -> None:
    """Put a router adapter's positional ``tiers`` into its keyword ``options`` (``tiers=``), for
    constructors that take ``Router(tiers, ...)`` as well as ``Router(tiers=...)``.

    Raises:
        InvalidInputError: More than one positional argument, or the tiers given twice.
    """
    if extra:
        raise InvalidInputError(
            owner,
            f"takes the tiers as its only positional argument, got {1 + len(extra)}",
            fix=f"pass the other options by keyword: {owner}(tiers, models={{...}})",
        )
    if tiers is not None:
        if "tiers" in options:
            raise InvalidInputError(
                "tiers", "given twice (positionally and as tiers=)", fix="pass the tiers once"
            )
        options["tiers"] = tiers


def output_cap(field: str, value: object) -> int:
    """``value`` if it is a usable output cap (a positive integer of tokens): what routers reserve
    and what they send to the tier model as ``field`` (``max_tokens``...).

    Raises:
        InvalidInputError: It is not a positive integer, named ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(field, "must be a positive integer (output tokens)", value=value)
    return value


def current_route() -> RouteDecision | None:
    """The decision of the routed call being made (see :func:`using_route`), else ``None``."""
    found = _ROUTE.get()
    return None if found is None else found[0]


def routed_model() -> str | None:
    """The model the routed call being made goes to (the tier's, or the fallback's being tried),
    else ``None``: budget adapters reserve and charge the call on it."""
    found = _ROUTE.get()
    return None if found is None else found[1]


def routed_call(
    model: str | None, *, registry: ModelRegistry | None = None
) -> tuple[RouteDecision, str] | None:
    """The route in force and the model it calls, when a call to ``model`` is that routed call.

    A call made inside a :func:`using_route` block is the routed call when it goes to the routed
    model (:func:`routed_model`; the same name, or a name the registry resolves to the same model),
    names one of the called chat model's own names (``using_route(names=...)``: a deployment the
    router prices with its ``models=``), or names no model. A call to another
    model made in the block is not routed: budget adapters charge it on its own model and record
    no routing for it.

    Args:
        model: The model the call goes to, ``None`` when it does not name one.
        registry: Resolves model names (default: the core's registry).

    Returns:
        ``(decision, routed model)``, or ``None`` when no route is in force or ``model`` is another one.
    """
    found = _ROUTE.get()
    if found is None:
        return None
    route = (found[0], found[1])
    if model is None or model == found[1] or model in found[2]:
        return route
    registry = check_registry(registry)
    try:
        canonical = registry.get(model).canonical
    except TokenBudgetError:  # a name the registry does not know is only ever itself
        return None
    for name in (found[1], *found[2]):
        try:
            if registry.get(name).canonical == canonical:
                return route
        except TokenBudgetError:
            continue
    return None


def premium_model_of(route: object) -> str | None:
    """The premium model of a routed call, for ``Ledger.commit(..., premium_model=...)``.

    Args:
        route: A :class:`RouteDecision`, or the dict of :meth:`RouteDecision.as_metadata` found
            in a reply's metadata (``tokenbudget_route``); anything else (``None`` included) is
            not a routed call.

    Returns:
        The premium tier's model, or ``None`` when ``route`` names none.
    """
    if isinstance(route, RouteDecision):
        return route.premium_model
    if isinstance(route, Mapping):
        model = route.get("premium_model")
        if isinstance(model, str) and model:
            return model
    return None


def offline_counter(model: str, registry: ModelRegistry | None = None) -> TokenCounter:
    """A counter that never calls the network: exact for tiktoken models, the calibrated estimate otherwise.

    Routing decides before every call; a provider counting request per decision would cost more
    latency than the decision is worth.

    Raises:
        UnknownModelError: The registry does not know ``model``.
    """
    reg = check_registry(registry)
    info = reg.get(model)
    if info.tokenizer == "tiktoken":
        return TokenCounter.for_model(model, registry=reg)
    from .estimating import EstimatingTokenCounter

    return EstimatingTokenCounter(info)


def _plain_text(messages: Sequence[Message]) -> str:
    """The text the classifier judges: the newest user message (all text if there is none)."""
    for m in reversed(messages):
        if m.role == "user":
            return _text_of(m)
    return "\n".join(_text_of(m) for m in messages)


def _text_of(m: Message) -> str:
    if isinstance(m.content, str):
        return m.content
    return "\n".join(p.text for p in m.content if isinstance(p, TextPart))


class TierRouter:
    """Routes each request to the cheapest adequate model tier, within its budget and window.

    Args:
        tiers: Tier name -> model, ordered cheapest -> premium (the last one is the premium tier).
        classifier: Picks the tier (default :class:`~tokenbudget_core.complexity.HeuristicClassifier`
            over these tiers). Its tiers must all be router tiers, in the router's order. One
            without ``aclassify()`` is run by :meth:`aroute` in a worker thread.
        ledger: Budget awareness: the payer's :meth:`~tokenbudget_core.ledger.Ledger.state` today.
        fallbacks: Tier -> models to try in order when the tier's model fails with a retryable
            provider error (default: none). A fallback whose window or output limit cannot take a
            request is left out of that request's decision.
        registry: Model facts (windows, output limits, tokenizers) and pricing names.
        max_output_tokens: Output tokens a request reserves unless the call says otherwise.
        counters: Model -> token counter, to override how a model's input is counted. By default
            OpenAI models are counted exactly (tiktoken) and others with the offline estimate
            (no network call per routing decision).
        budget_thresholds: Shares of the tightest budget at which routing steps down one more
            tier each (default: the ledger policy's ladder ``cheaper_tier``: from ``cache_only``
            up the ledger sends no call, a cache answers or the call is refused, so stepping down
            further would only ask a cache that answered fewer of the payer's questions). A
            refused call is also looked up in the caches of the tiers it was stepped down from
            (:attr:`RouteDecision.cache_alternates`, :meth:`answer`), cache-only.
        refuse_at_soft_refusal: Also refuse at the ladder's ``soft_refusal`` step (the hard
            refusal, a budget used up, always refuses).

    Raises:
        InvalidInputError: Empty tiers, a classifier tier the router lacks or orders otherwise,
            bad fallbacks or numbers.
        UnknownModelError: A tier or fallback names a model the registry does not know.

    Example:
        >>> router = TierRouter({"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"})
        >>> router.route("What is the capital of France?").model
        'gpt-4o-mini'
        >>> router.route("Hi", force_tier="large").reason
        'forced: tier large'
    """

    def __init__(
        self,
        tiers: Mapping[str, str],
        *,
        classifier: ComplexityClassifier | None = None,
        ledger: Ledger | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        registry: ModelRegistry | None = None,
        max_output_tokens: int = 1024,
        counters: Mapping[str, SupportsTokenCount] | None = None,
        budget_thresholds: Sequence[float] | None = None,
        refuse_at_soft_refusal: bool = False,
    ) -> None:
        if not isinstance(tiers, Mapping) or not tiers:
            raise InvalidInputError(
                "tiers",
                "must be a non-empty mapping of tier name -> model, cheapest first",
                value=tiers,
                fix='e.g. {"small": "gpt-4o-mini", "large": "gpt-4o"}',
            )
        self.registry = check_registry(registry)
        self.tiers: dict[str, str] = {}
        self._info: dict[str, ModelInfo] = {}
        for name, model in tiers.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError("tiers", "tier names must be non-empty strings", value=name)
            if not isinstance(model, str) or not model:
                raise InvalidInputError(f"tiers[{name!r}]", "must be a model name", value=model)
            self._info[model] = self.registry.get(model)  # UnknownModelError names close matches
            self.tiers[name] = model
        self._order = tuple(self.tiers)
        self.premium_tier = self._order[-1]
        self.premium_model = self.tiers[self.premium_tier]
        """The premium tier's model: the counterfactual of every decision, and the worst case to
        reserve when the tier is not known yet."""
        self.classifier: ComplexityClassifier = (
            classifier if classifier is not None else HeuristicClassifier(tiers=self._order)
        )
        if not isinstance(getattr(self.classifier, "tiers", None), tuple | list) or not callable(
            getattr(self.classifier, "classify", None)
        ):
            raise InvalidInputError(
                "classifier", "must have tiers and classify() (a ComplexityClassifier)", value=classifier
            )
        check_tiers(self.classifier.tiers, "classifier.tiers")
        missing = [t for t in self.classifier.tiers if t not in self.tiers]
        if missing:
            raise InvalidInputError(
                "classifier",
                f"classifies into tiers the router does not have: {missing}",
                fix=f"router tiers are {list(self._order)}; map every classifier tier to a model",
            )
        positions = [self._order.index(t) for t in self.classifier.tiers]
        if positions != sorted(set(positions)):
            raise InvalidInputError(
                "classifier",
                f"orders its tiers {list(self.classifier.tiers)}, the router {list(self._order)}: "
                "both must be cheapest first",
                fix="fit the classifier with tiers=[...] in the router's order (e.g. tiers="
                f"{[t for t in self._order if t in self.classifier.tiers]})",
            )
        if fallbacks is not None and not isinstance(fallbacks, Mapping):
            raise InvalidInputError(
                "fallbacks",
                "must be a mapping of tier name -> list of model names",
                value=fallbacks,
                fix=f'e.g. fallbacks={{"{self.premium_tier}": ["{self.premium_model}", ...]}}',
            )
        self.fallbacks: dict[str, tuple[str, ...]] = {}
        self._fallback_info: dict[str, ModelInfo] = {}
        for tier, models in (fallbacks or {}).items():
            if tier not in self.tiers:
                raise InvalidInputError(
                    f"fallbacks[{tier!r}]", "is not a router tier", fix=f"one of {list(self._order)}"
                )
            if isinstance(models, str) or not isinstance(models, Sequence):
                raise InvalidInputError(f"fallbacks[{tier!r}]", "must be a list of model names", value=models)
            for i, m in enumerate(models):
                if not isinstance(m, str) or not m:
                    raise InvalidInputError(f"fallbacks[{tier!r}][{i}]", "must be a model name", value=m)
                self._fallback_info[m] = self.registry.get(m)
            self.fallbacks[tier] = tuple(models)
        self.max_output_tokens = output_cap("max_output_tokens", max_output_tokens)
        self.ledger = ledger
        if ledger is not None and not callable(getattr(ledger, "state", None)):
            raise InvalidInputError("ledger", "must be a Ledger", value=ledger)
        if counters is not None and not isinstance(counters, Mapping):
            raise InvalidInputError(
                "counters",
                "must be a mapping of model name -> token counter",
                value=counters,
                fix=f'e.g. counters={{"{self.premium_model}": '
                f'TokenCounter.for_model("{self.premium_model}")}}',
            )
        self._counters: dict[str, SupportsTokenCount] = dict(counters or {})
        for m, c in self._counters.items():
            if not isinstance(m, str) or not m:
                raise InvalidInputError(
                    "counters",
                    "keys must be model names (non-empty strings)",
                    value=m,
                    fix="key each counter by the model name it counts for",
                )
            if not isinstance(c, SupportsTokenCount):
                raise InvalidInputError(f"counters[{m!r}]", "must have count() and count_messages()", value=c)
        self._thresholds = None if budget_thresholds is None else self._check_thresholds(budget_thresholds)
        self.refuse_at_soft_refusal = check_flag("refuse_at_soft_refusal", refuse_at_soft_refusal)

    @property
    def budget_thresholds(self) -> tuple[float, ...]:
        """The shares of the tightest budget at which routing steps down: the ones passed, else
        the ledger policy's ladder ``cheaper_tier`` (past ``cache_only`` the budget adapters send
        no call: the caches of the tier and of those it stepped down from are asked), read at
        each decision so a policy
        assigned later (``ledger.policy = ...``) applies at once; none without a ledger."""
        if self._thresholds is not None:
            return self._thresholds
        if self.ledger is None:
            return ()
        ladder = self.ledger.policy.ladder
        return () if ladder.cheaper_tier is None else (ladder.cheaper_tier,)

    # -- validation -------------------------------------------------------------------------------

    @staticmethod
    def _check_thresholds(value: Sequence[float]) -> tuple[float, ...]:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise InvalidInputError("budget_thresholds", "must be a list of shares in (0, 1)", value=value)
        out: list[float] = []
        for i, t in enumerate(value):
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1:
                raise InvalidInputError(f"budget_thresholds[{i}]", "must be a share in (0, 1)", value=t)
            if out and t <= out[-1]:
                raise InvalidInputError("budget_thresholds", "must increase", value=tuple(value))
            out.append(float(t))
        return tuple(out)

    def _request(
        self,
        messages: object,
        force_tier: object,
        max_output_tokens: object,
        tools: object,
        feature: object,
        user: object,
        default_output_tokens: object = None,
    ) -> tuple[list[Message], int, list[ToolLike], dict[str, int]]:
        for name, payer in (("feature", feature), ("user", user)):
            if payer is not None and (not isinstance(payer, str) or not payer):
                raise InvalidInputError(name, "must be a non-empty string (or None)", value=payer)
        if isinstance(messages, str):
            msgs = to_messages([{"role": "user", "content": messages}])
        else:
            msgs = to_messages(messages)
            if not msgs:
                raise InvalidInputError(
                    "messages", "must not be empty", fix="pass the prompt or the conversation"
                )
        if force_tier is not None and (not isinstance(force_tier, str) or force_tier not in self.tiers):
            raise InvalidInputError(
                "force_tier",
                f"{force_tier!r} is not a router tier (a tier name)",
                value=force_tier,
                fix=f"one of {list(self._order)}",
            )
        per_tier: dict[str, int] = {}
        if max_output_tokens is not None:
            out = output_cap("max_output_tokens", max_output_tokens)
        elif isinstance(default_output_tokens, Mapping):
            out = self.max_output_tokens
            for tier, cap in default_output_tokens.items():
                if tier not in self.tiers:
                    raise InvalidInputError(
                        "default_output_tokens",
                        f"{tier!r} is not a router tier",
                        value=tier,
                        fix=f"key the caps by tier name: {list(self._order)}",
                    )
                per_tier[tier] = output_cap(f"default_output_tokens[{tier!r}]", cap)
        elif default_output_tokens is not None:
            out = output_cap("default_output_tokens", default_output_tokens)
        else:
            out = self.max_output_tokens
        return msgs, out, check_tools(tools), per_tier

    async def _aclassify(self, text: str) -> object:
        """The classifier's ``aclassify``; a classifier with ``classify()`` only runs it in a worker
        thread (it may embed: the event loop is not blocked)."""
        aclassify = getattr(self.classifier, "aclassify", None)
        if not callable(aclassify):
            return await asyncio.to_thread(self.classifier.classify, text)
        result = aclassify(text)
        return await result if inspect.isawaitable(result) else result

    def _checked(self, classification: object) -> Classification:
        """The classifier's answer, if it is a :class:`Classification` of a router tier.

        Raises:
            InvalidInputError: Anything else, named (the classifier is at fault, not the request).
        """
        if not isinstance(classification, Classification):
            raise InvalidInputError(
                "classifier",
                f"returned {classification!r} ({type(classification).__name__}), not a Classification",
                fix="classify() must return Classification(tier=..., score=..., reason=...)",
            )
        tier = classification.tier
        if not isinstance(tier, str) or tier not in self.tiers:
            raise InvalidInputError(
                "classifier",
                f"returned tier {tier!r}, which the router does not have",
                fix=f"router tiers are {list(self._order)}",
            )
        score, rules = classification.score, classification.rules
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidInputError("classifier", f"returned score {score!r}, not a number in [0, 1]")
        if not isinstance(rules, tuple | list) or not all(isinstance(r, str) for r in rules):
            raise InvalidInputError("classifier", f"returned rules {rules!r}, not a tuple of rule names")
        return classification

    # -- the decision -----------------------------------------------------------------------------

    def _counter(self, model: str) -> SupportsTokenCount:
        counter = self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = offline_counter(model, self.registry)
        return counter

    def _refuses(self, state: BudgetState | None) -> bool:
        """Whether the payer's budget step refuses the call (``hard_refusal``, or ``soft_refusal``
        with ``refuse_at_soft_refusal``)."""
        return state is not None and (
            state.step == "hard_refusal" or (state.step == "soft_refusal" and self.refuse_at_soft_refusal)
        )

    def _least_need(self, out: int, per_tier: Mapping[str, int]) -> tuple[str, int]:
        """(model, output cap) of the cheapest tier: where a refused call would have cost least."""
        tier = self._order[0]
        model = self.tiers[tier]
        cap, limit = per_tier.get(tier, out), self._info[model].max_output_tokens
        return model, min(cap, limit) if limit else cap

    def _refusal(
        self,
        feature: str | None,
        user: str | None,
        state: BudgetState,
        model: str,
        input_tokens: int,
        cap: int,
    ) -> BudgetExceededError:
        """The router's refusal, with the figures the ledger's own refusals carry: the tightest
        budget's ``limit`` and ``used`` (USD as ``Decimal``, tokens as ``int``) and ``requested``,
        the call on the cheapest tier's model (input plus output cap, priced for a money budget):
        the least it could need wherever it was routed."""
        ctx = current_attribution()
        assert self.ledger is not None
        tight_name, _ = max(state.shares.items(), key=lambda kv: kv[1], default=("", 0.0))
        used = state.used.get(tight_name, 0)
        money = isinstance(used, Decimal) or "usd" in tight_name
        requested: Decimal | int = input_tokens + cap
        if money:
            requested = self._cost(input_tokens, cap, model) or Decimal(0)  # unpriced: reserved as $0
        limit = _limit_of(self.ledger, tight_name, ctx.feature or feature)
        if limit is None:  # a budget the policy does not name: spent + left, exact below the limit
            limit = used + state.headroom.get(tight_name, 0)
        return BudgetExceededError(
            budget=tight_name or "budget",
            scope=f"feature={ctx.feature or feature or '-'} user={ctx.user or user or '-'}",
            limit=limit,
            used=used,
            requested=requested,
            step=state.step,
        )

    def _budget(self, state: BudgetState | None) -> tuple[str, dict[str, float], int, str | None]:
        """(step, shares, tiers to step down, reason) for the payer (a refusal step is raised
        before, by :meth:`route` / :meth:`aroute`, with :meth:`_refusal`)."""
        if state is None:
            return "normal", {}, 0, None
        shares = dict(state.shares)
        tight_name, tight = max(shares.items(), key=lambda kv: kv[1], default=("", 0.0))
        down = sum(1 for t in self.budget_thresholds if tight >= t)
        if not down:
            return state.step, shares, 0, None
        steps = "one tier" if down == 1 else f"{down} tiers"
        return state.step, shares, down, f"budget: {tight_name} at {tight:.0%} -> {steps} down"

    def _decide(
        self,
        msgs: list[Message],
        out: int,
        tools: list[ToolLike],
        force_tier: str | None,
        classification: Classification | None,
        budget: tuple[str, dict[str, float], int, str | None],
        explicit: bool,
        per_tier: Mapping[str, int],
        counted: Mapping[str, int] | None = None,
    ) -> RouteDecision:
        """The decision, counting the request for the models it looks at (and only those).

        ``counted``: the counts :meth:`aroute` awaited, by model; a model missing from it raises
        :class:`_Uncounted`, and :meth:`aroute` counts it and decides again (the same steps, so
        the same decision and the same counts as :meth:`route`, which counts here, inline).
        """
        step, shares, down, budget_reason = budget
        reasons: list[str] = []
        adjustments: list[str] = []
        if classification is None:
            assert force_tier is not None
            start = self._order.index(force_tier)
            reasons.append(f"forced: tier {force_tier}")
            rule: str | None = "forced"
        else:
            start = self._order.index(classification.tier)
            reasons.append(f"classifier: {classification.reason}")
            rule = ", ".join(classification.rules) or None
            if down and start > 0:
                start = max(start - down, 0)
                reasons.append(budget_reason or "budget")
                adjustments.append("budget")
        counts: dict[str, int] = {}
        estimated_counts: set[str] = set()  # models whose count is an estimate
        exact = True

        def tokens(model: str, *, chosen: bool = True) -> int:
            nonlocal exact
            if model not in counts:
                if counted is None:
                    n = self._count(model, msgs, tools)
                elif model in counted:
                    n = counted[model]
                else:
                    raise _Uncounted(model)
                if getattr(n, "exact", True) is False:
                    estimated_counts.add(model)
                counts[model] = int(n)
            if chosen and model in estimated_counts:
                exact = False
            return counts[model]

        def cannot(model: str, info: ModelInfo, tier: str, *, chosen: bool = True) -> tuple[int, str | None]:
            """(output cap on ``model``, a model of ``tier``, why it cannot take the call or
            ``None`` when it can).

            A cap the call names must be within the model's output limit (a provider refuses
            more); a default cap (the router's, the call's, the tier's own) is lowered to it.
            """
            limit = info.max_output_tokens
            cap = per_tier.get(tier, out)
            if limit and cap > limit:
                if explicit:
                    return out, f"{out:,} output tokens exceed {info.name}'s {limit:,} output limit"
                cap = limit
            if info.context_window is not None:
                n = tokens(model, chosen=chosen)
                if n + cap > info.context_window:
                    return cap, (
                        f"{n:,} tokens + {cap:,} output exceed {info.name}'s {info.context_window:,} window"
                    )
            return cap, None

        chosen = start
        first_tier = self._order[start]
        cap, why = cannot(self.tiers[first_tier], self._info[self.tiers[first_tier]], first_tier)
        if why is not None:
            first_why = why
            info = self._info[self.tiers[self._order[start]]]
            if force_tier is not None:
                if info.max_output_tokens and explicit and out > info.max_output_tokens:
                    raise ContextOverflowError(
                        limit=info.max_output_tokens,
                        required=out,
                        what=f"output (max_output_tokens) of a request forced to tier {force_tier!r} "
                        f"({info.name}'s output limit)",
                        fix=f"lower max_output_tokens to {info.max_output_tokens:,} or less, or drop "
                        "force_tier to let the router escalate",
                    )
                raise ContextOverflowError(
                    limit=(info.context_window or 0) - cap,
                    required=tokens(self.tiers[force_tier]),
                    what=f"request forced to tier {force_tier!r} ({info.name})",
                    fix="drop force_tier to let the router escalate, shorten the prompt, "
                    "or lower max_output_tokens",
                )
            order = [*range(start + 1, len(self._order)), *range(start - 1, -1, -1)]
            for i in order:
                name = self._order[i]
                cap, why = cannot(self.tiers[name], self._info[self.tiers[name]], name)
                if why is None:
                    chosen = i
                    break
            if why is not None:
                infos = [self._info[m] for m in self.tiers.values()]
                able = [
                    i for i in infos if not (explicit and i.max_output_tokens and out > i.max_output_tokens)
                ]
                if not able:
                    most = max(i.max_output_tokens or 0 for i in infos)
                    raise ContextOverflowError(
                        limit=most,
                        required=out,
                        what="output (max_output_tokens) asked of every tier's model (their largest "
                        "output limit)",
                        fix=f"lower max_output_tokens to {most:,} or less, or add a tier whose model "
                        "can produce more output",
                    )
                biggest = max((i.context_window or 0) for i in able)
                raise ContextOverflowError(
                    limit=biggest - out,
                    required=max(counts.values()),
                    what=f"request ({', '.join(f'{m}: {c:,}' for m, c in counts.items())} tokens plus "
                    f"{out:,} output)",
                    fix="shorten the prompt or conversation (fit_messages), lower max_output_tokens, "
                    "or add a tier whose model has a larger window",
                )
            verb = "escalated" if chosen > start else "stepped down"
            reasons.append(f"{verb}: {first_why}")
            adjustments.append("context")
        tier = self._order[chosen]
        model = self.tiers[tier]
        n = tokens(model)
        premium_model = self.tiers[self.premium_tier]
        pinfo = self._info[premium_model]

        def priced(
            n: int, cap: int, model: str, *, chosen: bool = True
        ) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
            """(estimated, premium, saved) of the call on ``model``."""
            estimated = self._cost(n, cap, model)
            pn = tokens(premium_model, chosen=chosen)
            if (pinfo.max_output_tokens and cap > pinfo.max_output_tokens) or (
                pinfo.context_window is not None and pn + cap > pinfo.context_window
            ):
                premium = estimated  # the premium model could not take this call: nothing was saved
            else:
                premium = self._cost(pn, cap, premium_model)  # the same call: the same output cap
            saved = None if estimated is None or premium is None else _tidy(premium - estimated)
            return estimated, premium, saved

        estimated, premium, saved = priced(n, cap, model)
        reason = "; ".join(reasons)
        alternates: list[RouteDecision] = []
        if adjustments == ["budget"] and classification is not None:
            for i in range(self._order.index(classification.tier), chosen, -1):
                name = self._order[i]
                alt = self.tiers[name]
                alt_cap, why = cannot(alt, self._info[alt], name, chosen=False)
                if why is not None:  # (never the case today: a tier stepped down from holds it)
                    continue
                alt_n = tokens(alt, chosen=False)
                alt_estimated, alt_premium, alt_saved = priced(alt_n, alt_cap, alt, chosen=False)
                alternates.append(
                    RouteDecision(
                        tier=name,
                        model=alt,
                        reason=f"{reason}; refused by the budget on tier {tier}: tier {name}'s cache asked",
                        rule=rule,
                        score=classification.score,
                        classified_tier=classification.tier,
                        budget_step=step,
                        budget_shares=shares,
                        input_tokens=alt_n,
                        max_output_tokens=alt_cap,
                        exact=not {alt, premium_model} & estimated_counts,
                        estimated_cost_usd=alt_estimated,
                        premium_model=premium_model,
                        premium_cost_usd=alt_premium,
                        saved_usd=alt_saved,
                        fallbacks=(),
                        adjustments=("budget",),
                    )
                )
        fallbacks: list[str] = []
        for fb in self.fallbacks.get(tier, ()):
            _, fb_why = cannot(fb, self._fallback_info[fb], tier, chosen=False)
            if fb_why is None:
                fallbacks.append(fb)
            else:
                reasons.append(f"fallback {fb} left out: {fb_why}")
        return RouteDecision(
            tier=tier,
            model=model,
            reason="; ".join(reasons),
            rule=rule,
            score=None if classification is None else classification.score,
            classified_tier=None if classification is None else classification.tier,
            budget_step=step,
            budget_shares=shares,
            input_tokens=n,
            max_output_tokens=cap,
            exact=exact,
            estimated_cost_usd=estimated,
            premium_model=premium_model,
            premium_cost_usd=premium,
            saved_usd=saved,
            fallbacks=tuple(fallbacks),
            adjustments=tuple(adjustments),
            cache_alternates=tuple(alternates),
        )

    def _cost(self, input_tokens: int, output_tokens: int, model: str) -> Decimal | None:
        prices = getattr(self.ledger, "prices", None)
        return cost_or_none(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model,
            registry=self.registry,
            prices=prices,
        )

    def route(
        self,
        messages: str | Sequence[MessageLike],
        *,
        force_tier: str | None = None,
        max_output_tokens: int | None = None,
        tools: Sequence[ToolLike] | None = None,
        feature: str | None = None,
        user: str | None = None,
        default_output_tokens: int | Mapping[str, int] | None = None,
    ) -> RouteDecision:
        """Decide the tier and model for one request.

        Args:
            messages: The prompt, or the conversation (OpenAI-style dicts or core messages); the
                classifier judges the newest user message, the window check counts them all.
            force_tier: Skip the classifier and budget step-down; the window is still checked.
            max_output_tokens: Output the call asks for: only a model whose output limit allows it
                is chosen (default: the router's, lowered to each model's output limit).
            tools: Tool definitions sent with the call (counted as input).
            feature: Payer's feature, when no :func:`~tokenbudget_core.attribute` block sets it:
                its budgets step the route down or refuse it, and the classifier's own calls (a
                learned classifier's embeddings, overhead ``router``) are charged to it.
            user: Payer's user, likewise.
            default_output_tokens: This call's default output instead of the router's, when it
                names no ``max_output_tokens``: one for every tier, or per tier name (the cap each
                tier's own chat model sets; tiers not named keep the router's); lowered to each
                model's output limit, never a reason to skip a tier.

        Raises:
            InvalidInputError: Empty or malformed messages, an unknown ``force_tier``, a bad number.
            ContextOverflowError: No tier's model can hold the request or produce the
                ``max_output_tokens`` asked for (or the forced one cannot).
            BudgetExceededError: The payer's budget is used up (hard refusal), with the ledger's
                figures: the tightest budget's ``limit`` and ``used``, and ``requested``, the
                call on the cheapest tier's model (USD as ``Decimal``, tokens as ``int``).
        """
        msgs, out, tool_list, per_tier = self._request(
            messages, force_tier, max_output_tokens, tools, feature, user, default_output_tokens
        )
        state = self.ledger.state(feature=feature, user=user) if self.ledger is not None else None
        if state is not None and self._refuses(state):  # before the classifier's (paid) call
            model, cap = self._least_need(out, per_tier)
            raise self._refusal(feature, user, state, model, self._count(model, msgs, tool_list), cap)
        budget = self._budget(state)
        classification = None
        if force_tier is None:
            with attribute(feature=feature, user=user), overhead("router"):  # the payer's overhead
                classification = self._checked(self.classifier.classify(_plain_text(msgs)))
        return self._decide(
            msgs, out, tool_list, force_tier, classification, budget, max_output_tokens is not None, per_tier
        )

    async def aroute(
        self,
        messages: str | Sequence[MessageLike],
        *,
        force_tier: str | None = None,
        max_output_tokens: int | None = None,
        tools: Sequence[ToolLike] | None = None,
        feature: str | None = None,
        user: str | None = None,
        default_output_tokens: int | Mapping[str, int] | None = None,
    ) -> RouteDecision:
        """Async twin of :meth:`route` (the budget lookup runs in a worker thread, the request is
        counted with each counter's ``acount_messages`` when it has one, so a counter that asks
        an API, such as Claude's, does not block the event loop)."""
        msgs, out, tool_list, per_tier = self._request(
            messages, force_tier, max_output_tokens, tools, feature, user, default_output_tokens
        )
        state = None
        if self.ledger is not None:
            ledger = self.ledger
            state = await asyncio.to_thread(lambda: ledger.state(feature=feature, user=user))
        if state is not None and self._refuses(state):
            model, cap = self._least_need(out, per_tier)
            raise self._refusal(feature, user, state, model, await self._acount(model, msgs, tool_list), cap)
        budget = self._budget(state)
        classification = None
        if force_tier is None:
            with attribute(feature=feature, user=user), overhead("router"):  # the payer's overhead
                classification = self._checked(await self._aclassify(_plain_text(msgs)))
        counted: dict[str, int] = {}
        while True:  # once per model the decision looks at: a few tiers and fallbacks at most
            try:
                return self._decide(
                    msgs,
                    out,
                    tool_list,
                    force_tier,
                    classification,
                    budget,
                    max_output_tokens is not None,
                    per_tier,
                    counted,
                )
            except _Uncounted as e:
                counted[e.model] = await self._acount(e.model, msgs, tool_list)

    async def _acount(self, model: str, msgs: list[Message], tools: list[ToolLike]) -> int:
        """Async twin of the count in :meth:`_decide`: the counter's ``acount_messages`` when it
        has one; a custom counter without it counts inline, as in :meth:`route`."""
        counter = self._counter(model)
        acount = getattr(counter, "acount_messages", None)
        if acount is not None and inspect.iscoroutinefunction(acount):
            return add_file_tokens(await acount(msgs, tools or None), msgs)
        return self._count(model, msgs, tools)

    def _count(self, model: str, msgs: list[Message], tools: list[ToolLike]) -> int:
        """The request's tokens on ``model`` (its counter's count, files of stand-ins added)."""
        return add_file_tokens(self._counter(model).count_messages(msgs, tools or None), msgs)

    # -- the call, down the fallback chain --------------------------------------------------------

    def call(self, decision: RouteDecision, fn: Callable[[str], T]) -> T:
        """Call ``fn(model)`` with the decision's model, then its fallbacks on retryable errors.

        Args:
            decision: From :meth:`route`.
            fn: Makes the provider call for the model it is given.

        Raises:
            InvalidInputError: ``decision`` is not a :class:`RouteDecision`, or ``fn`` is not
                callable or is an ``async`` function (use :meth:`acall`).
            Exception: The first non-retryable error, or the last model's error when all failed.
        """
        return call_with_fallbacks(self._chain(decision), fn)

    async def acall(self, decision: RouteDecision, fn: Callable[[str], Awaitable[T]]) -> T:
        """Async twin of :meth:`call`.

        Raises:
            InvalidInputError: ``decision`` is not a :class:`RouteDecision`, ``fn`` is not
                callable, or it returns no awaitable (a sync function: use :meth:`call`).
        """
        return await acall_with_fallbacks(self._chain(decision), fn)

    def answer(
        self, decision: RouteDecision, run: Callable[[RouteDecision, BudgetExceededError | None], T]
    ) -> tuple[RouteDecision, T]:
        """``run(decision, None)``; when the budget refuses that call, ``run(alt, refusal)`` on each
        of the decision's :attr:`~RouteDecision.cache_alternates` in turn, until one is answered
        from its tier's cache.

        From the ladder's ``cache_only`` step the ledger sends no call: a cache answers or the
        call is refused. A budget that stepped the call down one tier sends it to that tier's
        cache, while the payer's earlier answers were cached on the classifier's own tier (a
        response cache keys each model apart): those are asked too, at $0.

        Args:
            decision: From :meth:`route` / :meth:`aroute`.
            run: Makes the call of a decision. Given a refusal (an alternate), it must make the
                call cache-only: answered from the tier's response cache, else refused with that
                error, never sent (a tier the budget would take there, a smaller call, must not
                be paid for: the payer's call was refused). The adapters do it with
                ``llm_cache.scoped_runs`` (LangChain) and ``cached_llm.cache_only`` (LlamaIndex),
                and skip a tier with no cache of theirs.

        Returns:
            The decision that answered, and what ``run`` returned for it.

        Raises:
            BudgetExceededError: The first refusal, when no other tier's cache answered.
            Exception: Whatever else ``run`` raises.
        """
        self._chain(decision)
        try:
            return decision, run(decision, None)
        except BudgetExceededError as refused:
            for alt in decision.cache_alternates:
                with contextlib.suppress(BudgetExceededError):  # its cache did not have it
                    return alt, run(alt, refused)
            raise refused

    async def aanswer(
        self,
        decision: RouteDecision,
        run: Callable[[RouteDecision, BudgetExceededError | None], Awaitable[T]],
    ) -> tuple[RouteDecision, T]:
        """Async twin of :meth:`answer` (``run`` returns an awaitable)."""
        self._chain(decision)
        try:
            return decision, await run(decision, None)
        except BudgetExceededError as refused:
            for alt in decision.cache_alternates:
                with contextlib.suppress(BudgetExceededError):
                    return alt, await run(alt, refused)
            raise refused

    def picker(
        self,
        decision: RouteDecision,
        tiers: Mapping[str, T],
        fallbacks: Mapping[str, Sequence[T]] | None = None,
    ) -> Callable[[str], T]:
        """What each attempt of :meth:`call` / :meth:`acall` calls, for adapters that hold one
        object (a chat model, an LLM) per tier and per fallback: each call of the returned function
        gives the next object of the decision's chain (the tier's, then the fallbacks the decision
        kept), in the order the attempts are made.

        Objects are told apart by their place in the chain, not by model name: a fallback that
        names the same model as its tier (the same model on another endpoint or key), or two tiers
        of one model with different settings, are each called.

        Args:
            decision: From :meth:`route`.
            tiers: Tier -> object, the tiers this router was built with.
            fallbacks: Tier -> objects, in the order of this router's ``fallbacks`` names.

        Raises:
            InvalidInputError: ``decision`` is not a :class:`RouteDecision`, or ``tiers`` /
                ``fallbacks`` do not match this router's tiers and fallbacks.
        """
        chain = self._chain(decision)
        tier = decision.tier
        listed = list((fallbacks or {}).get(tier, ()))
        names = self.fallbacks.get(tier, ())
        if tier not in tiers or self.tiers.get(tier) != decision.model or len(listed) != len(names):
            raise InvalidInputError(
                "tiers",
                f"do not match the router's tiers and fallbacks for tier {tier!r}",
                fix="pass the objects the router was built with: one per tier, one per fallback name",
            )
        members = [tiers[tier]]
        kept = iter(decision.fallbacks)
        want = next(kept, None)
        for name, member in zip(names, listed, strict=True):
            if name == want:  # the decision keeps fallbacks in their order (a name: all or none)
                members.append(member)
                want = next(kept, None)
        if len(members) != len(chain):
            raise InvalidInputError(
                "decision",
                f"keeps fallbacks {list(decision.fallbacks)} that are not this router's for tier {tier!r}",
                fix="pass a decision this router's route() made",
            )
        attempts = iter(zip(chain, members, strict=True))

        def pick(model: str) -> T:
            expected, member = next(attempts, (None, None))
            if expected != model or member is None:
                raise InvalidInputError(
                    "model",
                    f"{model!r} is not the next model of the decision's chain {list(chain)}",
                    fix="call the picker once per attempt, from the function given to call() / acall()",
                )
            return member

        return pick

    @staticmethod
    def _chain(decision: object) -> tuple[str, ...]:
        if not isinstance(decision, RouteDecision):
            raise InvalidInputError("decision", "must be a RouteDecision from route()", value=decision)
        return (decision.model, *decision.fallbacks)


class _Uncounted(Exception):  # a signal between aroute and _decide, not an error
    """:meth:`TierRouter._decide` needs the count of ``model``, which :meth:`TierRouter.aroute`
    has not awaited yet."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


def _tidy(amount: Decimal) -> Decimal:
    return Decimal(0) if amount == 0 else amount


def _limit_of(ledger: Ledger, budget: str, feature: str | None) -> Decimal | int | None:
    """The policy's limit behind a budget name of :meth:`Ledger.state` (``None``: not named)."""
    return ledger.policy.daily_limits(feature).get(budget)
