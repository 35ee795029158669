"""Token and dollar budgets for ``langchain.agents.create_agent`` agents: :class:`BudgetMiddleware`.

Every model call of the agent goes through the core :class:`~tokenbudget_core.ledger.Ledger`
(``wrap_model_call``): the request the model will receive (system message, messages, tools,
and the structured-output schema ``response_format`` adds: a ``ToolStrategy``'s tools, a
``ProviderStrategy``'s JSON schema) is counted and its worst case reserved before it goes out,
the usage the reply reports is committed after it, and a call that fails is settled by the ledger's rule
(:meth:`~tokenbudget_core.ledger.Ledger.settle` with ``failed=True``): released when nothing came
back, charged a flagged estimate (the counted input plus the text it streamed) when a stream
broke off after output, which the provider bills. A streamed Claude reply reports its
prompt-cache writes without the 5-minute/1-hour split: they are charged at the TTL the
request's ``cache_control`` markers name, as Anthropic bills them (5m, flagged, when both are
marked; the core's rule,
:func:`~tokenbudget_core.usage_sources.usage_from_langchain`'s ``marked_ttl``). The ledger decides
prices, the per-user/feature/day limits and who pays; the middleware translates. Content the
core cannot represent (a PDF or other file block, audio, a server-tool result in the history)
is counted by the core's estimate (:func:`~tokenbudget_core.counting.estimate_block`) rather
than stopping the run.

Who pays: the feature and user of the agent run's ``runtime.context``, metadata or tags (an
enclosing :func:`~tokenbudget_core.attribute` block wins over them). LangChain merges a nested
run's config over its parent's, so for an agent invoked inside another run with a payer of
its own the innermost names win; wrap it in ``attribute()`` to charge the outer payer. A
:class:`~langchain_tokenbudget.TokenBudgetLLMCache` hit under the middleware is scoped and
recorded on the payer of the ``attribute()`` block in force (none: on no payer), not on the
middleware's own ``feature=``/``user=``: putting the middleware's payer in force for the model
call would also charge a second ledger's callback handler to it. A call the budget refuses is
refused before the model's cache is looked up (the callback handler, not the middleware,
serves a cached answer at the limit).

Per-run caps (``max_run_usd``, ``max_run_tokens``) add up what the calls of one run were
charged, in the agent state (``tokenbudget_run_tokens``, ``tokenbudget_run_nanos``). A run starts
from zero when the agent is given new input (``before_agent``, which LangGraph runs at the start
of a run only); with a checkpointer the totals are checkpointed with the thread, so a run paused
by an interrupt (a ``HumanInTheLoopMiddleware`` approval) and resumed with
``Command(resume=...)`` is the same run and its caps hold across resumes (``stream_mode="updates"``
shows that hook as a ``BudgetMiddleware.before_agent`` step, ``None`` or zeroed totals, as
LangChain's own ``before_agent`` middlewares are shown). Every charge counts, a
call that failed after streaming output (charged its estimate) included, and the calls of one
model step that an outer middleware retries or falls back from are counted as they are made
(:class:`StepCharges`).

Routed calls: with ``create_agent(RouterChatModel(...))`` the router names no model before it
decides, so the middleware reserves the worst case on its premium model and charges the model
that answered (the reply's ``response_metadata["tokenbudget_route"]``); with a
:class:`~langchain_tokenbudget.routing_middleware.RoutingMiddleware` before it, the request names
the tier model and the route is the one being made
(:func:`~tokenbudget_core.routing.routed_call`): the call is reserved and charged on the route's
model. Either way the ledger records what routing saved against the premium tier. Only the
routed call itself is routed: a call to another model made inside the route (the summaries of a
:class:`~langchain_tokenbudget.context_middleware.ContextWindowMiddleware`, which run with no
route, or a middleware's own guard call) is charged on its own model, with no routing recorded;
so is a call to a fallback model (``ModelFallbackMiddleware``): ``model=`` prices only a chat
model that names no model the registry knows.

Put it last in ``middleware=[...]`` (innermost): it then sees the request exactly as sent,
after trimming or summarising middleware, and reserves every retry. A
:class:`~langchain_tokenbudget.budget_callback.BudgetCallbackHandler` of the same ledger in the
run's callbacks leaves the model call this middleware charges to it (the middleware marks the
call while it is made): the call is charged once; the handler charges only the calls the
middleware does not (another model's, made inside or outside the agent).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Annotated, Any, Literal, Never, NotRequired, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from tokenbudget_core.budgets import RunBudget
from tokenbudget_core.counting import SupportsTokenCount, TokenCounter, add_file_tokens
from tokenbudget_core.errors import (
    BudgetExceededError,
    InvalidInputError,
    TokenBudgetError,
    UnpricedModelError,
    option_names,
    refuse_positional,
    refuse_unknown,
)
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.ledger import Charge, Ledger, Reservation, check_budget_options
from tokenbudget_core.messages import Message
from tokenbudget_core.money import nanos_to_usd, usd_to_nanos
from tokenbudget_core.prompt_caching import CacheMarks, longest_ttl
from tokenbudget_core.routing import RouteDecision, TierRouter, premium_model_of, routed_call

from . import _need_agents
from ._bridge import counted_tools, sent_tools
from .budget_callback import (
    CHOICE_KEYS,
    MAX_OUTPUT_KEYS,
    MODEL_KEYS,
    ROUTE_KEY,
    Tools,
    cache_hit_of,
    cache_writes_in,
    first,
    middleware_call,
    payer_from,
    reply_text,
    reported,
    route_of,
    routed_model,
    running_total,
    stream_event_text,
    streamed_estimate,
)
from .messages import to_core_request

try:
    from langchain.agents.middleware.types import (
        AgentMiddleware,
        AgentState,
        ExtendedModelResponse,
        ModelRequest,
        ModelResponse,
        PrivateStateAttr,
    )
    from langgraph.config import get_config
    from langgraph.runtime import Runtime
    from langgraph.types import Command
except ImportError as e:  # langchain (agents) absent or too old: named, with its pip command
    _need_agents(e)

__all__ = ["BudgetMiddleware", "BudgetRunState"]

TOKENS_KEY = "tokenbudget_run_tokens"
NANOS_KEY = "tokenbudget_run_nanos"
OnExceeded = Literal["raise", "end"]
Refusal = str | Callable[[BudgetExceededError], str]


class BudgetRunState(AgentState[Any]):
    """The agent state plus what this run's model calls were charged: checkpointed with the
    thread, so a run resumed after an interrupt goes on counting; reset when a run starts."""

    tokenbudget_run_tokens: NotRequired[Annotated[int, PrivateStateAttr]]
    tokenbudget_run_nanos: NotRequired[Annotated[int, PrivateStateAttr]]


class _RunningTotals(BaseCallbackHandler):
    """Watches the model runs made inside one model call: the latest running total of each Claude
    stream, the replies of the runs that finished (what a call the agent fails afterwards, e.g.
    on structured output, was billed for), and the text (and tool-call arguments) streamed so
    far, what a call that breaks off mid-stream is estimated from."""

    run_inline = True

    def __init__(self) -> None:
        self.latest: dict[UUID, dict[str, Any]] = {}
        self.finished: list[dict[str, Any]] = []
        self.replies: list[BaseMessage] = []
        self.streamed: list[str] = []
        self.evented: list[str] = []
        self.routes: dict[UUID, Mapping[str, Any]] = {}  # a RouterChatModel tier run's route, by run
        self.answered: Mapping[str, Any] | None = None  # the route of the run that finished or streamed

    def _started(self, run_id: UUID, metadata: Mapping[str, Any] | None) -> None:
        route = (metadata or {}).get(ROUTE_KEY)
        if isinstance(route, Mapping):
            self.routes[run_id] = route

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
    ) -> None:
        self._started(run_id, metadata)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
    ) -> None:
        self._started(run_id, metadata)

    def on_stream_event(self, event: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if text := stream_event_text(event):
            self.evented.append(text)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        if isinstance(token, str) and token:
            self.streamed.append(token)
        if run_id in self.routes and self.answered is None:  # the tier streaming (until one finishes)
            self.answered = self.routes[run_id]
        message = getattr(chunk, "message", None)
        for call in getattr(message, "tool_call_chunks", None) or ():
            if isinstance(args := call.get("args"), str):
                self.streamed.append(args)
        if (total := running_total(chunk)) is not None:
            self.latest[run_id] = total

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        if (total := self.latest.pop(run_id, None)) is not None:
            self.finished.append(total)
        if run_id in self.routes:
            self.answered = self.routes[run_id]
        for generations in response.generations:
            self.replies.extend(
                m for g in generations if isinstance(m := getattr(g, "message", None), BaseMessage)
            )

    def settle_args(self, route: RouteDecision | None, marked_ttl: CacheMarks | None) -> dict[str, Any]:
        """``settle()``'s arguments for a call that failed: the usage its finished runs reported
        (the provider billed them), else ``None`` and the text streamed so far."""
        usage = reported(self.replies, self.finished, marked_ttl=marked_ttl)
        model, premium = _routed(self.replies, route)
        if route_of(self.replies) is None and self.answered is not None:
            # a RouterChatModel's tier answered (or streamed) before the call failed: the reply
            # has no route yet (the router adds it on return), the tier run's metadata has
            model, premium = routed_model(self.answered), premium_model_of(self.answered)
        return {
            "reply_text": streamed_estimate(self.streamed, self.evented),
            "reported": usage,
            "model": model,
            "premium_model": premium,
        }


_totals: ContextVar[_RunningTotals | None] = ContextVar("tokenbudget_running_totals", default=None)
register_configure_hook(_totals, inheritable=False)  # joins every run started while it is set


def budget_call_active() -> bool:
    """Whether a :class:`BudgetMiddleware`'s model call is under way here: the caller is a
    middleware running inside it (listed after it in ``create_agent(middleware=[...])``), so
    model calls the caller sends down its own handler never pass through it."""
    return _totals.get() is not None


class StepCharges:
    """What this middleware charged during one agent model step (one run of the agent's model
    node): every call of the step that was charged, whether it returned or failed after
    streaming output (the provider bills that). A step makes several calls when an outer
    middleware retries it (``ModelRetryMiddleware``, ``ModelFallbackMiddleware``) or sends calls
    of its own down the chain (the summaries of a
    :class:`~langchain_tokenbudget.context_middleware.ContextWindowMiddleware`).

    LangChain keeps only the state update of a step's last call through the chain, so every call
    returns the run's totals with all of the step's charges (and its run-cap check counts them).
    """

    __slots__ = ("nanos", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.nanos = 0

    def add(self, charge: Charge) -> None:
        """Count ``charge`` (its tokens, and its cost: ``0`` when unpriced) in the step."""
        self.tokens += charge.usage.total_tokens
        self.nanos += 0 if charge.cost_usd is None else usd_to_nanos(charge.cost_usd)


_step: ContextVar[StepCharges | None] = ContextVar("tokenbudget_step_charges", default=None)


@contextmanager
def step_charges() -> Iterator[StepCharges]:
    """Open the scope of one model step whose internal calls go through the middleware chain
    (the step's record when LangGraph names no task for it, see :class:`_Steps`)."""
    token = _step.set(StepCharges())
    try:
        yield cast("StepCharges", _step.get())
    finally:
        _step.reset(token)


class _Steps:
    """The :class:`StepCharges` of the model steps under way, by LangGraph task id: unique to one
    run of the model node and the same for every call it makes, which no context variable is
    (LangChain runs each middleware call in a copy of the context). A step that ended is never
    read again. Past ``size`` steps, the least recently used is forgotten if no call of it came
    for ``idle_s`` seconds (a step still under way, streaming slowly or waiting for a retry, is
    kept); past ``most`` steps, the least recently used is forgotten whatever its age (a step's
    record is a few integers: ``most`` of them are a few MB)."""

    def __init__(self, size: int = 4096, *, idle_s: float = 600.0, most: int = 65_536) -> None:
        self.size, self.idle_s, self.most = size, idle_s, most
        self._lock = threading.Lock()
        self._steps: OrderedDict[str, StepCharges] = OrderedDict()
        self._used: dict[str, float] = {}  # task id -> when a call of it last came (monotonic)

    def of(self, request: ModelRequest[Any]) -> StepCharges:
        """The record of the step ``request`` belongs to. Outside a LangGraph task: the scope of
        :func:`step_charges` if one is open, else a record of this call alone."""
        info = getattr(request.runtime, "execution_info", None)
        key = getattr(info, "task_id", None)
        if not isinstance(key, str):
            return _step.get() or StepCharges()
        now = time.monotonic()
        with self._lock:
            step = self._steps.get(key)
            if step is None:
                step = self._steps[key] = StepCharges()
            else:
                self._steps.move_to_end(key)
            self._used[key] = now
            while len(self._steps) > self.size:
                oldest = next(iter(self._steps))
                if len(self._steps) <= self.most and now - self._used[oldest] < self.idle_s:
                    break  # still under way, maybe: kept
                del self._steps[oldest], self._used[oldest]
        return step


def _answered(
    response: ModelResponse[Any],
    totals: _RunningTotals,
    route: RouteDecision | None,
    marks: CacheMarks | None,
) -> dict[str, Any]:
    """``settle()``'s arguments for a call that returned ``response``: the usage it reported (or
    its text, to estimate), the model that answered a routed call, and a cache hit (an answer
    from :class:`~langchain_tokenbudget.TokenBudgetLLMCache` or LangChain's own cache called no
    model: nothing is charged for it, and the run's totals do not grow)."""
    replies = response.result
    model, premium = _routed(replies, route)
    hit = cache_hit_of(replies)
    return {
        "reported": reported(replies, totals.finished, marked_ttl=marks),
        "reply_text": reply_text(replies),
        "model": model,
        "premium_model": premium,
        "cache_hit": hit is not None,
        "saved_usd": None if hit is None else hit.saved_usd,
        "hit_recorded": hit is not None and hit.recorded,
    }


def _routed(replies: Sequence[BaseMessage], current: RouteDecision | None) -> tuple[str | None, str | None]:
    """The model that answered a routed call (``None``: the one reserved) and its premium model:
    from the reply's route (a ``RouterChatModel`` or an inner ``RoutingMiddleware``), else the
    route being made when this call is the routed one (``current``: an outer ``RoutingMiddleware``)."""
    route = route_of(replies)
    if route is None:
        return None, premium_model_of(current)
    answered = route.get("answered_by")
    return (answered if isinstance(answered, str) and answered else None), premium_model_of(route)


def _own_names(request: ModelRequest[Any]) -> tuple[object, ...]:
    """The names the request's chat model goes by itself (its calls report them)."""
    return tuple(getattr(request.model, k, None) for k in ("model_name", "model", "deployment_name"))


def _run_totals(state: Mapping[str, Any], step: StepCharges) -> tuple[int, int]:
    """Tokens and nano-USD this run was charged so far: the state's totals (the steps before this
    one) plus what the calls of this step were charged."""
    return state.get(TOKENS_KEY, 0) + step.tokens, state.get(NANOS_KEY, 0) + step.nanos


def _default_refusal(error: BudgetExceededError) -> str:
    return f"This request was not sent: it would exceed the {error.budget} budget."


def _config() -> Mapping[str, Any]:
    try:
        return get_config()
    except RuntimeError:  # called outside a graph run
        return {}


class BudgetMiddleware(AgentMiddleware[BudgetRunState, Any]):
    """Refuse an agent's model calls that would exceed a budget; record what each call cost.

    The payer comes from ``runtime.context`` (``create_agent(context_schema=...)``; attributes
    or keys ``feature``, ``user``/``user_id``, ``thread_id``...), else the run's config
    metadata, ``configurable`` and tags (``feature:x``, ``user:y``), else the defaults given
    here; an enclosing :func:`~tokenbudget_core.attribute` block wins (the ledger's rule).

    Args:
        ledger: The ledger that prices, limits and records the calls.
        model: The name to count and price the agent's own model with, when its chat model
            names no model the ledger's registry knows (a fake model, an alias, a deployment
            name); a reply that names a known model (``response_metadata["model_name"]``) is
            then charged on that model. A chat model with a known name (a summariser, a
            ``ModelFallbackMiddleware`` model) is charged on its own model whatever this says
            (default: the agent model's ``model_name``).
        feature: Default feature.
        user: Default user.
        max_output_tokens: Output tokens to reserve when neither the request's settings nor
            the model set ``max_tokens`` (default: the policy's, else the model's maximum).
        max_run_usd: Cap on one run's cost (worst case of the next call included).
        max_run_tokens: Cap on one run's tokens (worst case of the next call included).
        on_exceeded: ``"raise"`` :class:`~tokenbudget_core.errors.BudgetExceededError`, or
            ``"end"`` the run with an ``AIMessage`` explaining the refusal (its
            ``response_metadata["tokenbudget_refusal"]`` has the figures).
        refusal_message: The text of that message, or a function of the error returning it (a
            result that is not a string raises ``InvalidInputError`` when a refusal calls it).
        counter: Token counter (default: ``TokenCounter.for_model``).

    Raises:
        InvalidInputError: A bad option, named (a misspelt one, such as ``max_usd=``, with the
            closest option; one passed by position, with the keyword to pass it by).

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from tokenbudget_core.budgets import BudgetPolicy
        >>> ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100))
        >>> agent = create_agent(
        ...     GenericFakeChatModel(messages=iter(["Hi!"])),
        ...     middleware=[BudgetMiddleware(ledger, model="gpt-4o", user="u-42", on_exceeded="end")],
        ... )
        >>> print(agent.invoke({"messages": [("user", "hello")]})["messages"][-1].content)
        This request was not sent: it would exceed the user_daily_tokens (all features) budget.
    """

    state_schema = BudgetRunState

    def __init__(
        self,
        ledger: Ledger,
        *positional: Never,  # (refused: a type checker flags them, the constructor names them)
        model: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        max_output_tokens: int | None = None,
        max_run_usd: Decimal | int | str | None = None,
        max_run_tokens: int | None = None,
        on_exceeded: OnExceeded = "raise",
        refusal_message: Refusal | None = None,
        counter: SupportsTokenCount | None = None,
        **unknown: Any,
    ) -> None:
        options = option_names(BudgetMiddleware.__init__)
        refuse_positional("BudgetMiddleware", positional, options[1:], after="ledger")
        if unknown:  # a misspelt option (max_usd=...): named, with the closest one
            refuse_unknown("BudgetMiddleware", unknown, options)
        super().__init__()
        counts = {"max_output_tokens": max_output_tokens}
        check_budget_options(ledger, model=model, feature=feature, user=user, counts=counts)
        if on_exceeded not in ("raise", "end"):
            raise InvalidInputError("on_exceeded", f"unknown value {on_exceeded!r}", fix="'raise' or 'end'")
        if refusal_message is not None and not (
            isinstance(refusal_message, str) or callable(refusal_message)
        ):
            raise InvalidInputError(
                "refusal_message",
                "must be a string, or a function of the BudgetExceededError returning one",
                value=refusal_message,
            )
        if counter is not None and not isinstance(counter, SupportsTokenCount):
            raise InvalidInputError(
                "counter",
                "must have count() and count_messages()",
                value=counter,
                fix="pass a TokenCounter, e.g. TokenCounter.for_model('gpt-4o')",
            )
        self.ledger, self.model, self.feature, self.user = ledger, model, feature, user
        self.max_output_tokens, self.counter = max_output_tokens, counter
        try:
            self.run_budget = RunBudget(max_tokens=max_run_tokens, max_usd=max_run_usd)  # type: ignore[arg-type]
        except InvalidInputError as e:
            raise InvalidInputError(e.field.replace("max_", "max_run_", 1), e.problem, value=e.value) from e
        self.on_exceeded, self.refusal_message = on_exceeded, refusal_message
        self._counters: dict[str, SupportsTokenCount] = {}
        self._steps = _Steps()

    @property
    def max_run_usd(self) -> Decimal | None:
        """The per-run dollar cap (kept by the core's :class:`~tokenbudget_core.budgets.RunBudget`)."""
        return self.run_budget.max_usd

    @property
    def max_run_tokens(self) -> int | None:
        """The per-run token cap."""
        return self.run_budget.max_tokens

    # -- translation -----------------------------------------------------------------------------

    def _plan(
        self, request: ModelRequest[Any]
    ) -> tuple[
        dict[str, Any], SupportsTokenCount, list[Message], Tools, RouteDecision | None, CacheMarks | None
    ]:
        """The ``reserve()`` arguments but the count, the counter, the core messages (stand-ins for
        what the core cannot represent, see ``to_core_request``), the tools, the route when
        this call is the one an outer router is making (its model, whatever ``model=`` says; a
        call to another model inside the route, such as a summary, is not routed), and the TTLs
        the request's ``cache_control`` markers name."""
        attrs = {k: getattr(request.model, k, None) for k in (*MODEL_KEYS, *MAX_OUTPUT_KEYS, *CHOICE_KEYS)}
        named = first(str, ("model_name", "model"), attrs)
        route = routed_call(named, registry=self.ledger.registry)
        # model= names the agent's own model: it prices a chat model that names no model or one the
        # registry does not know (an alias, a deployment); any other chat model (a summariser, a
        # fallback model) is priced by its own name
        own = named is not None and named in self.ledger.registry
        model = route[1] if route is not None else named if own or self.model is None else self.model
        router = getattr(request.model, "router", None)
        if model is None and isinstance(router, TierRouter):  # a RouterChatModel: its worst case
            model = router.premium_model
        if model is None:
            raise InvalidInputError(
                "model", "the agent's model has no name", fix="pass model= to BudgetMiddleware"
            )
        counter = self.counter or self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = TokenCounter.for_model(model, registry=self.ledger.registry)
        config = _config()
        context = getattr(request.runtime, "context", None)
        payer = payer_from(
            context, config.get("metadata"), config.get("configurable"), tags=config.get("tags") or ()
        )
        out = first(int, MAX_OUTPUT_KEYS, request.model_settings, attrs)
        args = {
            "model": model,
            "max_output_tokens": self.max_output_tokens if out is None else out,
            "feature": payer["feature"] or self.feature,
            "user": payer["user"] or self.user,
            "conversation": payer["conversation"],
            "choices": first(int, CHOICE_KEYS, request.model_settings, attrs) or 1,
        }
        system = [request.system_message] if request.system_message is not None else []
        marks = cache_writes_in(
            [*system, *request.messages],
            [t for t in request.tools if isinstance(t, dict)],
            option=request.model_settings.get("cache_control"),
        )
        args["cache_writes"] = longest_ttl(marks)
        # (the structured-output schema the agent sends beside request.tools is input too; a
        # built-in tool goes as it is, to a counter that counts it: never read as a function)
        tools = counted_tools(counter, sent_tools(request), model=model)
        messages = to_core_request([*system, *request.messages])
        return args, counter, messages, tools, None if route is None else route[0], marks

    def _reported_model(
        self, replies: Sequence[BaseMessage], reserved: str, request: ModelRequest[Any]
    ) -> str | None:
        """The model the reply says answered (``response_metadata["model_name"]``), when the call
        was reserved on ``model=`` (its chat model named no model the registry knows) and the reply
        names another model the registry knows, priced as another model: that model is charged."""
        registry = self.ledger.registry
        named = first(str, ("model_name", "model"), {k: getattr(request.model, k, None) for k in MODEL_KEYS})
        if self.model is None or reserved != self.model or (named is not None and named in registry):
            return None
        for m in reversed(replies):
            name = first(str, ("model_name", "model"), getattr(m, "response_metadata", None) or {})
            if name is None or name not in registry:
                continue
            if reserved in registry and registry.get(name).canonical == registry.get(reserved).canonical:
                return None
            return name
        return None

    def _over_run_cap(
        self, r: Reservation, state: Mapping[str, Any], step: StepCharges
    ) -> TokenBudgetError | None:
        """The per-run cap this call's worst case would break, if any (the core's RunBudget decides)."""
        tokens, nanos = _run_totals(state, step)
        try:
            self.run_budget.check(r, tokens_used=tokens, usd_used=nanos_to_usd(nanos))
        except (BudgetExceededError, UnpricedModelError) as e:
            return e
        return None

    def _refused(
        self, error: BudgetExceededError, state: Mapping[str, Any], step: StepCharges
    ) -> ExtendedModelResponse[Any]:
        if self.on_exceeded == "raise":
            raise error
        text = self.refusal_message or _default_refusal
        if not isinstance(text, str):
            text = text(error)
            if not isinstance(text, str):  # a function's result can only be checked once it is called
                raise InvalidInputError(
                    "refusal_message",
                    f"the function returned {type(text).__name__}, not a string",
                    value=text,
                    fix="return the refusal text as a str (the error has budget, limit, used, requested)",
                ) from error
        figures = {
            k: str(getattr(error, k)) for k in ("budget", "scope", "limit", "used", "requested", "step")
        }
        message = AIMessage(text, response_metadata={"tokenbudget_refusal": figures})
        tokens, nanos = _run_totals(state, step)
        update = {"jump_to": "end", TOKENS_KEY: tokens, NANOS_KEY: nanos}
        return ExtendedModelResponse(
            model_response=ModelResponse(result=[message]), command=Command(update=update)
        )

    @staticmethod
    def _charged(state: Mapping[str, Any], step: StepCharges, charge: Charge | None) -> Command[Any]:
        """The run's totals after ``charge``, which the step keeps (see :class:`StepCharges`;
        ``None``: nothing charged, a cache hit its cache recorded)."""
        if charge is not None:
            step.add(charge)
        run_tokens, run_nanos = _run_totals(state, step)
        return Command(update={TOKENS_KEY: run_tokens, NANOS_KEY: run_nanos})

    # -- hooks -----------------------------------------------------------------------------------

    def before_agent(self, state: BudgetRunState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Start the run's totals from zero: the agent got new input (a resume does not run this)."""
        if state.get(TOKENS_KEY) or state.get(NANOS_KEY):  # left by the thread's previous run
            return {TOKENS_KEY: 0, NANOS_KEY: 0}
        return None

    async def abefore_agent(self, state: BudgetRunState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async twin of :meth:`before_agent`."""
        return self.before_agent(state, runtime)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """Reserve, call the model, commit its usage; a failed call is released, or charged an
        estimate when it had streamed output before it failed.

        Raises:
            BudgetExceededError: A budget or run cap would be exceeded (``on_exceeded="raise"``).
            UnpricedModelError: The model has no price and a dollar budget applies.
            InvalidInputError: ``refusal_message`` is a function that returned something other
                than a string (checked when a refusal calls it).
        """
        args, counter, messages, tools, route, marks = self._plan(request)
        state, step = cast("Mapping[str, Any]", request.state), self._steps.of(request)
        n = add_file_tokens(counter.count_messages(messages, tools), messages)
        try:
            reservation = self.ledger.reserve(**args, input_tokens=int(n))
            if (refusal := self._over_run_cap(reservation, state, step)) is not None:
                self.ledger.release(reservation)
                raise refusal
        except BudgetExceededError as e:
            return self._refused(e, state, step)
        totals = _RunningTotals()
        token = _totals.set(totals)
        try:
            with middleware_call(self.ledger, (args["model"], *_own_names(request))):
                response = handler(request)
        except BaseException as error:  # the ledger's rule: released if nothing came back, else estimated
            found = totals.settle_args(route, marks)
            found["model"] = found["model"] or self._reported_model(totals.replies, args["model"], request)
            failed = not may_have_been_billed(error)  # a call cut off once sent is billed all the same
            if charge := self.ledger.settle(reservation, failed=failed, counter=counter, **found):
                step.add(charge)  # the step's next call (a retry, a fallback) counts it
            raise
        finally:
            _totals.reset(token)
        found = _answered(response, totals, route, marks)
        found["model"] = found["model"] or self._reported_model(response.result, args["model"], request)
        charge = self.ledger.settle(reservation, counter=counter, **found)
        return ExtendedModelResponse(model_response=response, command=self._charged(state, step, charge))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """Async twin of :meth:`wrap_model_call` (counting and ledger calls awaited)."""
        args, counter, messages, tools, route, marks = self._plan(request)
        state, step = cast("Mapping[str, Any]", request.state), self._steps.of(request)
        count = getattr(counter, "acount_messages", None)
        n = await count(messages, tools) if count else counter.count_messages(messages, tools)
        n = add_file_tokens(n, messages)
        try:
            reservation = await self.ledger.areserve(**args, input_tokens=int(n))
            if (refusal := self._over_run_cap(reservation, state, step)) is not None:
                await self.ledger.arelease(reservation)
                raise refusal
        except BudgetExceededError as e:
            return self._refused(e, state, step)
        totals = _RunningTotals()
        token = _totals.set(totals)
        try:
            with middleware_call(self.ledger, (args["model"], *_own_names(request))):
                response = await handler(request)
        except BaseException as error:  # the ledger's rule: released if nothing came back, else estimated
            found = totals.settle_args(route, marks)
            found["model"] = found["model"] or self._reported_model(totals.replies, args["model"], request)
            failed = not may_have_been_billed(error)
            if charge := await self.ledger.asettle(reservation, failed=failed, counter=counter, **found):
                step.add(charge)  # the step's next call (a retry, a fallback) counts it
            raise
        finally:
            _totals.reset(token)
        found = _answered(response, totals, route, marks)
        found["model"] = found["model"] or self._reported_model(response.result, args["model"], request)
        charge = await self.ledger.asettle(reservation, counter=counter, **found)
        return ExtendedModelResponse(model_response=response, command=self._charged(state, step, charge))
