"""LLM costs recorded from LlamaIndex's instrumentation events (record only, never enforce).

:class:`CostEventHandler` is a ``BaseEventHandler`` for the instrumentation dispatcher
(``llama_index.core.instrumentation``). It remembers each call's model from
``LLMChatStartEvent`` / ``LLMCompletionStartEvent`` and, on ``LLMChatEndEvent`` /
``LLMCompletionEndEvent``, charges the usage the provider reported in ``response.raw`` (or an
estimate flagged ``estimated``: the counted input, and the reply's text, thinking blocks and
tool calls counted as output) through ``ledger.record(...)``, with the call's span id as
request id. An event delivered twice (the handler on a dispatcher and on its parent) is
handled once.

**It cannot enforce a budget.** ``Dispatcher.event`` runs every handler inside
``except BaseException: pass``: whatever a handler raises, a
:class:`~tokenbudget_core.errors.BudgetExceededError` included, is dropped and the call goes
out. To refuse calls, use :class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler`
(the callback manager lets its exceptions through). Next to it, on the same ledger, a call is
charged once: a call whose LLM has a ``BudgetCallbackHandler`` of this handler's ledger on its
callback manager, or nested in such a call (a ``StructuredLLM``'s inner call), is left to that
handler, which charges it (a budget handler of another ledger charges that ledger only).
Because the dispatcher would swallow them silently, this handler catches its own errors and
logs them (logger ``llamaindex_tokenbudget.cost_event_handler``, level ERROR, with the figures
that were not recorded).

A stream that produced output and then failed, was cancelled or was abandoned by its consumer
(``ExceptionEvent``: an error, ``CancelledError``, ``GeneratorExit``) was sent: it is recorded
with the usage its last streamed response reported (a stream cut after OpenAI's closing usage
chunk), else as an estimate, the counted input and the text streamed so far. A routed call (a
``RoutedLLM`` tier call) is recorded with its premium model, so reports show what routing saved.
Calls that failed before producing anything (``SpanDropEvent``, an ``ExceptionEvent`` before the
first chunk) are not charged, unless they were cut off after the request may have gone out
(cancelled, timed out waiting, the connection dropped mid-answer:
:func:`~tokenbudget_core.failures.may_have_been_billed`): the provider bills those, and they are
recorded as the flagged estimate of their counted input. Nested LLM events (``CustomLLM.chat``
calling ``complete``, ``CustomLLM.astream_chat`` iterating ``stream_chat``) are one provider
call: only the innermost is recorded. A stream the garbage collector closes (abandoned inside a
reference cycle) is recorded a moment later by a worker thread
(:mod:`tokenbudget_core.finalizing`).

A call is recorded on the payer in force where it started (its ``attribute()`` block's feature,
user, conversation, tenant and :func:`~tokenbudget_core.attribution.overhead` mark, then the
handler's ``feature`` / ``user``), as ``BudgetCallbackHandler`` reserves it: a stream read or
closed in another ``attribute()`` block, thread or task is charged to whoever started it. The
provider call a lazily started stream makes (``CustomLLM.astream_chat`` calls ``stream_chat``
once it is iterated, maybe in the reader's block) is recorded as if it had started where the
call that returned the stream started: that call's ``attribute()`` block (maybe none) replaces
the reader's whole, then the handler's ``feature`` / ``user`` fill what it leaves unset (a
background job's stream read in bob's block is not charged to bob).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from types import FrameType
from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, ValidationError
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.span import SpanDropEvent  # type: ignore[attr-defined]

from tokenbudget_core.attribution import Attribution, current_attribution, in_force
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError, UnknownModelError, refuse_unknown
from tokenbudget_core.estimating import unknown_model_counter
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.finalizing import collecting, defer, start_worker
from tokenbudget_core.ledger import Ledger, check_budget_options, refuses_usage
from tokenbudget_core.routing import routed_model
from tokenbudget_core.streams import estimate_output_tokens
from tokenbudget_core.usage import Usage

from ._bridge import host_error
from .budget_callback import (
    BudgetCallbackHandler,
    caller_frame,
    calling_llm,
    calls_through_inner,
    count_input,
    enclosing,
    hands_over,
    mark_cache_answer,
    model_name,
    note_wrapper,
    payer_from,
    payer_with,
    reply_text,
    reported_usage,
    routed_premium_model,
)

__all__ = ["CostEventHandler"]

logger = logging.getLogger(__name__)

_STARTS = (LLMChatStartEvent, LLMCompletionStartEvent)
_PROGRESS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_ENDS = (LLMChatEndEvent, LLMCompletionEndEvent)
_FORGET_AFTER_SECONDS = 24 * 3600
_SEEN_EVENTS = 4096


_HANDLERS_LOCK = threading.Lock()
_HANDLERS: weakref.WeakValueDictionary[int, CostEventHandler] = weakref.WeakValueDictionary()
"""Every handler of this process (by id: a pydantic model is not hashable)."""


def note_cache_answer(served: bool, frame: FrameType | None = None) -> None:
    """Tell the open ``StructuredLLM`` call enclosing ``frame`` (default: the caller's; a
    ``CachedLLM`` looking a call up inside it, maybe through a ``RoutedLLM``) whether a response
    cache answered (``served``) or the call goes on to the LLM behind it: such a call whose inner
    calls were all answered by the cache made no provider call and is not recorded (the cache
    records the hit, as it does a direct hit). Any other enclosing call (an LLM that answers with
    its own call and asks a cached helper inside it) is left as it is: recorded."""
    frame = frame or caller_frame(1)
    with _HANDLERS_LOCK:
        handlers = list(_HANDLERS.values())
    mark_cache_answer(handlers, frame, served, key="span_id")


def charged_by_budget(llm: object, ledger: Ledger) -> bool:
    """Whether a call of ``llm`` (the LLM whose wrapper dispatched its start event) is charged by
    a :class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler` of ``ledger``: one is
    on its callback manager (LlamaIndex starts the callback event right after the dispatcher's)."""
    handlers = getattr(getattr(llm, "callback_manager", None), "handlers", None) or ()
    return any(isinstance(h, BudgetCallbackHandler) and h.ledger.shares_books_with(ledger) for h in handlers)


@dataclass(kw_only=True, slots=True)
class _Call:
    """One LLM call between its start and end events."""

    start: LLMChatStartEvent | LLMCompletionStartEvent
    payer: Attribution
    """Who pays: the attribution where the call started, the handler's ``feature`` / ``user``
    filling what it leaves unset (a stream may end in another block, thread or task)."""
    attribution: Attribution
    """The attribution in force where the call started, or, for a call nested in another, where
    that one started (a call nested in this one is recorded under it, not the block it starts in)."""
    started: float
    last: Any = None
    """The latest streamed response (for a stream abandoned half-way)."""
    delegated: bool = False
    through_inner: bool = False
    """A ``StructuredLLM``'s call (:func:`~llamaindex_tokenbudget.budget_callback.calls_through_inner`):
    the LLM it wraps makes its provider call, so a response cache answering that LLM's call
    leaves it none."""
    cache_hit: bool = False
    """A response cache answered a call this one made (:func:`note_cache_answer`; a
    ``StructuredLLM``'s call only)."""
    sent: bool = False
    """A call this one made went past a response cache to the LLM behind it."""
    premium_model: str | None = None
    """The routed call's premium model (when a router made the call)."""
    routed_model: str | None = None
    """The model a router sent the call to (it is recorded on it)."""
    left: bool = False
    """A ``BudgetCallbackHandler`` of the same ledger charges this call (on its LLM, or on the
    LLM of a call enclosing it): it is not recorded here."""
    llm: object = None
    """The LLM making the call (a call nested in this one is its provider call only when
    :func:`~llamaindex_tokenbudget.budget_callback.hands_over` says so)."""


class CostEventHandler(BaseEventHandler):
    """Record the cost of every LLM call the instrumentation dispatcher reports.

    Register it with ``get_dispatcher().add_event_handler(handler)`` (the root dispatcher sees
    every LLM); remove it with ``get_dispatcher().event_handlers.remove(handler)``. A call a
    :class:`~llamaindex_tokenbudget.budget_callback.BudgetCallbackHandler` of the same ledger
    charges (one on the LLM's callback manager, or on the LLM of a call enclosing it) is left to
    it: charged once.

    Args:
        ledger: The core ledger that prices and attributes, positionally or as ``ledger=``
            (``CostEventHandler(ledger)``, as ``BudgetCallbackHandler(ledger)``); the other
            options are keyword-only.
        model: The model to price with; default: the LLM's own ``model`` or ``metadata.model_name``.
        feature: The feature to charge, unless the ``attribute(...)`` block the call starts in
            names one.
        user: The user to charge, unless the ``attribute(...)`` block the call starts in names one.

    Raises:
        InvalidInputError: A bad option, named (an unknown one such as ``usr=``, ``ledger``
            not a :class:`~tokenbudget_core.ledger.Ledger`, ``model`` / ``feature`` / ``user``
            not a non-empty string).
        UnknownModelError: ``model`` is not in the ledger's registry.

    A call whose LLM names a model the registry does not know (and no ``model=`` was given)
    cannot be priced, and this handler cannot refuse it: it is recorded without a cost (its
    tokens, counted in reports' ``unpriced_requests``, never as $0; an estimate counts with
    :func:`~tokenbudget_core.estimating.unknown_model_counter`), and an ERROR is logged once per
    model. To price its later calls, register the model (``ledger.registry.register(name,
    provider=...)``, which makes it known, not priced) and give it a price:
    :func:`~tokenbudget_core.price_overrides.register_price` with a
    :class:`~tokenbudget_core.price_overrides.PriceOverride`, or a ``[prices."name"]`` table in
    ``$TOKENBUDGET_PRICES`` (or register it with ``canonical=`` a priced model it is billed as).

    Example:
        >>> from llama_index.core.instrumentation import get_dispatcher
        >>> from llama_index.core.llms import MockLLM
        >>> from tokenbudget_core.ledger import Ledger
        >>> ledger = Ledger("memory://")
        >>> handler = CostEventHandler(ledger=ledger, model="gpt-4o-mini")
        >>> get_dispatcher().add_event_handler(handler)
        >>> MockLLM(max_tokens=5).complete("Say hi").text
        'text text text text text'
        >>> get_dispatcher().event_handlers.remove(handler)
        >>> [row] = ledger.store.rollup([ledger.day()])
        >>> row.values["input_tokens"], row.values["output_tokens"], row.values["estimated"]
        (2, 5, 1)
    """

    ledger: Ledger = Field(description="The core ledger that prices and attributes.")
    model: str | None = Field(default=None, description="The model to price with (default: the LLM's).")
    feature: str | None = Field(default=None, description="The feature to charge.")
    user: str | None = Field(default=None, description="The user to charge.")
    _calls: dict[str, _Call] = PrivateAttr(default_factory=dict)
    _counters: dict[str, TokenCounter] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _seen: OrderedDict[str, None] = PrivateAttr(default_factory=OrderedDict)
    _unknown: set[str] = PrivateAttr(default_factory=set)

    model_config = ConfigDict(extra="forbid")  # (LlamaIndex's base ignores an unknown field)

    def __init__(self, ledger: Ledger | None = None, /, *more: object, **data: Any) -> None:
        if more:
            raise InvalidInputError(
                "args",
                f"CostEventHandler takes only the ledger positionally, got {1 + len(more)} arguments",
                fix="name the other options: CostEventHandler(ledger, model=..., feature=..., user=...)",
            )
        if ledger is not None:  # CostEventHandler(ledger), as BudgetCallbackHandler(ledger)
            if "ledger" in data:
                raise InvalidInputError(
                    "ledger", "is given twice (positionally and as ledger=)", fix="pass it once"
                )
            data["ledger"] = ledger
        refuse_unknown("CostEventHandler", data, list(type(self).model_fields))
        ledger = data.get("ledger")
        names = {key: data.get(key) for key in ("model", "feature", "user")}
        check_budget_options(ledger, counts={}, **names)  # an unknown model fails here, not at every call
        try:
            super().__init__(**data)
        except ValidationError as e:  # a value pydantic refuses
            raise host_error(e) from e
        with _HANDLERS_LOCK:
            _HANDLERS[id(self)] = self

    def payer(self) -> Attribution:
        """The payer a call made now is recorded on: the ``attribute()`` block in force, its ids
        first (outer payers win), then this handler's ``feature`` / ``user``. A
        :class:`~llamaindex_tokenbudget.cached_llm.CachedLLM` whose LLM has no budget handler
        naming a payer looks up, stores and records its hits and embedding overhead under it."""
        return payer_with(self.feature, self.user)

    @classmethod
    def class_name(cls) -> str:
        """The class name LlamaIndex serialises."""
        return "CostEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Track LLM start, progress and end events; record the cost at the end (errors are logged)."""
        if collecting():  # a stream the garbage collector closed, maybe inside a lock we need: later
            defer(self._handle_logged, event, None)
            return
        start_worker()  # for ends the garbage collector delivers (a forked child starts its own)
        self._handle_logged(event, caller_frame(2))  # the LLM wrapper that called Dispatcher.event

    def _handle_logged(self, event: BaseEvent, caller: FrameType | None) -> None:
        try:
            self._handle(event, caller)
        except Exception:
            logger.exception(
                "tokenbudget: the cost of LLM call %s (%s) was not recorded",
                event.span_id,
                event.class_name(),
            )

    def _handle(self, event: BaseEvent, caller: FrameType | None) -> None:
        with self._lock:  # one event delivered twice (handler on a dispatcher and its parent)
            if event.id_ in self._seen:
                return
            self._seen[event.id_] = None
            if len(self._seen) > _SEEN_EVENTS:
                self._seen.popitem(last=False)
        key = event.span_id or ""
        if isinstance(event, _STARTS):
            note_wrapper(caller)
            with self._lock:
                oldest = time.monotonic() - _FORGET_AFTER_SECONDS
                for stale in [k for k, c in self._calls.items() if c.started < oldest]:
                    del self._calls[stale]
                llm = calling_llm(caller)
                outer = enclosing(self._calls, caller.f_back if caller else None, key="span_id")
                if outer is not None and not hands_over(outer.llm, llm):
                    outer = None  # a call made inside another LLM's own call (a helper): its own
                left = (outer is not None and outer.left) or charged_by_budget(llm, self.ledger)
                if outer is None:
                    attribution = current_attribution()
                else:  # one provider call: the innermost event is recorded, as if it started
                    outer.delegated = True  # where the enclosing call did (a lazy stream's call)
                    attribution = outer.attribution
                self._calls[key] = _Call(
                    start=event,
                    payer=payer_from(attribution, self.feature, self.user),
                    attribution=attribution,
                    started=time.monotonic(),
                    premium_model=routed_premium_model(),
                    routed_model=routed_model(),
                    left=left,
                    through_inner=calls_through_inner(llm),
                    llm=llm,
                )
            return
        if isinstance(event, _PROGRESS):
            with self._lock:
                if key in self._calls:
                    self._calls[key].last = event.response
            return
        if not isinstance(event, (*_ENDS, ExceptionEvent, SpanDropEvent)):
            return
        with self._lock:
            call = self._calls.pop(key, None)
        if call is not None and (call.delegated or call.left or (call.cache_hit and not call.sent)):
            return  # another event's call (or, answered by a cache, none made), or a budget handler's
        if isinstance(event, SpanDropEvent):  # the call raised: not sent, unless it was cut off once sent
            # (the event carries the error's text only; it is sent from inside the dispatcher's
            # ``except`` block, where the error itself is the one being handled)
            if call is not None and may_have_been_billed(sys.exc_info()[1]):
                self._record(call, None, event.span_id or event.id_)  # the flagged estimate
            return
        if isinstance(event, ExceptionEvent):  # a stream ended by an error, a cancel or its consumer
            if call is not None and call.last is not None:  # it had produced output: it was sent
                self._record(call, call.last, event.span_id or event.id_)
            elif call is not None and may_have_been_billed(event.exception):  # cut off once sent
                self._record(call, None, event.span_id or event.id_)  # the flagged estimate
            return
        assert isinstance(event, _ENDS)
        if call is None:
            logger.warning(
                "tokenbudget: LLM call %s ended without a start event (handler added mid-call?); "
                "recording it with the handler's model",
                event.span_id,
            )
        self._record(call, event.response, event.span_id or event.id_)

    def _record(self, call: _Call | None, response: Any, request_id: str) -> None:
        """Record the usage ``response`` (the final one, or the last streamed before an
        interruption) reported, else an estimate: the counted input and its text."""
        start = call.start if call else None
        try:
            model = (call.routed_model if call else None) or model_name(
                start.model_dict if start else None, self.model
            )
        except InvalidInputError:  # recorded all the same, unpriced, under the LLM's class name
            named = start.model_dict.get("class_name") if start else None
            model = f"unnamed:{named if isinstance(named, str) and named else 'LLM'}"
        payer = call.payer if call else self.payer()
        where: dict[str, Any] = {
            "feature": payer.feature,
            "user": payer.user,
            "conversation": payer.conversation,
            "request_id": request_id,
            "premium_model": (call.premium_model if call else None) or routed_premium_model(response),
        }
        # The ledger charges the attribution in force: the start's, not the one the stream ends in.
        with in_force(payer):
            usage = reported_usage(response)
            if usage is not None and usage.input_tokens == 0:  # unreported: the counted input
                usage = usage.with_counted_input(self._counted_input(start, model))
            if usage is None or not self._charge(usage, model=model, **where):
                self._charge(self._estimate(start, response, model), model=model, **where)

    def _estimate(self, start: Any, response: Any, model: str) -> Usage:
        """The flagged estimate of a call: its counted input and the tokens of its reply's output,
        the whole assistant message (:func:`~llamaindex_tokenbudget.budget_callback.reply_text`:
        its text, thinking blocks and tool calls' names and arguments; a tool-call turn's text is
        often empty)."""
        tokens = self._counted_input(start, model)
        out = estimate_output_tokens(reply_text(response), counter=self._counters[model])
        return Usage(input_tokens=tokens, output_tokens=out, estimated=True)

    def _counted_input(self, start: Any, model: str) -> int:
        """The input tokens of the call ``start`` began, counted for ``model``."""
        counter = self._counters.get(model)
        if counter is None:
            if model in self.ledger.registry:
                counter = TokenCounter.for_model(model, registry=self.ledger.registry)
            else:  # recorded unpriced (see _charge): its tokens can only be estimated
                counter = unknown_model_counter(model)
            self._counters[model] = counter
        if isinstance(start, LLMChatStartEvent):
            messages, prompt = start.messages, None
        else:
            messages, prompt = None, start.prompt if start else ""
        kwargs = start.additional_kwargs if start else None
        return count_input(counter, messages=messages, prompt=prompt, kwargs=kwargs)

    def _charge(self, usage: Usage, *, model: str, **where: Any) -> bool:
        """Record ``usage``; ``False`` when the ledger refused its figures (beyond what a ledger
        stores: the provider's, after the call went out), so the caller records the estimate."""
        try:
            self.ledger.registry.get(model)  # cached: no lookup per call
        except UnknownModelError:
            with self._lock:
                first_time = model not in self._unknown
                self._unknown.add(model)
            if first_time:
                logger.error(
                    "tokenbudget: model %r is not in the ledger's registry: its calls are recorded "
                    "without a cost (tokens only, reported as unpriced). To price them, register it "
                    "(ledger.registry.register(%r, provider=...): that makes it known, not priced) "
                    "and give it a price: register_price(%r, PriceOverride(input_mtok=..., "
                    "output_mtok=...)), or a [prices.%r] table in $TOKENBUDGET_PRICES (or register "
                    "it with canonical= a priced model it is billed as); or pass model= to the handler.",
                    model,
                    model,
                    model,
                    model,
                )
        try:
            self.ledger.record(usage, model=model, unknown_model="unpriced", **where)
        except Exception as e:
            if isinstance(e, InvalidInputError) and not usage.estimated and refuses_usage(e):
                logger.warning(
                    "tokenbudget: the reported usage cannot be charged (%s): recording the estimate", e
                )
                return False
            logger.exception(
                "tokenbudget: usage not recorded: model=%s %s usage=%s", model, where, usage.as_dict()
            )
        return True
