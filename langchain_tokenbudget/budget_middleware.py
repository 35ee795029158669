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
:class:`~langchain_tokenbudget.TokenBudgetLLMCache` lookup of the model call is scoped and
recorded on the payer the middleware charges (with the run's tenant: ``tokenbudget_tenant`` /
``tenant`` metadata, a ``tenant:x`` tag), claimed for the call's run as a budget handler claims
its runs, so one user's cached answer is never served to another; that payer is not put in
force, so a second ledger's callback handler still charges its own. A call the budget refuses
(from the ladder's ``cache_only`` step, or past a limit) is still answered from the model's
``TokenBudgetLLMCache``: a hit is served at $0, a miss is refused (``on_exceeded``) before
anything is sent, and a model call nothing is sure to look such a cache up for (``cache=False``,
LangChain's own cache, a streaming ``stream()``) is refused at its start
(:func:`~langchain_tokenbudget.llm_cache.scoped_runs`).

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
model. Either way the ledger records what routing saved against the premium tier. A tier
attempt that failed once its request went out (a read timeout, a stream cut off after output:
:func:`~tokenbudget_core.failures.may_have_been_billed`) before its fallback answered, inside a
``RouterChatModel`` or an inner ``RoutingMiddleware``, is billed: it is charged its flagged
estimate (its counted input plus the text it streamed) on its own model, under a request id
derived from the call's (``<id>/attempt-<n>``), and counted in the run's caps; so is every billed
attempt of a call whose attempts all failed, and a billed attempt a retry inside the middleware's
call (an inner ``ModelRetryMiddleware``) made before the one that answered. A call whose own
attempts all failed is settled as a failed call even when it returns: the reply an inner
``ModelRetryMiddleware`` makes of the error (its default ``on_failure="continue"``) was written
by no model and is charged nothing (each billed attempt is charged once, an attempt never sent
nothing). Only the routed call itself is routed: a call to another model made inside the route
(the summaries of a :class:`~langchain_tokenbudget.context_middleware.ContextWindowMiddleware`,
which run with no route, or a middleware's own guard call) is charged on its own model, with no
routing recorded; so is a call to a fallback model (``ModelFallbackMiddleware``): ``model=``
prices only a chat model that names no model the registry knows.

Only the request's own model runs are this middleware's (the rule the handler reads,
:func:`~langchain_tokenbudget.budget_callback.left_to_middleware`: a run naming one of the
request model's names, or none, a router's tier run, the call an inner route makes): another
model's call made inside the model call (a guard model a chat model asks first, an inner
middleware's own call) never supplies the call's usage nor its estimate; a
:class:`~langchain_tokenbudget.budget_callback.BudgetCallbackHandler` charges it.

Put it last in ``middleware=[...]`` (innermost): it then sees the request exactly as sent,
after trimming or summarising middleware, and reserves every retry. Listed before a middleware
that swaps ``request.model`` (``ModelFallbackMiddleware``, ``ModelRouterMiddleware``, a dynamic
model), it reserves on the request's model and charges the model that answered (the reply whose
run answered the call: its ``response_metadata["model_name"]``, else the run's model name, when
the registry knows it), once: when a handler of the ledger charged that run already, the
reservation is released and the handler's charge counted in the run's caps. A
:class:`~langchain_tokenbudget.budget_callback.BudgetCallbackHandler` of the same ledger in the
run's callbacks leaves the model call this middleware charges to it (the middleware marks the
call while it is made): the call is charged once; the handler charges only the calls the
middleware does not (another model's, made inside or outside the agent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
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

from tokenbudget_core.attribution import Attribution, charged_attribution
from tokenbudget_core.budgets import RunBudget
from tokenbudget_core.counting import (
    SupportsTokenCount,
    TokenCounter,
    add_file_tokens,
    check_tool_list,
    countable_tools,
)
from tokenbudget_core.errors import (
    BudgetExceededError,
    InvalidInputError,
    TokenBudgetError,
    UnpricedModelError,
    fresh_refusal,
    option_names,
    refuse_positional,
    refuse_unknown,
)
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.ledger import Charge, Ledger, Reservation, check_budget_options
from tokenbudget_core.messages import Message
from tokenbudget_core.money import nanos_to_usd, usd_to_nanos
from tokenbudget_core.prompt_caching import CacheMarks, longest_ttl
from tokenbudget_core.response_cache import answering_model
from tokenbudget_core.routing import RouteDecision, TierRouter, premium_model_of, routed_call
from tokenbudget_core.routing import routed_model as routed_model_now
from tokenbudget_core.streams import cut_off_usage
from tokenbudget_core.usage import Usage

from . import _need_agents
from ._bridge import counted_tools, provider_format_tools, sent_tools
from .budget_callback import (
    CHOICE_KEYS,
    MAX_OUTPUT_KEYS,
    MODEL_KEYS,
    ROUTE_KEY,
    MiddlewareCall,
    Tools,
    cache_hit_of,
    cache_writes_in,
    first,
    is_router_run,
    left_to_middleware,
    middleware_call,
    payer_from,
    reply_text,
    reported,
    route_of,
    routed_model,
    running_total,
    stream_event_text,
    streamed_estimate,
    tenant_of,
)
from .llm_cache import cache_in_use, scoped_runs
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

logger = logging.getLogger("tokenbudget.langchain")

TOKENS_KEY = "tokenbudget_run_tokens"
NANOS_KEY = "tokenbudget_run_nanos"
OnExceeded = Literal["raise", "end"]
Refusal = str | Callable[[BudgetExceededError], str]


class BudgetRunState(AgentState[Any]):
    """The agent state plus what this run's model calls were charged: checkpointed with the
    thread, so a run resumed after an interrupt goes on counting; reset when a run starts."""

    tokenbudget_run_tokens: NotRequired[Annotated[int, PrivateStateAttr]]
    tokenbudget_run_nanos: NotRequired[Annotated[int, PrivateStateAttr]]


@dataclasses.dataclass(slots=True)
class _Attempt:
    """One model run made inside the middleware's call."""

    own: bool
    """The request's own model answering (the rule the handlers read, ``left_to_middleware``):
    charged by the middleware; else another model's call made inside it (a guard, a middleware's
    own call, a model a middleware further in swapped in)."""
    model: str | None
    """The model the run names (``None``: none)."""
    route: Mapping[str, Any] | None = None
    """A ``RouterChatModel`` tier run's route (its run metadata)."""
    forced: tuple[str, str | None] | None = None
    """The model and premium model of the route in force (an inner ``RoutingMiddleware``), when
    this run is the call it is making."""
    inputs: Any = None
    """The messages (or prompts) the run was started with: a failed attempt's estimate counts them."""
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    streamed: list[str] = dataclasses.field(default_factory=list)
    evented: list[str] = dataclasses.field(default_factory=list)
    total: dict[str, Any] | None = None
    """The latest running total of a Claude stream (what it reported, not LangChain's sum)."""
    replies: list[BaseMessage] | None = None
    """Its reply, once it ended (``None``: not ended, or failed)."""
    error: BaseException | None = None
    ended: int = 0
    """The order it ended in (``0``: not yet)."""

    def charged_on(self) -> tuple[str | None, str | None]:
        """The model this run is charged on (``None``: the one reserved) and its premium model."""
        if self.route is not None:
            return routed_model(self.route), premium_model_of(self.route)
        if self.forced is not None:
            return self.forced
        return None, None

    def billed_failure(self) -> bool:
        """It failed (or was left open by a call that failed: a cancelled task's run gets no
        error) after its request went out: the provider bills it (``may_have_been_billed``, or
        output streamed before it broke off)."""
        if self.streamed or self.evented:
            return True
        return self.error is not None and may_have_been_billed(self.error)


class _RunningTotals(BaseCallbackHandler):
    """Watches the model runs made inside one model call (it joins every run started while the
    call is made), keeping the request's own ones apart (:func:`left_to_middleware`, the rule a
    handler of the ledger reads to leave them to the middleware): of each, the latest running
    total of a Claude stream, its reply (what a call the agent fails afterwards, e.g. on
    structured output, was billed for) or its error, and the text (and tool-call arguments)
    streamed so far, what a call that breaks off mid-stream is estimated from. Another model's
    run (a guard model asked inside the call, a middleware's own call) never lends its usage to
    the call; the reply of one a middleware further in swapped in is kept to spot it answering."""

    run_inline = True

    def __init__(self, names: frozenset[str], registry: Any) -> None:
        self.names, self.registry = names, registry
        self.attempts: dict[UUID, _Attempt] = {}
        self._ends = 0

    def _started(self, serialized: Any, inputs: Any, run_id: UUID, metadata: Any, kwargs: Any) -> None:
        if is_router_run(kwargs):  # a RouterChatModel's own run: its tier run inside is the call
            return
        meta = metadata if isinstance(metadata, Mapping) else {}
        params = kwargs.get("invocation_params")
        params = params if isinstance(params, Mapping) else {}
        own = left_to_middleware(
            self.names, serialized, {"invocation_params": params, "metadata": meta}, self.registry
        )
        built = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
        model = first(str, MODEL_KEYS, params, built if isinstance(built, Mapping) else {})
        model = model or first(str, ["ls_model_name"], meta)  # as the handler reads a run's model
        attempt = _Attempt(own=own, model=model, inputs=inputs, params=params)
        if isinstance(route := meta.get(ROUTE_KEY), Mapping):
            attempt.route = route
        elif own and model is not None and routed_model_now() is not None:
            found = routed_call(model, registry=self.registry)
            if found is not None:
                attempt.forced = (found[1], premium_model_of(found[0]))
        self.attempts[run_id] = attempt

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
    ) -> None:
        self._started(serialized, messages, run_id, metadata, kwargs)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
    ) -> None:
        self._started(serialized, prompts, run_id, metadata, kwargs)

    def on_stream_event(self, event: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attempt = self.attempts.get(run_id)
        if attempt is not None and attempt.own and (text := stream_event_text(event)):
            attempt.evented.append(text)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        attempt = self.attempts.get(run_id)
        if attempt is None:
            return
        if (total := running_total(chunk)) is not None:  # (any run's: one swapped in may answer)
            attempt.total = total
        if not attempt.own:  # another model's text never stands in for the call's
            return
        if isinstance(token, str) and token:
            attempt.streamed.append(token)
        message = getattr(chunk, "message", None)
        for call in getattr(message, "tool_call_chunks", None) or ():
            if isinstance(args := call.get("args"), str):
                attempt.streamed.append(args)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        attempt = self.attempts.get(run_id)
        if attempt is None:
            return
        self._ends += 1
        attempt.ended = self._ends
        attempt.replies = [
            m
            for generations in response.generations
            for g in generations
            if isinstance(m := getattr(g, "message", None), BaseMessage)
        ]

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        attempt = self.attempts.get(run_id)
        if attempt is None:
            return
        self._ends += 1
        attempt.ended, attempt.error = self._ends, error

    # -- what the call is charged ----------------------------------------------------------------

    def answering(self, result: Sequence[BaseMessage] | None) -> tuple[UUID, _Attempt] | None:
        """The run whose reply the call returns (``result``; ``None``: the call failed, the last of
        its own runs that answered, what the provider billed): the request's own run that ended
        last with a reply, unless ``result`` is the reply of another model's run (a model a
        middleware further in swapped in answered)."""
        ids = {id(m) for m in result or ()} | {
            m.id for m in result or () if isinstance(m, AIMessage) and m.id
        }
        answered = [(k, a) for k, a in self.attempts.items() if a.replies is not None]
        if result is not None:
            matching = [
                (k, a) for k, a in answered if any(id(m) in ids or m.id in ids for m in a.replies or ())
            ]
            if matching and not any(a.own for _, a in matching):
                return max(matching, key=lambda ka: ka[1].ended)
        own = [(k, a) for k, a in answered if a.own]
        return max(own, key=lambda ka: ka[1].ended) if own else None

    def failed_own(self, *, open_too: bool) -> list[tuple[UUID, _Attempt]]:
        """The request's own runs that failed, in the order they ended; ``open_too``: and, last,
        those a failed call left open (a cancelled task's run, which LangChain never ends)."""
        out = [(k, a) for k, a in self.attempts.items() if a.own and a.error is not None]
        out.sort(key=lambda ka: ka[1].ended)
        if open_too:
            out += [(k, a) for k, a in self.attempts.items() if a.own and not a.ended]
        return out

    def settle_args(
        self, route: RouteDecision | None, marked_ttl: CacheMarks | None, last: _Attempt | None
    ) -> dict[str, Any]:
        """``settle()``'s arguments for a call that failed: the usage its own run that answered
        reported (the provider billed it), else ``None`` and the text ``last`` (its own run that
        failed last) streamed; the model that run is charged on (a router's tier)."""
        found = self.answering(None)
        if found is not None:
            answer = found[1]
            replies = answer.replies or ()
            usage = reported(replies, [answer.total] if answer.total else [], marked_ttl=marked_ttl)
            model, premium = _routed(replies, route)
            if route_of(answer.replies or ()) is None and answer.charged_on()[0] is not None:
                # a RouterChatModel's tier answered before the call failed: the reply has no
                # route yet (the router adds it on return), the tier run's metadata has
                model, premium = answer.charged_on()
            text = reply_text(replies) if usage is None else ""
            return {"reply_text": text, "reported": usage, "model": model, "premium_model": premium}
        model, premium = (None, premium_model_of(route)) if last is None else last.charged_on()
        if last is not None and model is None:
            premium = premium_model_of(route)
        text = "" if last is None else streamed_estimate(last.streamed, last.evented)
        return {"reply_text": text, "reported": None, "model": model, "premium_model": premium}


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
    answer: _Attempt | None,
    route: RouteDecision | None,
    marks: CacheMarks | None,
) -> dict[str, Any]:
    """``settle()``'s arguments for a call that returned ``response``: the usage it reported (a
    Claude stream's: the latest running total of the run that answered, ``answer``, not
    LangChain's sum of its chunks; never another model's run made inside the call) or its text,
    to estimate, the model that answered a routed call, and a cache hit (an answer from
    :class:`~langchain_tokenbudget.TokenBudgetLLMCache` or LangChain's own cache called no
    model: nothing is charged for it, and the run's totals do not grow)."""
    replies = response.result
    model, premium = _routed(replies, route)
    hit = cache_hit_of(replies)
    totals = [answer.total] if answer is not None and answer.total is not None else []
    return {
        "reported": reported(replies, totals, marked_ttl=marks),
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


def _names(model: str, request: ModelRequest[Any]) -> frozenset[str]:
    """The names of the runs a call charges (the model it is priced on, the request model's own)."""
    return frozenset(n for n in (model, *_own_names(request)) if isinstance(n, str) and n)


def _failures(
    totals: _RunningTotals, *, answered: bool = False
) -> tuple[list[tuple[int, _Attempt]], _Attempt | None]:
    """The call's own runs that failed once their request went out, to charge one by one (each
    numbered, for its request id), and, for a call that failed (``answered=False``) with no own
    run that answered, the last one that failed, which settles the call's reservation."""
    failed = totals.failed_own(open_too=not answered)
    last = failed[-1][1] if not answered and failed and totals.answering(None) is None else None
    return [(i, a) for i, (_, a) in enumerate(failed, 1) if a is not last and a.billed_failure()], last


def _replies(totals: _RunningTotals) -> list[BaseMessage]:
    """The reply of the call's own run that answered before the call failed (none: empty)."""
    found = totals.answering(None)
    return [] if found is None else list(found[1].replies or ())


def _own_names(request: ModelRequest[Any]) -> tuple[object, ...]:
    """The names the request's chat model goes by itself (its calls report them)."""
    return tuple(getattr(request.model, k, None) for k in ("model_name", "model", "deployment_name"))


def _run_totals(state: Mapping[str, Any], step: StepCharges) -> tuple[int, int]:
    """Tokens and nano-USD this run was charged so far: the state's totals (the steps before this
    one) plus what the calls of this step were charged."""
    return state.get(TOKENS_KEY, 0) + step.tokens, state.get(NANOS_KEY, 0) + step.nanos


def _payer_of(args: Mapping[str, Any]) -> Attribution:
    """The payer a model run's ``TokenBudgetLLMCache`` lookup is scoped and recorded under: the
    one the ledger reserves for (an ``attribute()`` block's ids win over the run's, as in the
    ledger), with the tenant the run names (``tokenbudget_tenant`` / ``tenant`` metadata, a
    ``tenant:x`` tag) unless a block names one (:func:`~.llm_cache.scoped_runs`: without it,
    one user's cached answer would be served to another).

    Raises:
        InvalidInputError: A tenant id the ledger refuses, named ``metadata.<key>``.
    """
    config = _config()
    return charged_attribution(
        tenant=tenant_of(config.get("metadata") or {}, config.get("tags") or ()),
        feature=args["feature"],
        user=args["user"],
        conversation=args["conversation"],
    )


def _default_refusal(error: BudgetExceededError) -> str:
    return f"This request was not sent: it would exceed the {error.budget} budget."


def _config() -> Mapping[str, Any]:
    try:
        return get_config()
    except RuntimeError:  # called outside a graph run
        return {}


def run_payer(request: ModelRequest[Any], *, feature: str | None, user: str | None) -> dict[str, str | None]:
    """The feature, user and conversation of the agent run making ``request`` (its
    ``runtime.context``, metadata, ``configurable`` and tags: :func:`payer_from`), the middleware's
    own ``feature`` / ``user`` where the run names none."""
    config = _config()
    payer = payer_from(
        getattr(request.runtime, "context", None),
        config.get("metadata"),
        config.get("configurable"),
        tags=config.get("tags") or (),
    )
    return {
        "feature": payer["feature"] or feature,
        "user": payer["user"] or user,
        "conversation": payer["conversation"],
    }


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
        payer = run_payer(request, feature=self.feature, user=self.user)
        out = first(int, MAX_OUTPUT_KEYS, request.model_settings, attrs)
        args = {
            "model": model,
            "max_output_tokens": self.max_output_tokens if out is None else out,
            "feature": payer["feature"],
            "user": payer["user"],
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

    def _from_cache(
        self,
        reply: ModelResponse[Any],
        args: Mapping[str, Any],
        route: RouteDecision | None,
        input_tokens: int,
        counter: SupportsTokenCount,
    ) -> ModelResponse[Any]:
        """The reply to a call the budget refused, made cache-only (:func:`scoped_runs`): a hit
        the cache recorded in no ledger is recorded here. A reply that is no hit was sent after
        all (a model run that did not see the guard: a thread started without the context): it
        is charged as it reports (else its estimate) and logged, never lost."""
        found = _answered(reply, None, route, None)
        payer = {k: args[k] for k in ("feature", "user", "conversation")}
        model = found["model"] or args["model"]
        if found["cache_hit"]:
            if not found["hit_recorded"]:
                self.ledger.record(
                    Usage(requests=1), model=model, cache_hit=True, saved_usd=found["saved_usd"], **payer
                )
            return reply
        reported = found["reported"]
        usage = (
            reported.with_counted_input(input_tokens)
            if reported is not None
            else Usage(input_tokens=input_tokens, output_tokens=int(counter.count(found["reply_text"])))
        )
        logger.warning(
            "a model call the budget refused was sent (its run did not see the middleware's guard: "
            "call the model in the agent's context, not in a thread started without it); charged %s",
            usage,
        )
        self.ledger.record(usage, model=model, premium_model=found["premium_model"], **payer)
        return reply

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

    def _counter_of(self, model: str) -> SupportsTokenCount:
        counter = self.counter or self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = TokenCounter.for_model(model, registry=self.ledger.registry)
        return counter

    def _attempt_plan(
        self, reservation: Reservation, attempt: _Attempt
    ) -> tuple[str, str | None, SupportsTokenCount, list[list[Message]], list[str], Tools]:
        """What a failed attempt is estimated from: the model it is charged on (a router's tier,
        else the one reserved), its premium model, that model's counter, the messages (or a
        completion model's prompts) and the tools (its response-format schema included) the
        run was started with, as the callback handler counts a run."""
        model, premium = attempt.charged_on()
        model = model or reservation.model
        counter = self._counter_of(model)
        inputs = attempt.inputs if isinstance(attempt.inputs, Sequence) else ()
        batches = [to_core_request(b) for b in inputs if isinstance(b, list)]
        prompts = [p for p in inputs if isinstance(p, str)]
        sent = attempt.params.get("tools")
        sent = [*check_tool_list(sent), *provider_format_tools(attempt.params.get("response_format"))]
        tools = countable_tools(counter, model, sent) if sent else None
        return model, premium, counter, batches, prompts, tools or None

    def _record_attempt(
        self,
        reservation: Reservation,
        attempt: _Attempt,
        i: int,
        plan: tuple[str, str | None, SupportsTokenCount],
        input_tokens: int,
    ) -> dict[str, Any]:
        """``Ledger.record()``'s arguments for a failed attempt the provider billed: the ledger's
        estimate of a call cut off once sent (its counted input plus the text it streamed,
        flagged), under a request id derived from the call's, on its own model and payer."""
        model, premium, counter = plan
        text = streamed_estimate(attempt.streamed, attempt.evented)
        return {
            "usage": cut_off_usage(input_tokens, text, counter=counter),
            "model": model,
            "premium_model": premium,
            "feature": reservation.feature,
            "user": reservation.user,
            "conversation": reservation.conversation,
            "request_id": f"{reservation.request_id}/attempt-{i}",
        }

    def _charge_attempt(self, reservation: Reservation, attempt: _Attempt, i: int, step: StepCharges) -> None:
        """Charge an attempt of the call that failed once its request went out before another
        answered (a routed tier that fell back, a retry further in), and count it in the step:
        the one reservation is settled by the run that answered. Logged, not raised: the call's
        own outcome (its reply, or its error) is what the caller gets."""
        try:
            model, premium, counter, batches, prompts, tools = self._attempt_plan(reservation, attempt)
            n = sum(int(add_file_tokens(counter.count_messages(b, tools), b)) for b in batches)
            n += sum(int(counter.count(p)) for p in prompts)
            record = self._record_attempt(reservation, attempt, i, (model, premium, counter), n)
            step.add(self.ledger.record(**record))
        except TokenBudgetError as e:
            logger.warning("request %s: a billed attempt could not be charged: %s", reservation.request_id, e)

    async def _acharge_attempt(
        self, reservation: Reservation, attempt: _Attempt, i: int, step: StepCharges
    ) -> None:
        """Async twin of :meth:`_charge_attempt` (counting and the record awaited)."""
        try:
            model, premium, counter, batches, prompts, tools = self._attempt_plan(reservation, attempt)
            count = getattr(counter, "acount_messages", None)
            n = 0
            for b in batches:
                got = await count(b, tools) if count else counter.count_messages(b, tools)
                n += int(add_file_tokens(got, b))
            n += sum(int(counter.count(p)) for p in prompts)
            record = self._record_attempt(reservation, attempt, i, (model, premium, counter), n)
            step.add(await self.ledger.arecord(**record))
        except TokenBudgetError as e:
            logger.warning("request %s: a billed attempt could not be charged: %s", reservation.request_id, e)

    def _swapped_args(
        self,
        answer: tuple[UUID, _Attempt],
        marked: MiddlewareCall,
        response: ModelResponse[Any],
        marks: CacheMarks | None,
    ) -> tuple[bool, Charge | None, dict[str, Any]]:
        """How to settle a call another model answered, one a middleware listed after this one
        swapped in (``ModelFallbackMiddleware``, ``ModelRouterMiddleware``, a dynamic model):
        whether a :class:`~langchain_tokenbudget.budget_callback.BudgetCallbackHandler` of the
        ledger charged its run already (then the reservation is released and that charge counted
        in the step: charged once), and else ``settle()``'s arguments, on the model that answered
        (the reply's ``response_metadata["model_name"]``, else the run's own name, when the
        registry knows it)."""
        run_id, attempt = answer
        if run_id in marked.taken:
            return True, marked.taken[run_id], {}
        found = _answered(response, attempt, None, marks)
        registry = self.ledger.registry
        names = (
            first(str, ("model_name", "model"), getattr(m, "response_metadata", None) or {})
            for m in reversed(response.result)
        )
        reported = next((n for n in names if n is not None and n in registry), None)
        requested = attempt.model if attempt.model is not None and attempt.model in registry else reported
        if found["model"] is None and requested is not None:  # the core's rule: the reply's name, known
            found["model"] = answering_model(requested, reported=reported, registry=registry).model
        return False, None, found

    def _swapped(
        self,
        reservation: Reservation,
        answer: tuple[UUID, _Attempt],
        marked: MiddlewareCall,
        response: ModelResponse[Any],
        counter: SupportsTokenCount,
        marks: CacheMarks | None,
    ) -> Charge | None:
        taken, charge, found = self._swapped_args(answer, marked, response, marks)
        if taken:
            self.ledger.release(reservation)
            return charge
        return self.ledger.settle(reservation, counter=counter, **found)

    async def _aswapped(
        self,
        reservation: Reservation,
        answer: tuple[UUID, _Attempt],
        marked: MiddlewareCall,
        response: ModelResponse[Any],
        counter: SupportsTokenCount,
        marks: CacheMarks | None,
    ) -> Charge | None:
        taken, charge, found = self._swapped_args(answer, marked, response, marks)
        if taken:
            await self.ledger.arelease(reservation)
            return charge
        return await self.ledger.asettle(reservation, counter=counter, **found)

    @staticmethod
    def _unanswered(
        totals: _RunningTotals,
        answer: tuple[UUID, _Attempt] | None,
        response: ModelResponse[Any],
        route: RouteDecision | None,
        marks: CacheMarks | None,
    ) -> tuple[list[tuple[int, _Attempt]], bool, dict[str, Any]] | None:
        """How to settle a call that returned a reply no run of it produced, after its own runs
        all failed: a middleware further in made the reply up (``ModelRetryMiddleware``'s
        ``on_failure="continue"`` returns the error as an ``AIMessage``). Settled as a call that
        failed: the last own run that failed settles the reservation (its estimate when it was
        billed, else released: ``failed``), the others billed are charged one by one
        (``failed_runs``); never an estimate of a reply no model wrote. ``None``: a run answered,
        the call made no own run that failed, or the reply reports usage (a model did write it)."""
        if answer is not None:
            return None
        failed_runs, last = _failures(totals)
        if last is None:
            return None
        replied = _answered(response, None, route, marks)
        if replied["reported"] is not None or replied["cache_hit"]:
            return None
        return failed_runs, not last.billed_failure(), totals.settle_args(route, marks, last)

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
            if cache_in_use():  # a TokenBudgetLLMCache may still answer: a hit is served, a miss refused
                try:
                    with scoped_runs(_payer_of(args), fresh_refusal(e)):
                        reply = handler(request)
                except BudgetExceededError:
                    pass
                else:
                    return self._from_cache(reply, args, route, n, counter)
            return self._refused(e, state, step)
        names = _names(args["model"], request)
        totals = _RunningTotals(names, self.ledger.registry)
        token = _totals.set(totals)
        try:
            runs = scoped_runs(_payer_of(args)) if cache_in_use() else contextlib.nullcontext()
            with middleware_call(self.ledger, names) as marked, runs:
                response = handler(request)
        except BaseException as error:  # the ledger's rule: released if nothing came back, else estimated
            failed_runs, last = _failures(totals)
            found = totals.settle_args(route, marks, last)
            found["model"] = found["model"] or self._reported_model(_replies(totals), args["model"], request)
            failed = not may_have_been_billed(error)  # a call cut off once sent is billed all the same
            if charge := self.ledger.settle(reservation, failed=failed, counter=counter, **found):
                step.add(charge)  # the step's next call (a retry, a fallback) counts it
            for i, attempt in failed_runs:  # each attempt billed before (a tier that fell back)
                self._charge_attempt(reservation, attempt, i, step)
            raise
        finally:
            _totals.reset(token)
        answer = totals.answering(response.result)
        failed_runs, _ = _failures(totals, answered=True)
        if answer is not None and not answer[1].own:  # a model swapped in further in answered
            charge = self._swapped(reservation, answer, marked, response, counter, marks)
        elif (unanswered := self._unanswered(totals, answer, response, route, marks)) is not None:
            failed_runs, failed, found = unanswered  # no run made the reply: settled as a failure
            charge = self.ledger.settle(reservation, failed=failed, counter=counter, **found)
        else:
            found = _answered(response, None if answer is None else answer[1], route, marks)
            found["model"] = found["model"] or self._reported_model(response.result, args["model"], request)
            charge = self.ledger.settle(reservation, counter=counter, **found)
        for i, attempt in failed_runs:  # the attempts billed before the one that answered
            self._charge_attempt(reservation, attempt, i, step)
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
            if cache_in_use():
                try:
                    with scoped_runs(_payer_of(args), fresh_refusal(e)):
                        reply = await handler(request)
                except BudgetExceededError:
                    pass
                else:
                    return self._from_cache(reply, args, route, n, counter)
            return self._refused(e, state, step)
        names = _names(args["model"], request)
        totals = _RunningTotals(names, self.ledger.registry)
        token = _totals.set(totals)
        try:
            runs = scoped_runs(_payer_of(args)) if cache_in_use() else contextlib.nullcontext()
            with middleware_call(self.ledger, names) as marked, runs:
                response = await handler(request)
        except BaseException as error:  # the ledger's rule: released if nothing came back, else estimated
            failed_runs, last = _failures(totals)
            found = totals.settle_args(route, marks, last)
            found["model"] = found["model"] or self._reported_model(_replies(totals), args["model"], request)
            failed = not may_have_been_billed(error)
            if charge := await self.ledger.asettle(reservation, failed=failed, counter=counter, **found):
                step.add(charge)  # the step's next call (a retry, a fallback) counts it
            for i, attempt in failed_runs:
                await self._acharge_attempt(reservation, attempt, i, step)
            raise
        finally:
            _totals.reset(token)
        answer = totals.answering(response.result)
        failed_runs, _ = _failures(totals, answered=True)
        if answer is not None and not answer[1].own:
            charge = await self._aswapped(reservation, answer, marked, response, counter, marks)
        elif (unanswered := self._unanswered(totals, answer, response, route, marks)) is not None:
            failed_runs, failed, found = unanswered
            charge = await self.ledger.asettle(reservation, failed=failed, counter=counter, **found)
        else:
            found = _answered(response, None if answer is None else answer[1], route, marks)
            found["model"] = found["model"] or self._reported_model(response.result, args["model"], request)
            charge = await self.ledger.asettle(reservation, counter=counter, **found)
        for i, attempt in failed_runs:
            await self._acharge_attempt(reservation, attempt, i, step)
        return ExtendedModelResponse(model_response=response, command=self._charged(state, step, charge))
