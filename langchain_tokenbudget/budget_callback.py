"""Budgets on LangChain model calls: :class:`BudgetCallbackHandler`, :class:`AsyncBudgetCallbackHandler`.

Before a call goes out the handler counts its input with the core counter and reserves the
worst case in the core :class:`~tokenbudget_core.ledger.Ledger`; a
:class:`~tokenbudget_core.errors.BudgetExceededError` propagates, so a refused call is never
sent. After the call the usage the provider reported is committed (an estimate, flagged, when
it reported none); when the call fails before any output the reservation is released, and a
stream that breaks off after output is charged a flagged estimate (the request was sent): the
counted input plus the text streamed so far, which the handler gathers from
``on_llm_new_token`` and, for the v3 protocol (``stream_events(version="v3")``), from
``on_stream_event`` while the run is in flight, since on ``generate()`` and v3 paths (``invoke``
of a ``streaming=True`` model, as agents run models) ``on_llm_error`` carries no partial reply. Prices,
limits and attribution rules all live in the ledger (:meth:`~tokenbudget_core.ledger.Ledger.settle`):
the handler only translates LangChain events.

The reservation's request id is the LangChain run id, so two handlers on one ledger that see
the same call (one on the model, one in the call's config) hold and charge it once: when both
reserve the same worst case for the same payer, the second one's reserve returns the live
reservation and its commit charges nothing; when they differ (another ``feature=``, ``user=``,
``model=`` or ``max_output_tokens=``, or a payer only one of them sees, an outer chain's), the
ledger refuses the second reserve under the live id, and the second handler, finding the call
open in the first one (LangChain hands every handler the same prompt object), leaves the call to
it: the handler that starts first (those of the call's config, then the model's own) reserves and
charges it, on the payer it resolved. A run id the caller
reuses (``config["run_id"]``) for a later call names a call settled already: that call gets an
id of its own. Calls open at once under one run id (an app using its request id as run id) get
suffixed ids, and each end, chunk and inner run is paired with the call (or chain) its context
started: LangChain delivers them in the thread, task or context copy the run started in, so each
caller is charged its own call, on its own chain's payer.

Which one to use:

* :class:`BudgetCallbackHandler` for sync code (``invoke``, ``batch``, ``stream``). It also
  refuses async calls, but then runs the ledger's store calls on the event loop thread.
* :class:`AsyncBudgetCallbackHandler` for async apps (``ainvoke``, ``abatch``, ``astream``):
  counting and store calls are awaited. LangChain runs an async handler's coroutines from
  sync code in a throwaway loop and *swallows their errors*, so a refusal would not stop a
  sync call; this handler therefore answers LangChain's sync dispatcher with its sync twin,
  and refuses sync calls too.

What is counted and charged:

* Content the core cannot represent (a PDF or other file block, audio, a server-tool result
  kept in the history) does not stop the call: it is counted by the core's estimate
  (:func:`~tokenbudget_core.counting.estimate_block`), and the usage the provider reports is
  what is committed.
* Built-in (server) tools a call carries beside its function tools (Anthropic's computer use,
  bash, text editor, web search, code execution, MCP toolsets...) are counted with a Claude
  model: its count request carries them as the host sends them, and the API counts each one's
  definition and system prompt (an offline estimate reads their JSON). OpenAI publishes no count
  of its built-in tools (``web_search_preview``, ``file_search``, ``computer_use_preview``...): with
  a tiktoken-counted model (or a custom ``counter=``) they are left out of the reservation (logged
  once per model and tool type), which is short by what they add; the usage the provider
  reports is what is charged.
* A structured-output schema the call sends as its ``response_format`` parameter
  (``ChatOpenAI.with_structured_output``'s default ``json_schema`` method) is input too: counted
  as a tool of its name, description and JSON schema, as ``BudgetMiddleware`` counts an agent's
  ``ProviderStrategy`` (:func:`~langchain_tokenbudget._bridge.provider_format_tools`), in the
  reservation and in every estimate.
* Completion models (``on_llm_start``) that report usage in ``llm_output["token_usage"]``
  (OpenAI style: ``prompt_tokens`` / ``completion_tokens``) are charged that usage. LangChain
  reports it once for a whole multi-prompt ``generate()`` / ``batch()`` call, on its first
  prompt, which cannot be split between prompts (nor their payers): each prompt of such a call
  is charged its flagged estimate instead.
* A multi-prompt call (``generate([...])`` with several prompts, a completion model's
  ``batch`` / ``abatch``) starts all its prompts before sending any; when one is refused, none
  is sent and LangChain never ends the others: the handler releases the reservations of the
  prompts started before it and refuses those started after it. A sync multi-prompt chat
  ``generate()`` sends its prompts one by one and, when one fails, ends only that one: the
  handler charges each prompt before it (sent) a flagged estimate, its counted input (the
  reply is not visible), settles one a ``TokenBudgetLLMCache`` answered as that hit (nothing
  was sent), and releases those after it (never sent).
* A call another handler stops at its start: LangChain raises out of the start and ends the
  run in no handler. When a budget handler stops it (one ledger's refusal, with a per-tenant and
  a global ledger's handlers on one call), the other budget handlers release what they reserved
  for it (and for the other prompts of its call). Any other ``raise_error`` handler (a
  guardrail) must come *before* the budget handlers in the callbacks list: LangChain then stops
  the call before they reserve; after them, their holds last until the ledger's lease ends. In
  async runs LangChain runs ``run_inline`` handlers (budget handlers are) before the others,
  whatever the order: such a guardrail needs ``run_inline = True`` to come first. Either way
  the stopped run's cache claim is taken by no other call's lookup (see
  :class:`~langchain_tokenbudget.llm_cache.RunClaim`).

Claude streams: langchain-anthropic puts the *running total* of each ``message_delta`` on a
chunk, and LangChain adds chunks up, so the aggregated ``usage_metadata`` of a streamed
Claude reply overstates its usage. The handler keeps the latest running total instead. That
total reports cache writes without their 1h/5m split: they are charged at the TTL the
request's ``cache_control`` markers name (``usage_from_langchain(..., marked_ttl=)``), as
Anthropic bills them; a request marking both TTLs is charged 5m writes, flagged estimated.

Who pays: the feature, user and conversation of the outermost run that names them (its
metadata or tags) win over inner ones (a model built with ``metadata=``, a nested call's own
metadata, an ``attribute()`` block opened inside the run), as with nested ``attribute()``
blocks; an ``attribute()`` block enclosing the whole run wins over everything. The handler
sees the outer runs when it is passed in the run's config (``config={"callbacks": [...]}``):
it notes each chain, tool and retriever run's payer as it starts and drops it at its end.
A response cache hit: the ``TokenBudgetLLMCache`` LangChain looks up right after the run
starts is handed the run's payer (:class:`~langchain_tokenbudget.llm_cache.RunClaim`): it scopes
the lookup by it (``scope=None``) and records a hit on it, so the payer's hit rate and savings
count it; the handler then releases the reservation (a hit costs nothing), and records the hit
in its own ledger too when the cache keeps another one. A call the budget
refuses whose model looks such a cache up first (``invoke`` / ``batch`` through
``generate()``; not a streaming ``stream()``, nor ``cache=False``, nor one prompt of several)
is not refused at its start: the refusal is left to that lookup, which serves a hit ($0, so a
payer refused at ``soft_refusal`` or beyond is still answered from the cache) and raises the
``BudgetExceededError`` on a miss, before anything is sent. (The ledger's "refusing" alert has
fired by then.) The ledger refuses from the ladder's ``cache_only`` step, so there a cached
answer is served and a miss is refused (``BudgetExceededError.step == "cache_only"``), not sent;
below it the handler acts on no step (see :class:`~tokenbudget_core.budgets.Ladder`).
A payer id is a string (empty: none named); an int or a ``uuid.UUID`` is taken as its ``str()``;
an id of any other type (a float, bytes, a bool...) stops the run with an ``InvalidInputError``
naming its metadata key, rather than charging the call to nobody.

Routed calls: a :class:`~langchain_tokenbudget.router_chat_model.RouterChatModel` runs the tier
model with the route in its run metadata (``tokenbudget_route``); the handler reserves and
charges the call on the model the route names (the tier's model, or the fallback answering),
not on its own ``model=`` (which prices unrouted calls), and passes the premium model to the
ledger, which records what routing saved. On ``BaseChatModel.generate()`` paths the
router makes a run of its own around the tier run: that run is skipped, only the tier run is
charged. Under a :class:`~langchain_tokenbudget.routing_middleware.RoutingMiddleware` the route
is the one in force (:func:`~tokenbudget_core.routing.routed_call`): a call to the routed model
(or one naming no model) is the routed call; a call to another model inside it (a summary) is
charged on its own model and records no routing.

A cancelled async call (its task cancelled mid-flight: a timeout, a cancelled ``abatch``, a
call cancelled while its rate limiter made it wait) gets no ``on_llm_error`` from LangChain:
the handler watches the asyncio task each call started in. When that task ends with the call
still open, the call is taken for gone once no chunk came for 30 s (or when the event loop shuts
down, or the process exits, first; a thread keeps the 30 s, so a loop closed without running the
watch, as ``asyncio.run`` closes it for a call its own shutdown cancelled, delays nothing): its
reservation is released, or, when it had streamed output (the ``generate()`` path: the
provider produced it), the flagged estimate of it is charged. A cancelled task's call that
streamed nothing is released at once; one that streamed output keeps its worst case held
until that estimate (or its real end) is charged, so other calls cannot spend the room it is
about to be charged for. Meanwhile a call another task drives on
(LangChain's v3 stream producer, a first chunk read under ``wait_for``) keeps streaming and is
charged at its real end, as usual (a commit after a release applies); one silent for more than
30 s and then resumed is charged the estimate. A call started in a task that goes on
(``asyncio.timeout()`` around a call in a longer task) is held until the ledger's lease
expires (``lease_seconds``), and the handler forgets it once it has been idle for ten leases
(swept at most once a lease, when calls or chains start), or, when more than 10,000 runs are
open: first the runs closed already (cancelled calls released, orphans settled: kept only for a
late end), then the oldest of those still waiting for their end. A call that runs longer than a
lease without streaming is still charged when it ends (the ledger takes a late commit); one
the handler has forgotten by then cannot be, and its ``TokenBudgetLLMCache`` lookup and store,
if still to come, skip the cache (a refused call's raises its refusal): a forgotten call is never
sent past a refusal nor cached in another payer's scope. A chain's payer is kept as long, counted from when
the chain or a run inside it last started.

A sync v3 stream (``stream_events(version="v3")``) its consumer stops iterating ends no run:
LangChain's ``ChatModelStream`` has no ``close()``; its reservation lasts until its lease ends
(the async one's ``aclose()`` ends it).

A stream abandoned inside a reference cycle is closed by the garbage collector, at any
allocation, maybe while this thread holds a lock its ``on_llm_error`` needs: that end is
settled a moment later by a worker thread (:mod:`tokenbudget_core.finalizing`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import dataclasses
import functools
import heapq
import itertools
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Never, TypeVar
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.callbacks.manager import handle_event
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import LLMResult

from tokenbudget_core.attribution import Attribution, attribute, current_attribution, outer_first, overhead
from tokenbudget_core.counting import (
    SupportsTokenCount,
    TokenCounter,
    add_file_tokens,
    check_tool_list,
    countable_tools,
)
from tokenbudget_core.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidInputError,
    fresh_refusal,
    option_names,
    refuse_positional,
    refuse_unknown,
)
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.finalizing import collecting, defer, start_worker
from tokenbudget_core.ledger import Charge, Ledger, Reservation, check_budget_options
from tokenbudget_core.prompt_caching import CacheMarks, cache_marks_of, longest_ttl
from tokenbudget_core.response_cache import ServedHit, served_hit
from tokenbudget_core.routing import premium_model_of, routed_call
from tokenbudget_core.routing import routed_model as routed_model_now
from tokenbudget_core.usage import Usage
from tokenbudget_core.usage_sources import usage_from_langchain, usage_from_ollama, usage_from_openai_chat

from ._bridge import provider_format_tools
from .llm_cache import (
    CACHE_HIT_KEY,
    RunClaim,
    answers_next_lookup,
    cache_in_use,
    claim_run,
    drop_claims,
    withdraw_claim,
)
from .messages import plain_message, to_core_request

__all__ = ["AsyncBudgetCallbackHandler", "BudgetCallbackHandler"]

logger = logging.getLogger("tokenbudget.langchain")

ROUTE_KEY = "tokenbudget_route"
"""Where a routed call's decision goes: the reply's ``response_metadata`` and the run's ``metadata``."""
ROUTER_LLM_TYPE = "tokenbudget-router"
"""The router's ``_llm_type``: its own run (``generate()`` paths) is not a provider call."""

_PAYER_KEYS = {
    "feature": ("tokenbudget_feature", "feature"),
    "user": ("tokenbudget_user", "user", "user_id"),
    "conversation": ("tokenbudget_conversation", "conversation", "thread_id"),
}
_PAYER_ITEMS = tuple(_PAYER_KEYS.items())
_PAYER_KEY_LISTS = tuple(_PAYER_KEYS.values())
T = TypeVar("T", int, str)
R = TypeVar("R")
Payer = tuple[str | None, str | None, str | None]
"""``(feature, user, conversation)``."""
_NOBODY: Payer = (None, None, None)
MODEL_KEYS = ("model", "model_name")
MAX_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
CHOICE_KEYS = ("n", "candidate_count")
"""Settings naming how many completions a call asks for (OpenAI's ``n``, Gemini's ``candidate_count``)."""


def _id(value: object, field: str) -> str | None:
    """The payer id ``value`` names: a string (empty: none), an int or a ``UUID``, as a string.

    Raises:
        InvalidInputError: Any other type (a float, bytes, a tuple, a bool...), named by
            ``field``: never read as "no payer named", which would charge the anonymous payer.
    """
    if isinstance(value, str):
        return str(value) or None
    if isinstance(value, UUID) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise InvalidInputError(
        field,
        f"a payer id must be a string (an int or a UUID is taken as its str()), not {type(value).__name__}",
        value=value,
        fix="pass str(...) of the id, or None for no payer",
    )


def payer_from(*sources: object, tags: Sequence[str] = ()) -> dict[str, str | None]:
    """Feature, user and conversation named by mappings or objects (first source wins), then tags.

    Keys: ``tokenbudget_feature``/``feature``, ``tokenbudget_user``/``user``/``user_id``,
    ``tokenbudget_conversation``/``conversation``/``thread_id``; tags ``feature:x``, ``user:y``.
    An id is a string (empty: none); an int or a ``uuid.UUID`` is taken as its ``str()``.

    Raises:
        InvalidInputError: An id of another type (a float, bytes, a bool...), named by its key,
            unless a later key names an id (``user`` holding a profile dict, ``user_id`` an id):
            the call must not be charged to nobody.
    """
    getters = [
        s.get if isinstance(s, Mapping) else functools.partial(getattr, s) for s in sources if s is not None
    ]
    payer: dict[str, str | None] = {}
    for field, keys in _PAYER_ITEMS:
        value = next((v for get in getters if (v := _named(get, keys)) is not None), None)
        payer[field] = value if value is not None or not tags else _tagged(field, tags)
    return payer


def _named(get: Callable[..., Any], keys: Sequence[str], prefix: str = "") -> str | None:
    """The first id found under ``keys`` through ``get`` (a mapping's ``get``, or ``getattr``).

    A value that is no id under a generic key (``user`` holding a profile dict, as other
    libraries put there) is passed over when a later key names an id (``user_id``); with none,
    it raises. Under our own key (``tokenbudget_user``) it always raises.

    Raises:
        InvalidInputError: See :func:`_id`, the key named ``prefix + key``.
    """
    bad: InvalidInputError | None = None
    for k in keys:
        raw = get(k, None)
        if raw is None:
            continue
        if type(raw) is str:
            if raw:
                return raw
            continue
        try:
            value = _id(raw, prefix + k)
        except InvalidInputError as e:
            if k.startswith("tokenbudget_"):
                raise
            bad = bad or e
            continue
        if value is not None:
            return value
    if bad is not None:
        raise bad
    return None


_TENANT_KEYS = ("tokenbudget_tenant", "tenant")


def tenant_of(meta: Mapping[str, Any], tags: Sequence[str]) -> str | None:
    """The tenant a run's metadata (``tokenbudget_tenant`` / ``tenant``) or tags (``tenant:x``)
    name: it scopes the run's response-cache entries, as ``attribute(tenant=...)`` does (an
    ``attribute()`` block's tenant wins).

    Raises:
        InvalidInputError: A tenant id of a type :func:`_id` refuses, named ``metadata.<key>``.
    """
    found = _named(meta.get, _TENANT_KEYS, "metadata.")
    return found if found is not None or not tags else _tagged("tenant", tags)


def _tagged(field: str, tags: Sequence[str]) -> str | None:
    prefix = f"{field}:"
    return next((v for t in tags if t.startswith(prefix) and (v := t.partition(":")[2])), None)


def _payer_of(meta: Mapping[str, Any], tags: Sequence[str]) -> tuple[str | None, str | None, str | None]:
    """``payer_from(meta, tags=tags)`` as a tuple ``(feature, user, conversation)``, for the hot path.

    Raises:
        InvalidInputError: A payer id of a type :func:`_id` refuses, named ``metadata.<key>``.
    """
    get = meta.get
    found: list[str | None] = []
    for keys in _PAYER_KEY_LISTS:
        value = None
        for k in keys:
            raw = get(k)
            if raw is not None:
                value = raw if type(raw) is str and raw else _named(get, keys, "metadata.")
                break
        found.append(value)
    if tags:
        found = [
            v if v is not None else _tagged(f, tags) for v, (f, _) in zip(found, _PAYER_ITEMS, strict=True)
        ]
    return found[0], found[1], found[2]


def first(kind: type[T], keys: Sequence[str], *sources: Mapping[str, Any]) -> T | None:
    """The first value of type ``kind`` under ``keys`` in ``sources``: a non-negative int, a non-empty str."""
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is None:
                continue
            valid = isinstance(value, kind) and not isinstance(value, bool)
            if valid and (value >= 0 if isinstance(value, int) else value):
                return value  # type: ignore[no-any-return]
    return None


def cache_writes_in(
    messages: Iterable[BaseMessage], *settings: object, option: object = None
) -> CacheMarks | None:
    """The prompt-cache TTLs marked (``cache_control``) in the messages' content blocks, in
    ``settings`` (tools) or by ``option``, the call's own top-level ``cache_control`` value
    (``ChatAnthropic(...).bind(cache_control={"type": "ephemeral", "ttl": "1h"})``: a marker
    itself, not a mapping holding one), as
    :func:`~tokenbudget_core.prompt_caching.cache_marks_of` tells them: the ledger prices the
    call's worst case at the longest one's write rate (``longest_ttl``), and unsplit writes of
    a reply at the one marked (``"mixed"``: 5m, flagged). Plain-text messages cost no scan."""
    parts: list[object] = [m.content for m in messages if type(m.content) is not str]
    parts += [s for s in settings if s]
    if option:
        parts.append({"cache_control": option})
    return cache_marks_of(parts) if parts else None


def running_total(chunk: object) -> dict[str, Any] | None:
    """The usage a stream chunk reports as a running total (Claude's ``message_delta``), else ``None``."""
    message = getattr(chunk, "message", None)
    if (
        isinstance(message, AIMessage)
        and message.usage_metadata
        and message.response_metadata.get("model_provider") == "anthropic"
    ):
        return dict(message.usage_metadata)
    return None


def streamed_text(token: object, chunk: object) -> str:
    """The text and tool-call argument pieces one stream chunk carries (``token`` when there is
    no chunk), kept to estimate the output of a stream that breaks off."""
    message = getattr(chunk, "message", None)
    if message is None:  # a completion model's GenerationChunk, or no chunk at all
        text = getattr(chunk, "text", token)
        return text if isinstance(text, str) else ""
    text = str(message.text)
    pieces = getattr(message, "tool_call_chunks", None)
    if pieces:
        text += "".join(args for c in pieces if isinstance(args := c.get("args"), str))
    return text


_DELTA_TEXT = {"text-delta": "text", "reasoning-delta": "reasoning", "tool-call-delta": "args"}
"""The key of the billed output each kind of v3 ``content-block-delta`` carries."""


def stream_event_text(event: object) -> str:
    """The output one v3 protocol event (``stream_events(version="v3")``, ``on_stream_event``)
    carries: the text, reasoning or tool-call arguments of a ``content-block-delta``, else ""."""
    if type(event) is not dict or event.get("event") != "content-block-delta":
        return ""
    delta = event.get("delta")
    key = _DELTA_TEXT.get(delta.get("type")) if isinstance(delta, dict) else None  # type: ignore[arg-type]
    text = delta.get(key) if key is not None else None  # type: ignore[union-attr]
    return text if isinstance(text, str) else ""


def streamed_estimate(tokens: Sequence[str] | None, events: Sequence[str] | None) -> str:
    """The text a broken-off stream produced: from its tokens (``on_llm_new_token``) or its v3
    events (``on_stream_event``), whichever saw more (a provider may report through one, the
    other or both)."""
    return max("".join(tokens or ()), "".join(events or ()), key=len)


def reply_text(messages: Sequence[BaseMessage]) -> str:
    """The text and tool-call arguments of model replies, for estimating their output tokens."""
    parts = [str(m.text) for m in messages]
    parts += [
        json.dumps(c.get("args", {})) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls
    ]
    return "".join(parts)


def reported(
    replies: Sequence[BaseMessage],
    totals: Sequence[Mapping[str, Any]] = (),
    *,
    marked_ttl: CacheMarks | None = None,
) -> Usage | None:
    """What the provider reported: Claude's latest running totals, else the first reply's
    ``usage_metadata``, else Ollama's ``eval_count`` in a ``ChatOllama`` reply's
    ``response_metadata`` (the exact output; the input, not reported, is then the counted one).

    (With ``n`` > 1 choices every reply carries the whole call's usage: it is counted once.)
    Cache writes reported without the 1h/5m split (a Claude running total, Bedrock's replies)
    are charged at ``marked_ttl``, the TTLs the request's ``cache_control`` markers named (the
    core's rule, :func:`~tokenbudget_core.usage_sources.usage_from_langchain`). Figures the core
    rejects (cache reads above the input, a negative count) are logged and ``None`` is returned:
    the call, already sent, is charged its estimate.
    """
    try:
        if totals:  # one per Claude stream that finished
            return sum((usage_from_langchain(t, marked_ttl=marked_ttl) for t in totals), Usage(requests=0))
        found = next(
            (m.usage_metadata for m in replies if isinstance(m, AIMessage) and m.usage_metadata), None
        )
        if found is not None:
            return usage_from_langchain(found, marked_ttl=marked_ttl)
        # ChatOllama reports no usage_metadata when Ollama left prompt_eval_count out (a prompt
        # served from its cache), but keeps eval_count, the exact output, in response_metadata.
        ollama = next(
            (
                m.response_metadata
                for m in replies
                if isinstance(m, AIMessage) and m.response_metadata.get("eval_count") is not None
            ),
            None,
        )
        return None if ollama is None else usage_from_ollama(ollama)
    except InvalidInputError as e:
        logger.warning("the provider's usage_metadata cannot be charged (%s): charging the estimate", e)
        return None


def llm_output_usage(llm_output: object) -> Usage | None:
    """The usage a completion model reported for its call in ``llm_output["token_usage"]``
    (OpenAI style: ``prompt_tokens`` / ``completion_tokens``, read by the core), else ``None``."""
    found = llm_output.get("token_usage") if isinstance(llm_output, Mapping) else None
    if not isinstance(found, Mapping) or not found:
        return None
    try:
        return usage_from_openai_chat(found)
    except InvalidInputError:  # another provider's shape: the call is charged an estimate
        return None


CacheHit = ServedHit
"""A reply served from a response cache instead of the model (the core's ``ServedHit``)."""


def route_of(replies: Sequence[BaseMessage]) -> Mapping[str, Any] | None:
    """The routing decision a reply carries in ``response_metadata[ROUTE_KEY]``, if any."""
    for m in replies:
        route = m.response_metadata.get(ROUTE_KEY) if isinstance(m, AIMessage) else None
        if isinstance(route, Mapping):
            return route
    return None


def routed_model(route: object) -> str | None:
    """The model a routed run calls, from the route in its metadata: ``answered_by`` (set per
    attempt, so a fallback names itself), else the decision's ``model``; ``None`` when unrouted."""
    if not isinstance(route, Mapping):
        return None
    for key in ("answered_by", "model"):
        model = route.get(key)
        if isinstance(model, str) and model:
            return model
    return None


def cache_hit_of(replies: Sequence[BaseMessage]) -> CacheHit | None:
    """The cache hit the replies came from, by the core's rule (``served_hit``): tokenbudget's LLM
    cache marks its hits in ``response_metadata[CACHE_HIT_KEY]``; LangChain's own caches leave the
    original ``usage_metadata`` with ``total_cost`` set to 0."""
    ais = [m for m in replies if isinstance(m, AIMessage)]
    for m in ais:
        hit = served_hit(m.response_metadata.get(CACHE_HIT_KEY))
        if hit is not None:
            return hit
    for m in ais:
        hit = served_hit(usage=m.usage_metadata)
        if hit is not None:
            return hit
    return None


_NO_MESSAGE = object()
_EMPTY: Mapping[str, Any] = {}

_REUSES = 100
"""Suffixed ids a reused run id is tried under before the call takes a random one."""


def _reused_ids(request_id: str | None, start: int = 0) -> Iterator[tuple[str | None, int]]:
    """The request ids to reserve a run under, in order, each with its suffix's number: its own
    (0), then (the ledger refusing each as settled: a reused ``config["run_id"]``) ``<id>#1``,
    ``<id>#2``..., then ``None`` (a random id, ``_REUSES + 1``); from ``start``, the first suffix
    the ledger may still take (the ones below it were refused before)."""
    if request_id is not None:
        if start == 0:
            yield request_id, 0
        for n in range(max(start, 1), _REUSES + 1):
            yield f"{request_id}#{n}", n
    yield None, _REUSES + 1


_JOINED: contextvars.ContextVar[tuple[tuple[UUID, int], ...]] = contextvars.ContextVar(
    "tokenbudget_joined_runs", default=()
)
"""``(run id, key)`` of the runs (and chain payers) this context started under a run id another
call held open (a ``config["run_id"]`` reused by concurrent calls), newest first. LangChain hands
an end only the run id; it delivers it in the context the run started in (sync: the same thread
and context; async: the same task, or a task copying its context, as ``agenerate``'s ``gather``):
so each call's end is paired with its own start, not with another caller's."""
_JOINED_KEPT = 16
"""Marks a context keeps: older ones (of calls long ended elsewhere, a stale task's) are dropped."""
_KEYS = itertools.count(1)


def _mark_joined(run_id: UUID, key: int) -> None:
    """Note in the current context that it started ``key`` under ``run_id`` (see :data:`_JOINED`)."""
    _JOINED.set(((run_id, key), *_JOINED.get()[: _JOINED_KEPT - 1]))


def _joined_keys(run_id: UUID) -> list[int]:
    """The keys the current context started under ``run_id``, newest first."""
    marks = _JOINED.get()
    return [k for r, k in marks if r == run_id] if marks else []


def _unmark(run_id: UUID, key: int) -> None:
    marks = _JOINED.get()
    if (run_id, key) in marks:
        _JOINED.set(tuple(m for m in marks if m != (run_id, key)))


class MiddlewareCall:
    """The model call a ``BudgetMiddleware`` is making (see :func:`middleware_call`): the ledger
    it charges, the names of the runs it charges (:func:`left_to_middleware`), and the runs made
    inside it that a :class:`BudgetCallbackHandler` of the same ledger charged itself (another
    model's: ``taken``, run id -> the handler's charge, ``None`` until, or unless, it is charged),
    so that the middleware never charges them a second time."""

    __slots__ = ("ledger", "names", "taken")

    def __init__(self, ledger: object, names: frozenset[str]) -> None:
        self.ledger, self.names = ledger, names
        self.taken: dict[UUID, Charge | None] = {}


_MIDDLEWARE_CALL: contextvars.ContextVar[MiddlewareCall | None] = contextvars.ContextVar(
    "tokenbudget_middleware_call", default=None
)


@contextlib.contextmanager
def middleware_call(ledger: object, names: Iterable[object]) -> Iterator[MiddlewareCall]:
    """Mark the model call a ``BudgetMiddleware`` charges on ``ledger`` while it is made: a
    :class:`BudgetCallbackHandler` of the same ledger then leaves to it the model runs that name
    one of ``names`` (the request model's own names and the one it is priced on) or no model,
    and the routed call a router inside makes (a ``RouterChatModel`` tier run, or the call
    under a ``RoutingMiddleware``'s route): :func:`left_to_middleware`. Yields the mark, whose
    ``taken`` names the runs inside the call such a handler charged itself."""
    marked = MiddlewareCall(ledger, frozenset(n for n in names if isinstance(n, str) and n))
    token = _MIDDLEWARE_CALL.set(marked)
    try:
        yield marked
    finally:
        _MIDDLEWARE_CALL.reset(token)


def left_to_middleware(
    names: frozenset[str], serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], registry: Any
) -> bool:
    """Whether a model run started inside a ``BudgetMiddleware``'s call is that call's own (the
    request's model answering it), which the middleware charges, rather than another model's call
    made inside it (a guard model, a middleware's own call), which a handler charges: the run names
    one of ``names`` or no model, or it is a router's tier run (``tokenbudget_route`` in its
    metadata), or the call a ``RoutingMiddleware``'s route in force is making. The one rule both
    the handler (:func:`middleware_call`) and the middleware read."""
    params: Mapping[str, Any] = kwargs.get("invocation_params") or _EMPTY
    meta: Mapping[str, Any] = kwargs.get("metadata") or _EMPTY
    named = _model_named(serialized, params, meta)
    if named is None or named in names or routed_model(meta.get(ROUTE_KEY)) is not None:
        return True  # the request's model, or a router's tier run answering it
    return routed_model_now() is not None and routed_call(named, registry=registry) is not None


def is_router_run(kwargs: Mapping[str, Any]) -> bool:
    """A ``RouterChatModel``'s own run (``generate()`` paths): its child tier run is the provider call."""
    params: Mapping[str, Any] = kwargs.get("invocation_params") or _EMPTY
    return params.get("_type") == ROUTER_LLM_TYPE


_LS_MAX_TOKENS = ("ls_max_tokens",)
Inputs = Sequence[list[BaseMessage]] | Sequence[str]
Tools = list[dict[str, Any]] | None


@dataclasses.dataclass(kw_only=True, slots=True)
class _Run:
    reservation: Reservation
    counter: SupportsTokenCount
    touched: float = dataclasses.field(default_factory=time.monotonic)
    """When the run started or last streamed (``time.monotonic()``): runs idle for
    ``_IDLE_LEASES`` leases are forgotten (a cancelled async call never ends)."""
    total: dict[str, Any] | None = None
    premium_model: str | None = None
    """The routed call's premium model (from the run's metadata, or the route in force)."""
    ttl: CacheMarks | None = None
    """The TTLs of the request's ``cache_control`` markers: the TTL of cache writes that a
    running total reports without a split (``mixed``: 5m, flagged)."""
    streamed: list[str] | None = None
    """The text streamed so far (``on_llm_new_token``): estimates the output of a stream that
    breaks off on the ``generate()`` path, whose ``on_llm_error`` carries no partial reply."""
    evented: list[str] | None = None
    """The output streamed so far as v3 protocol events (``on_stream_event``): the same use."""
    seq: int = 0
    """How many runs under the same run id were open before this one: its request id's suffix."""
    key: int = 0
    """Set (unique) on a run started while another was open under its run id: the context it
    started in notes it (:func:`_mark_joined`), and its end, chunks and events, delivered in
    that context or a copy of it, find it by this key among the runs open under the id."""
    batch: _Batch | None = None
    """The multi-prompt call the run is one prompt of (see :class:`_Batch`)."""
    batched: bool = False
    """One prompt of several: ``llm_output`` reports the whole call's usage on the first one."""
    next: _Run | None = None
    """A run started under the same run id while this one was open (a reused ``config["run_id"]``).
    An end under the id closes the run its context started (:func:`_joined_keys`), else the oldest."""
    prompt: object = None
    """The call's first prompt as LangChain hands it to every handler of the call (the message
    list, or the prompt string): another handler of the ledger whose reserve under the same run
    id is refused tells by it that this run is the same call (see :meth:`_BudgetHandler._held_by_another`)."""
    claim: RunClaim | None = None
    """The run's claim on the response-cache lookup LangChain makes right after its start: a
    ``TokenBudgetLLMCache`` scopes and records that lookup (a hit) and its store under this run's
    payer (see :class:`~langchain_tokenbudget.llm_cache.RunClaim`); closed when the run ends."""
    settled: bool = False
    """Closed in the ledger already, kept only for a late real end: an orphan released when its
    task was cancelled (nothing streamed) or closed once gone. The first runs forgotten past
    ``_MAX_OPEN``, before any run still waiting for its real end."""
    watch: tuple[asyncio.Task[Any], Callable[..., None]] | None = None
    """The asyncio task that started the run and the done-callback that ends the run if that
    task ends with the run still open (see :meth:`_BudgetHandler._task_ended`)."""


@dataclasses.dataclass(eq=False, slots=True)
class _Batch:
    """The prompts of one multi-prompt ``generate()`` call, while LangChain starts them.

    LangChain starts every prompt (``on_llm_start`` / ``on_chat_model_start``, one per prompt)
    before it sends any, and passes each the same ``invocation_params`` dict: the batch's key.
    A refused prompt stops the whole call, and LangChain never ends the prompts started before
    it: their reservations are released here (and later ones refused, as ``agenerate`` may still
    start them).
    """

    params: object
    """The call's ``invocation_params``: held, so that its ``id()`` (the key) stays unique."""
    left: int
    """Prompts whose start has not finished yet."""
    touched: float
    runs: list[UUID] = dataclasses.field(default_factory=list)
    refusal: Callable[[], BaseException] | None = None
    """Set when a prompt stopped the call: makes the error every later prompt is refused with."""


@dataclasses.dataclass(slots=True)
class _Payer:
    """The payer a chain run resolved for the runs inside it (the outermost value of each field)."""

    payer: Payer
    touched: float
    """When it or a run inside it last started: forgotten when idle for ``_IDLE_LEASES`` leases."""
    outer: _Payer | None = None
    """The payer of the chain run it runs in, touched with it."""

    def touch(self, now: float) -> None:
        """A run started inside: this payer and its outer ones' are in use."""
        payer: _Payer | None = self
        while payer is not None:
            payer.touched = now
            payer = payer.outer


_IDLE_LEASES = 10
"""Leases a run or payer stays idle before the handler forgets it: far longer than a call runs."""
_MAX_OPEN = 10_000
"""Open runs (and payers) past which the handler forgets the oldest ones."""
_ORPHAN_GRACE_S = 30.0
"""How long a call whose task ended with it open may stay silent before it is taken for gone:
released, or charged the flagged estimate of what it streamed (a call another task reads on
keeps streaming meanwhile)."""
_HANDLERS: weakref.WeakSet[_BudgetHandler] = weakref.WeakSet()
"""Every live handler: one whose reserve under a run id is refused looks in the others of its
ledger for the same call (:meth:`_BudgetHandler._held_by_another`)."""
_HANDLERS_LOCK = threading.Lock()
_ORPHANED_HANDLERS: weakref.WeakSet[_BudgetHandler] = weakref.WeakSet()
"""Handlers holding orphans: an exiting process closes their accounts (a loop may close before
a watch ends, and a CLI's loop does)."""


def _close_orphans_at_exit() -> None:
    for handler in list(_ORPHANED_HANDLERS):
        handler._orphans_at_exit()


atexit.register(_close_orphans_at_exit)


class _OrphanClock:
    """The grace of every orphan (:meth:`_BudgetHandler._task_ended`), kept by one daemon thread
    with a heap of deadlines: not by the orphan's event loop, which may never run again. A loop
    that ``asyncio.run`` shuts down cancels the tasks it has; an orphan whose task was one of them
    gets its watch only after that, and the loop closes with the watch pending: its hold would
    last until the process exits. Each deadline re-checks the run (:meth:`_BudgetHandler._orphan_due`)
    and is armed again while the call keeps streaming."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _BudgetHandler, UUID, _Run, float]] = []
        self._seq = itertools.count()
        self._started = False

    def arm(self, after: float, handler: _BudgetHandler, run_id: UUID, run: _Run, touched: float) -> None:
        """Have ``handler`` look at orphan ``run`` again in ``after`` seconds (``touched``: its
        last chunk then). With no thread (none can start), the exit hook closes it."""
        with self._cond:
            entry = (time.monotonic() + after, next(self._seq), handler, run_id, run, touched)
            heapq.heappush(self._heap, entry)
            if not self._started:
                try:
                    threading.Thread(target=self._run, name="tokenbudget-orphans", daemon=True).start()
                except RuntimeError:  # (the interpreter is exiting: the exit hook closes it)
                    return
                self._started = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, handler, run_id, run, touched = heapq.heappop(self._heap)
            try:
                handler._orphan_due(run_id, run, touched)
            except Exception:
                logger.exception("tokenbudget: could not close the account of a cancelled call")

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap = []  # the parent's orphans are the parent's to close
        self._started = False  # the thread did not come along


_ORPHAN_CLOCK = _OrphanClock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ORPHAN_CLOCK._after_fork_in_child)


def _payer_in_force(
    reservation: Reservation, attribution: Attribution | None, tenant: str | None = None
) -> Attribution:
    """The attribution a run's cache lookup is scoped and recorded under: the payer the ledger
    reserved the run for, with the tenant (and overhead kind) in force at its start, else the
    ``tenant`` its metadata named."""
    now = attribution or current_attribution()
    return dataclasses.replace(
        now,
        feature=reservation.feature,
        user=reservation.user,
        conversation=reservation.conversation,
        tenant=now.tenant if now.tenant is not None else tenant,
    )


def _fields(a: Attribution) -> Payer:
    return a.feature, a.user, a.conversation


def _attributed(attribution: Attribution, fn: Callable[[], R]) -> R:
    """``fn()`` with ``attribution`` in force; run in an empty context, so nothing else is."""
    a = attribution
    with attribute(feature=a.feature, user=a.user, conversation=a.conversation, tenant=a.tenant):
        if a.overhead is None:
            return fn()
        with overhead(a.overhead):
            return fn()


async def _aattributed(attribution: Attribution, fn: Callable[[], Awaitable[R]]) -> R:
    """Async twin of :func:`_attributed` (run as a task in an empty context)."""
    a = attribution
    with attribute(feature=a.feature, user=a.user, conversation=a.conversation, tenant=a.tenant):
        if a.overhead is None:
            return await fn()
        with overhead(a.overhead):
            return await fn()


_TAKEN = object()
"""What :meth:`_BudgetHandler._keep` says when another call of the handler holds the request id."""


class _BudgetHandler:
    """What both handlers share: turning callback arguments into ledger arguments, and run state."""

    raise_error = True  # otherwise LangChain logs a refusal and sends the call anyway
    run_inline = True  # reserve before the call, in the caller's context (attribute() blocks)

    def __init__(
        self,
        ledger: Ledger,
        *positional: Never,  # (refused: a type checker flags them, the constructor names them)
        model: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        max_output_tokens: int | None = None,
        counter: SupportsTokenCount | None = None,
        **unknown: Any,
    ) -> None:
        options = option_names(_BudgetHandler.__init__)
        refuse_positional(type(self).__name__, positional, options[1:], after="ledger")
        if unknown:  # a misspelt option (usr=...): named, with the closest one
            refuse_unknown(type(self).__name__, unknown, options)
        check_budget_options(
            ledger, model=model, feature=feature, user=user, counts={"max_output_tokens": max_output_tokens}
        )
        if counter is not None and not isinstance(counter, SupportsTokenCount):
            raise InvalidInputError("counter", "must have count() and count_messages()", value=counter)
        self.ledger, self.model, self.feature, self.user = ledger, model, feature, user
        self.max_output_tokens, self.counter = max_output_tokens, counter
        self._counters: dict[str, SupportsTokenCount] = {}
        self._runs: dict[UUID, _Run] = {}
        self._payers: dict[UUID | tuple[UUID, int], _Payer] = {}  # (id, key): a reused chain run id
        self._batches: dict[int, _Batch] = {}
        self._orphans: dict[UUID, _Run] = {}  # runs whose task ended with them open (see _task_ended)
        # refused runs left to the cache (see _defer), with the model each reserved
        self._deferred: dict[UUID, tuple[RunClaim, str]] = {}
        self._suffixes: dict[str, int] = {}  # reused run id -> next suffix to try (see _next_suffix)
        self._watchers: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        start_worker()
        self._sweep_at = 0.0
        with _HANDLERS_LOCK:
            _HANDLERS.add(self)

    @staticmethod
    def _is_router(kwargs: Mapping[str, Any]) -> bool:
        """The router's own run (``generate()`` paths): its child tier run is the provider call."""
        return is_router_run(kwargs)

    def _call(self, serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> _Call:
        """The model's counter, the ``reserve()`` arguments but the input count, and the tools sent.

        Raises:
            InvalidInputError: Neither this handler nor the call names the model.
        """
        params: Mapping[str, Any] = kwargs.get("invocation_params") or _EMPTY
        meta: Mapping[str, Any] = kwargs.get("metadata") or _EMPTY
        route = meta.get(ROUTE_KEY)
        model = routed_model(route)
        premium = None if model is None else premium_model_of(route)
        if model is None and routed_model_now() is not None:  # a route in force: is this its call?
            found = routed_call(_model_named(serialized, params, meta), registry=self.ledger.registry)
            if found is not None:
                model, premium = found[1], premium_model_of(found[0])
        if model is None:
            model = self.model or _model_named(serialized, params, meta)
            if model is None:
                raise InvalidInputError(
                    "model",
                    "this call does not name its model",
                    fix="pass BudgetCallbackHandler(ledger, model=...)",
                )
        counter = self.counter or self._counters.get(model)
        if counter is None:
            counter = TokenCounter.for_model(model, registry=self.ledger.registry)
            self._counters[model] = counter
        tags = kwargs.get("tags") or ()
        feature, user, conversation = payer = _payer_of(meta, tags)
        tenant = tenant_of(meta, tags)
        attribution = None
        outer = self._outer(kwargs)
        if outer is not None:  # inside a chain that named a payer: the outermost value wins
            outer.touch(time.monotonic())
            now = current_attribution()
            feature, user, conversation = outer_first(outer.payer, _fields(now), payer)
            resolved = (feature, user, conversation)
            if any(n is not None and n != r for n, r in zip(_fields(now), resolved, strict=True)):
                # an attribute() block opened inside the run: the ledger would let it win
                attribution = dataclasses.replace(now, feature=feature, user=user, conversation=conversation)
        max_output = self._max_output(params, meta)
        sent = params.get("tools")
        # a structured-output schema bound as the call's response_format (ChatOpenAI's default
        # with_structured_output method) is input the provider bills too: counted as a tool of
        # its name, description and schema, as BudgetMiddleware counts an agent's ProviderStrategy
        schema = provider_format_tools(params.get("response_format"))
        if schema:
            sent = [*check_tool_list(sent), *schema] if sent else schema
        tools = countable_tools(counter, model, sent) if sent else None
        return _Call(
            counter,
            model,
            max_output,
            feature or self.feature,
            user or self.user,
            conversation,
            tools or None,
            first(int, CHOICE_KEYS, params) or 1,
            premium,
            attribution,
            tenant,
        )

    def _max_output(self, params: Mapping[str, Any], meta: Mapping[str, Any]) -> int | None:
        """The output tokens a call reserves: its ``max_tokens`` setting, else LangChain's
        ``ls_max_tokens``, else this handler's default (``None``: the ledger's)."""
        max_output = first(int, MAX_OUTPUT_KEYS, params)
        if max_output is None:
            max_output = first(int, _LS_MAX_TOKENS, meta)
        return self.max_output_tokens if max_output is None else max_output

    def _count(self, counter: SupportsTokenCount, inputs: Inputs, tools: Tools) -> int:
        if isinstance(inputs[0], str):
            return sum(int(counter.count(p)) for p in inputs if isinstance(p, str))
        n = 0
        for b in inputs:
            if isinstance(b, list):
                messages = to_core_request(b)
                n += int(add_file_tokens(counter.count_messages(messages, tools), messages))
        return n

    async def _acount(self, counter: SupportsTokenCount, inputs: Inputs, tools: Tools) -> int:
        """Async twin of :meth:`_count`: the counter's ``acount`` / ``acount_messages`` when it
        has them (a Claude counter asks the API: it must not block the loop), else the sync ones."""
        if isinstance(inputs[0], str):
            acount_text = getattr(counter, "acount", None)
            if acount_text is None:
                return self._count(counter, inputs, tools)
            return sum([int(await acount_text(p)) for p in inputs if isinstance(p, str)])
        acount = getattr(counter, "acount_messages", None)
        if acount is None:
            return self._count(counter, inputs, tools)
        n = 0
        for b in inputs:
            if isinstance(b, list):
                messages = to_core_request(b)
                n += int(add_file_tokens(await acount(messages, tools), messages))
        return n

    @staticmethod
    def _args(call: _Call, input_tokens: int, ttl: CacheMarks | None) -> dict[str, Any]:
        return {
            "model": call.model,
            "input_tokens": input_tokens,
            "max_output_tokens": call.max_output_tokens,
            "feature": call.feature,
            "user": call.user,
            "conversation": call.conversation,
            "choices": call.choices,
            "cache_writes": longest_ttl(ttl),
        }

    def _reserve(
        self, call: _Call, args: dict[str, Any], request_id: str | None, run_id: UUID, prompt: object
    ) -> Reservation | None:
        """Reserve under ``request_id`` (the run's): another handler of the ledger seeing the same
        call with the same worst case and payer gets the same reservation back, and the ledger
        charges the call once. A refused id is either held by another handler of the ledger for
        this very call (another worst case or payer: ``None``, the call is that handler's to
        charge, see :meth:`_held_by_another`), or a reused ``config["run_id"]`` naming another
        call: settled already, or open in a handler that does not see this call. That call is
        reserved under the first of ``<run id>#1``, ``#2``... the ledger takes
        (:func:`_reused_ids`), so that every handler of the ledger lands on the same id again;
        probed from the suffix after the one this handler took last for the id (the ones below
        it are settled), not from ``#1`` on every reuse."""
        start = self._suffixes.get(request_id, 0) if self._suffixes and request_id is not None else 0
        first = True  # the first refusal: is the call held by another handler?
        for rid, n in _reused_ids(request_id, start):
            try:
                reservation = self._reserve_once(call, args, rid)
            except InvalidInputError as e:
                if rid is None or e.field != "request_id":
                    raise
                if first and self._held_by_another(run_id, prompt):
                    return None
                first = False
                continue
            except BudgetUnavailableError:
                if rid is not None:  # never retried under the run's id: undo it once the store is back
                    self.ledger.abandon(rid)
                raise
            if n:
                self._next_suffix(request_id, n)
            return reservation
        raise AssertionError("unreachable: _reused_ids ends with None")  # pragma: no cover

    def _next_suffix(self, request_id: str | None, n: int) -> None:
        """A reused run id reserved under suffix ``n``: its next call tries from ``n + 1`` (one store
        round trip, not one per earlier reuse). Up to ``_MAX_OPEN`` ids remembered, oldest out."""
        if request_id is None:
            return
        with self._lock:
            if len(self._suffixes) >= _MAX_OPEN:
                for old in list(self._suffixes)[: _MAX_OPEN // 4]:
                    del self._suffixes[old]
            self._suffixes.pop(request_id, None)
            self._suffixes[request_id] = n + 1

    def _reserve_once(self, call: _Call, args: dict[str, Any], request_id: str | None) -> Reservation:
        if call.attribution is None:
            return self.ledger.reserve(**args, request_id=request_id)
        # the outer payer wins over an attribute() block opened inside the run
        reserve = functools.partial(self.ledger.reserve, **args, request_id=request_id)
        return contextvars.Context().run(_attributed, call.attribution, reserve)

    async def _areserve(
        self, call: _Call, args: dict[str, Any], request_id: str | None, run_id: UUID, prompt: object
    ) -> Reservation | None:
        """Async twin of :meth:`_reserve`."""
        start = self._suffixes.get(request_id, 0) if self._suffixes and request_id is not None else 0
        first = True  # the first refusal: is the call held by another handler?
        for rid, n in _reused_ids(request_id, start):
            try:
                reservation = await self._areserve_once(call, args, rid)
            except InvalidInputError as e:
                if rid is None or e.field != "request_id":
                    raise
                if first and self._held_by_another(run_id, prompt):
                    return None
                first = False
                continue
            except BudgetUnavailableError:
                if rid is not None:  # never retried under the run's id: undo it once the store is back
                    self.ledger.abandon(rid)
                raise
            if n:
                self._next_suffix(request_id, n)
            return reservation
        raise AssertionError("unreachable: _reused_ids ends with None")  # pragma: no cover

    async def _areserve_once(self, call: _Call, args: dict[str, Any], request_id: str | None) -> Reservation:
        if call.attribution is None:
            return await self.ledger.areserve(**args, request_id=request_id)
        reserve = functools.partial(self.ledger.areserve, **args, request_id=request_id)
        task = asyncio.get_running_loop().create_task(
            _aattributed(call.attribution, reserve), context=contextvars.Context()
        )
        try:
            return await task
        except asyncio.CancelledError:
            # cancelled after the task reserved but before this caller resumed (or while it
            # reserves: areserve then undoes its own): the call will not be sent, hold nothing
            if task.done():
                self._release_unsent(task)
            else:
                task.add_done_callback(self._release_unsent)
            raise

    def _release_unsent(self, task: asyncio.Task[Reservation]) -> None:
        """Release what a reserve task made for a caller cancelled meanwhile (never sent): in a
        worker thread, off the event loop (inline when the loop has no executor any more)."""
        if task.cancelled() or task.exception() is not None:
            return  # nothing reserved (a cancelled areserve releases what it made itself)
        reservation = task.result()
        try:
            task.get_loop().run_in_executor(None, self._release_quietly, reservation)
        except RuntimeError:  # the loop is closed or shutting down
            self._release_quietly(reservation)

    def _release_quietly(self, reservation: Reservation) -> None:
        try:
            self.ledger.release(reservation)
        except Exception:  # its lease ends it: logged, never raised
            logger.exception("could not release %s, reserved by a cancelled call", reservation.request_id)

    def _held_by_another(self, run_id: UUID, prompt: object) -> bool:
        """Whether another handler of this ledger holds this very call open: a run under
        ``run_id`` started with the same prompt object (LangChain hands every handler of a call
        the same one; a later call reusing the run id has its own). That handler reserved it
        first, with another worst case or payer (the ledger refused this one's reserve under the
        live id): the call is its to charge, once."""
        with _HANDLERS_LOCK:
            others = [h for h in _HANDLERS if h is not self and h.ledger.shares_books_with(self.ledger)]
        for other in others:
            with other._lock:
                run = other._runs.get(run_id)
                while run is not None:
                    if run.prompt is prompt:
                        return True
                    run = run.next
        return False

    def _defer(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        run_id: UUID,
        kwargs: Mapping[str, Any],
        refused: BudgetExceededError,
    ) -> bool:
        """Leave the refusal of a one-prompt chat run to the ``TokenBudgetLLMCache`` LangChain looks
        up next (:func:`~langchain_tokenbudget.llm_cache.answers_next_lookup`): a hit costs nothing
        and is served (recorded on the run's payer: a cache-only step can answer from the cache);
        a miss raises ``refused`` there, before anything is sent. ``False``: nothing is sure to
        look a cache up first, refuse now."""
        size = kwargs.get("batch_size")
        if len(messages) != 1 or (type(size) is int and size > 1) or not answers_next_lookup():
            return False
        call = self._call(serialized, kwargs)
        now = call.attribution or current_attribution()
        payer = dataclasses.replace(
            now,
            feature=now.feature or call.feature,
            user=now.user or call.user,
            conversation=now.conversation or call.conversation,
        )  # the ledger's rule: the attribute() block in force wins over the call's ids
        claim = claim_run(payer, messages[0], run=run_id, refusal=fresh_refusal(refused))
        if claim is None:
            return False
        with self._lock:
            if len(self._deferred) >= _MAX_OPEN:  # forget the oldest, their lookups refused if they come
                for stale in list(self._deferred)[: _MAX_OPEN // 4]:
                    withdraw_claim(self._deferred.pop(stale)[0])
            self._deferred[run_id] = (claim, call.model)
        return True

    def _undefer(self, run_id: UUID, response: LLMResult | None = None) -> dict[str, Any] | None:
        """The run left to the cache ended (a hit served, or the miss refused): its claim is done.

        Returns the :meth:`~tokenbudget_core.ledger.Ledger.record` arguments of the hit that
        ``response`` (its end) carries when this ledger must record it: the cache recorded it in
        no ledger, or in one keeping other books (as a hit on a run that was not refused is)."""
        with self._lock:
            entry = self._deferred.pop(run_id, None)
        if entry is None:
            return None
        claim, model = entry
        claim.close()
        replies = (
            [
                m
                for gs in response.generations
                for g in gs
                if isinstance(m := getattr(g, "message", None), BaseMessage)
            ]
            if response
            else []
        )
        hit = cache_hit_of(replies)
        if hit is None:
            return None
        if (
            hit.recorded
            and claim.recorded_in is not None
            and self.ledger.shares_books_with(claim.recorded_in)
        ):
            return None  # the cache recorded it in this ledger's books
        payer = claim.attribution
        return {
            "usage": Usage(requests=1),
            "model": model,
            "feature": payer.feature,
            "user": payer.user,
            "conversation": payer.conversation,
            "request_id": str(run_id),
            "cache_hit": True,
            "saved_usd": hit.saved_usd,
        }

    def _by_middleware(
        self, serialized: dict[str, Any] | None, run_id: UUID, kwargs: Mapping[str, Any]
    ) -> bool:
        """A ``BudgetMiddleware`` of this ledger charges this model run (see :func:`middleware_call`);
        a run inside its call that it does not charge is noted as this handler's (its ``taken``)."""
        marked = _MIDDLEWARE_CALL.get()
        if marked is None or not self.ledger.shares_books_with(marked.ledger):
            return False
        if left_to_middleware(marked.names, serialized, kwargs, self.ledger.registry):
            return True
        marked.taken[run_id] = None  # another model's call: charged here, never by the middleware
        return False

    def _charged_inside(self, run_id: UUID, charge: Charge | None) -> None:
        """Tell the ``BudgetMiddleware`` whose call this run was made in what this handler charged
        for it (a model swapped in further in answered the call: the middleware counts it in the
        run's caps instead of charging it again)."""
        marked = _MIDDLEWARE_CALL.get()
        if marked is not None and run_id in marked.taken and marked.taken[run_id] is None:
            marked.taken[run_id] = charge  # (a second handler of the ledger charged nothing more)

    def _start(self, serialized: dict[str, Any], inputs: Inputs, run_id: UUID, kwargs: Any) -> None:
        if self._is_router(kwargs):
            self._note(run_id, kwargs)  # its payer, for the tier run inside it
            return
        if _MIDDLEWARE_CALL.get() is not None and self._by_middleware(serialized, run_id, kwargs):
            return
        batch = self._join(kwargs)
        try:
            call = self._call(serialized, kwargs)
            ttl = _cache_writes(inputs, kwargs)
            args = self._args(call, self._count(call.counter, inputs, call.tools), ttl)
            seq, request_id = self._request_id(run_id)
            while True:
                reservation = self._reserve(call, args, request_id, run_id, inputs[0])
                if reservation is None:  # another handler of the ledger charges this call
                    self._left_to_another(batch)
                    return
                kept = self._keep(run_id, call, reservation, ttl, seq, kwargs, batch, inputs[0])
                if kept is not _TAKEN:
                    break
                request_id = None
        except BaseException as e:  # the call will not be sent: neither will its batch
            for held in self._sink(batch, e):
                self.ledger.release(held)
            raise
        if not kept:
            self.ledger.release(reservation)
            raise self._refused(batch)

    def _start_plain(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], run_id: UUID, kwargs: Any
    ) -> bool:
        """:meth:`_start` of the common chat call in one pass: one prompt of plain-text messages
        (converted and counted from caches), under a run id no open run of this handler holds,
        with no route, middleware, batch, outer payer, tools or cache markers. ``False``, having
        reserved nothing, for any other call: :meth:`_start` answers it. Same reservation, same
        errors (tests/unit/test_ledger_fast_paths.py)."""
        params: Mapping[str, Any] = kwargs.get("invocation_params") or _EMPTY
        meta: Mapping[str, Any] = kwargs.get("metadata") or _EMPTY
        size = kwargs.get("batch_size")
        if (
            len(messages) != 1
            or (type(size) is int and size > 1)  # one prompt of several (see _Batch)
            or run_id in self._runs  # a reused config["run_id"]: the general path picks the request id
            or (self._suffixes and str(run_id) in self._suffixes)
            or params.get("_type") == ROUTER_LLM_TYPE
            or ROUTE_KEY in meta
            or params.get("tools")
            or params.get("response_format")  # a structured-output schema: counted with the tools
            or params.get("cache_control")
            or _MIDDLEWARE_CALL.get() is not None
            or routed_model_now() is not None
            or (self._payers and self._outer(kwargs) is not None)
        ):
            return False
        model = self.model or _model_named(serialized, params, meta)
        if model is None:  # the general path names the problem
            return False
        counter = self.counter or self._counters.get(model)
        if counter is None:  # the model's first call: the general path makes its counter
            return False
        converted = []
        for m in messages[0]:
            plain = plain_message(m)
            if plain is None:
                return False
            converted.append(plain)
        tags = kwargs.get("tags") or ()
        feature, user, conversation = _payer_of(meta, tags)
        caching = cache_in_use()
        tenant = tenant_of(meta, tags) if caching else None  # (checked before anything is held)
        max_output = self._max_output(params, meta)
        request_id = str(run_id)
        try:
            reservation = self.ledger.reserve(
                model=model,
                input_tokens=int(counter.count_messages(converted)),
                max_output_tokens=max_output,
                feature=feature or self.feature,
                user=user or self.user,
                conversation=conversation,
                request_id=request_id,
                choices=first(int, CHOICE_KEYS, params) or 1,
            )
        except InvalidInputError as e:
            if e.field != "request_id":
                raise
            if not self._held_by_another(run_id, messages[0]):  # (else the general path leaves it)
                self._next_suffix(request_id, 0)  # a settled id: the general path tries from #1
            return False  # a reused run id already settled: the general path takes the next free id
        except BudgetUnavailableError:
            self.ledger.abandon(request_id)  # never retried under the run's id
            raise
        now = time.monotonic()
        run = _Run(reservation=reservation, counter=counter, touched=now, prompt=messages[0])
        with self._lock:
            kept = run_id not in self._runs
            if kept:
                if now >= self._sweep_at or len(self._runs) >= _MAX_OPEN:
                    self._sweep(now)
                self._runs[run_id] = run
        if kept:
            self._watch(run_id, run)
            if caching:  # else no claim to make: the payer is not worked out
                run.claim = claim_run(_payer_in_force(reservation, None, tenant), messages[0], run=run_id)
            return True
        # A call reusing this run id started meanwhile and reserved under the same id: the
        # ledger returned that reservation (a live id's), which is that call's; the general path
        # reserves this call under the next free id.
        return False

    def _end_plain(self, run_id: UUID, response: LLMResult) -> bool:
        """:meth:`_settle` and :meth:`_finish` of a run :meth:`_start_plain` could have opened
        that returned a plain reply (:func:`_plain_reply`), in one pass; ``False``, having done
        nothing, for any other end."""
        if self._payers:  # the router's own run (generate() paths) may have noted its payer
            return False
        plain = _plain_reply(response)
        if plain is None:
            return False
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return False
            usage = None
            if run.next is None and run.batch is None and run.total is None:
                usage = _plain_usage(plain, run)
            if usage is None:
                self._runs[run_id] = run  # put back for the general reading
                return False
            self._ended(run_id, run)
        self.ledger.settle(run.reservation, usage, counter=run.counter, premium_model=run.premium_model)
        return True

    async def _astart(self, serialized: dict[str, Any], inputs: Inputs, run_id: UUID, kwargs: Any) -> None:
        if self._is_router(kwargs):
            self._note(run_id, kwargs)
            return
        if _MIDDLEWARE_CALL.get() is not None and self._by_middleware(serialized, run_id, kwargs):
            return
        batch = self._join(kwargs)
        try:
            call = self._call(serialized, kwargs)
            ttl = _cache_writes(inputs, kwargs)
            args = self._args(call, await self._acount(call.counter, inputs, call.tools), ttl)
            seq, request_id = self._request_id(run_id)
            while True:
                reservation = await self._areserve(call, args, request_id, run_id, inputs[0])
                if reservation is None:  # another handler of the ledger charges this call
                    self._left_to_another(batch)
                    return
                kept = self._keep(run_id, call, reservation, ttl, seq, kwargs, batch, inputs[0])
                if kept is not _TAKEN:
                    break
                request_id = None
        except BaseException as e:  # the call will not be sent: neither will its batch
            for held in self._sink(batch, e):
                await self.ledger.arelease(held)
            raise
        if not kept:
            await self.ledger.arelease(reservation)  # a sibling was refused while this one reserved
            raise self._refused(batch)

    def _request_id(self, run_id: UUID) -> tuple[int, str | None]:
        """The request id of a run: its run id, suffixed when runs under that id are still open
        (a ``config["run_id"]`` reused by concurrent calls), and that suffix's number."""
        last = self._runs.get(run_id)
        if last is None:
            return 0, str(run_id)
        while last.next is not None:
            last = last.next
        return last.seq + 1, f"{run_id}+{last.seq + 1}"

    def _keep(
        self,
        run_id: UUID,
        call: _Call,
        reservation: Reservation,
        ttl: CacheMarks | None,
        seq: int,
        kwargs: Mapping[str, Any],
        batch: _Batch | None,
        prompt: object,
    ) -> object:
        """Remember the run until it ends; ``False`` (nothing kept) when its batch was refused,
        ``_TAKEN`` (nothing kept) when another open call of this handler holds its request id."""
        size = kwargs.get("batch_size")
        now = time.monotonic()
        run = _Run(
            reservation=reservation,
            counter=call.counter,
            touched=now,
            premium_model=call.premium_model,
            ttl=ttl,
            seq=seq,
            batch=batch,
            batched=type(size) is int and size > 1,
            prompt=prompt,
        )
        with self._lock:
            held = self._runs.get(run_id)
            while held is not None:  # concurrent calls reusing a run id reserved the same request id
                if held.reservation.request_id == reservation.request_id:
                    return _TAKEN
                held = held.next
            if now >= self._sweep_at or len(self._runs) >= _MAX_OPEN:
                self._sweep(now)
            if batch is not None:
                self._started(batch)
                if batch.refusal is not None:
                    return False
                batch.runs.append(run_id)
            if run_id in self._runs:  # another call's run is open under this id: pair by context
                run.key = next(_KEYS)
            self._push(run_id, run)
        if run.key:
            _mark_joined(run_id, run.key)
        self._watch(run_id, run)
        if isinstance(prompt, list) and cache_in_use():  # chat messages: LangChain's lookup is next
            run.claim = claim_run(
                _payer_in_force(reservation, call.attribution, call.tenant), prompt, run=run_id
            )
        return True

    def _sweep(self, now: float) -> None:
        """Forget runs and payers idle for ``_IDLE_LEASES`` leases (lock held; at most once a
        lease), and, past ``_MAX_OPEN`` runs, the runs closed already (``settled``: orphans kept
        only for a late end), then the oldest of the others down to three quarters: LangChain
        never ends a cancelled async call. Rare on purpose: the end of a live run forgotten here
        can no longer be charged."""
        lease = self.ledger.lease_ms / 1000
        self._sweep_at, oldest = now + lease, now - lease * _IDLE_LEASES
        crowded = len(self._runs) >= _MAX_OPEN
        if crowded:  # closed runs go first; then keep the newest three quarters of the others
            ages = sorted(r.touched for head in self._runs.values() for r in _chain(head) if not r.settled)
            excess = len(ages) - _MAX_OPEN * 3 // 4
            if excess > 0:
                oldest = max(oldest, ages[excess])
        if len(self._payers) >= _MAX_OPEN:
            self._drop_oldest_payers()
        for run_id, head in list(self._runs.items()):
            live: list[_Run] = []
            run: _Run | None = head
            while run is not None:
                if run.touched >= oldest and not (crowded and run.settled):
                    live.append(run)
                else:
                    if run.claim is not None:  # its lookup and store, if still to come, skip the cache
                        withdraw_claim(run.claim)
                    if run.watch is not None:  # forgotten: its task need not call back
                        _unwatch(run)
                    if self._orphans and self._orphans.get(run_id) is run:
                        del self._orphans[run_id]
                run = run.next
            if not live:
                del self._runs[run_id]
            else:
                for r, n in zip(live, [*live[1:], None], strict=True):
                    r.next = n
                self._runs[run_id] = live[0]
        idle = now - lease * _IDLE_LEASES
        for noted, p in list(self._payers.items()):
            if p.touched < idle:
                self._payers.pop(noted, None)

    def _drop_oldest_payers(self) -> None:
        """Forget the oldest quarter of the payers (lock held)."""
        by_age = sorted(self._payers.items(), key=lambda kv: kv[1].touched)
        for run_id, _ in by_age[: len(by_age) // 4 + 1]:
            self._payers.pop(run_id, None)

    def _note(self, run_id: UUID, kwargs: Mapping[str, Any]) -> None:
        """Record the payer of a chain run (or the router's run) for the runs inside it: each
        field's outermost value, an enclosing ``attribute()`` block first, then the outer runs'
        metadata and tags, then blocks opened inside them."""
        meta: Mapping[str, Any] = kwargs.get("metadata") or _EMPTY
        tags = kwargs.get("tags") or ()
        outer = self._outer(kwargs)
        if outer is None and not meta and not tags:
            return
        own = _payer_of(meta, tags)
        now = time.monotonic()
        if outer is None:
            if own == _NOBODY:  # nothing to win over the runs inside
                return
            f, u, c = outer_first(_fields(current_attribution()), own)
        else:
            outer.touch(now)
            f, u, c = outer_first(outer.payer, _fields(current_attribution()), own)
        payer = _Payer((f, u, c), now, outer)
        if run_id in self._payers:  # another chain's, open under a reused run id: pair by context
            key = next(_KEYS)
            self._payers[(run_id, key)] = payer
            _mark_joined(run_id, key)
        else:
            self._payers[run_id] = payer
        if now >= self._sweep_at or len(self._payers) >= _MAX_OPEN:
            with self._lock:
                self._sweep(now)

    def _outer(self, kwargs: Mapping[str, Any]) -> _Payer | None:
        """The payer noted by the run's parent, if it noted one (the one this context's chain
        noted, when concurrent chains reuse the parent's run id)."""
        parent: UUID | None = kwargs.get("parent_run_id")
        if parent is None or not self._payers:
            return None
        for key in _joined_keys(parent):
            payer = self._payers.get((parent, key))
            if payer is not None:
                return payer
        return self._payers.get(parent)

    def _forget_payer(self, run_id: UUID) -> None:
        if self._payers:
            for key in _joined_keys(run_id):
                if self._payers.pop((run_id, key), None) is not None:
                    _unmark(run_id, key)
                    return
            self._payers.pop(run_id, None)

    def _push(self, run_id: UUID, run: _Run) -> None:
        """Open ``run`` under ``run_id`` (lock held), after any run still open under that id."""
        last = self._runs.setdefault(run_id, run)
        if last is not run:
            while last.next is not None:
                last = last.next
            last.next = run

    def _current(self, run_id: UUID) -> _Run | None:
        """The run an event under ``run_id`` is about: the one open under it, or, when calls
        reusing the id are open at once, the one this context started (:data:`_JOINED`), else
        the oldest."""
        head = self._runs.get(run_id)
        if head is None or head.next is None:
            return head
        for key in _joined_keys(run_id):
            run: _Run | None = head
            while run is not None:
                if run.key == key:
                    return run
                run = run.next
        return head

    def _is_open(self, run_id: UUID, run: _Run) -> bool:
        """Whether ``run`` is still open under ``run_id`` (lock held)."""
        held = self._runs.get(run_id)
        while held is not None:
            if held is run:
                return True
            held = held.next
        return False

    def _pop(self, run_id: UUID) -> _Run | None:
        """Close the run an end under ``run_id`` is about (:meth:`_current`; lock held)."""
        run = self._current(run_id)
        if run is not None:
            self._unlink(run_id, run)
        return run

    def _unlink(self, run_id: UUID, run: _Run) -> None:
        """Close ``run``, open under ``run_id`` (lock held)."""
        head = self._runs[run_id]
        if run is head:
            if run.next is not None:
                self._runs[run_id] = run.next
            else:
                del self._runs[run_id]
        else:
            while head.next is not run:
                head = head.next  # type: ignore[assignment]
            head.next = run.next
        run.next = None
        if run.key:
            _unmark(run_id, run.key)
        self._ended(run_id, run)

    # -- a start that raised: LangChain ends the run in no handler -------------------------------

    def _stopped(
        self, run_id: UUID, inputs: Inputs, kwargs: Mapping[str, Any], error: BaseException
    ) -> list[tuple[Ledger, Reservation]]:
        """This handler stopped a call at its start (a refusal, bad input): LangChain raises out of
        the start and ends the run in no handler. The reservations the other budget handlers of
        the call (a per-tenant ledger's and a global one's, say) made before this one, for it and,
        in a multi-prompt call, for its other prompts: to release, each in its ledger. A handler
        that is not a budget handler cannot be seen: budget handlers come after ``raise_error``
        guardrails in the callbacks list (see the module docstring)."""
        prompt = inputs[0] if inputs else None
        params = kwargs.get("invocation_params")
        with _HANDLERS_LOCK:
            others = [h for h in _HANDLERS if h is not self]
        held: list[tuple[Ledger, Reservation]] = []
        for other in others:
            if other._runs or other._batches:
                held += [(other.ledger, r) for r in other._drop_call(run_id, prompt, params, error)]
        return held

    def _stop(self, run_id: UUID, inputs: Inputs, kwargs: Mapping[str, Any], error: BaseException) -> None:
        """The call will not be sent: no cache lookup comes for it, and the other budget handlers
        of the call release what they reserved for it (see :meth:`_stopped`)."""
        drop_claims(run_id)  # another handler's claim on the run: no lookup comes
        for ledger, reservation in self._stopped(run_id, inputs, kwargs, error):
            ledger.release(reservation)

    def _drop_call(
        self, run_id: UUID, prompt: object, params: object, error: BaseException
    ) -> list[Reservation]:
        """Close the run of the call another handler stopped (started with ``prompt``, the same
        object every handler of the call is handed) and, in a multi-prompt call, every prompt
        of it this handler started; their reservations, to release."""
        with self._lock:
            run = self._runs.get(run_id)
            while run is not None and run.prompt is not prompt:
                run = run.next
            batch = run.batch if run is not None else None
            if batch is None and params is not None:
                found = self._batches.get(id(params))
                batch = found if found is not None and found.params is params else None
            if batch is None:
                if run is None:
                    return []
                self._unlink(run_id, run)
                return [run.reservation]
            if batch.refusal is None:
                batch.refusal = fresh_refusal(error)
            runs = [r for i in batch.runs if (r := self._pop(i)) is not None]
            batch.runs.clear()
        return [r.reservation for r in runs]

    def _ended(self, run_id: UUID, run: _Run) -> None:
        """``run`` ended by its own event (lock held): no task watch, no orphan account left, no
        claim on a cache lookup."""
        if run.claim is not None:
            run.claim.close()
        if run.watch is not None:
            _unwatch(run)
        if self._orphans and self._orphans.get(run_id) is run:
            del self._orphans[run_id]  # its real end came: charged by it

    def _watch(self, run_id: UUID, run: _Run) -> None:
        """When the run started in an asyncio task, watch that task (:meth:`_task_ended`):
        LangChain calls no ``on_llm_error`` for a cancelled ``ainvoke`` / ``abatch`` (a
        timeout), nor for a call cancelled while its rate limiter made it wait; its reservation
        would be held until its lease ends."""
        loop = asyncio._get_running_loop()
        task = None if loop is None else asyncio.current_task(loop)
        if task is None:
            return
        ended = functools.partial(self._task_ended, run_id, run)
        run.watch = (task, ended)
        task.add_done_callback(ended)

    def _task_ended(self, run_id: UUID, run: _Run, task: asyncio.Task[Any]) -> None:
        """The task ``run`` started in is done (in the event loop) with the run still open: an
        orphan, unless another task drives the call on (LangChain's v3 stream producer, a first
        chunk read under ``wait_for``). Cancelled before any output, its reservation is released
        at once (a real end still charges the call: a commit after a release applies); one that
        streamed output keeps its hold. Either way, once no chunk came for
        :data:`_ORPHAN_GRACE_S` (half the ledger's lease if shorter; or the loop shuts down, or
        the process exits first), the run is
        released, or charged the flagged estimate of what it streamed (which ends its hold)."""
        with self._lock:
            if not self._is_open(run_id, run):
                return
            run.watch = None  # (this callback is running)
            self._orphans[run_id] = run
        _ORPHANED_HANDLERS.add(self)
        if task.cancelled():
            if run.claim is not None:
                run.claim.close()  # its lookup's store never comes: nothing else may use it
            if not run.streamed and not run.evented:  # nothing produced, nothing to estimate: closed
                self.ledger.release(run.reservation)
                run.settled = True
            # else it produced output (billed): held until its estimate or its real end is
            # committed, so that no other call spends the room it is about to be charged
        try:
            watcher = task.get_loop().create_task(self._orphan_watch(run_id, run))
        except RuntimeError:  # its loop is closed: no chunk can come
            self._orphan_gone(run_id, run)
            return
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        # the grace, kept whether or not the loop runs again (asyncio.run may be shutting it down)
        _ORPHAN_CLOCK.arm(self._orphan_wait(), self, run_id, run, run.touched)

    def _orphan_wait(self) -> float:
        """How long an orphan may stay silent: at most half the lease, so that a kept hold
        cannot lapse before its estimate is charged."""
        return min(_ORPHAN_GRACE_S, self.ledger.lease_ms / 2000)

    async def _orphan_watch(self, run_id: UUID, run: _Run) -> None:
        """The orphan's watch in its loop: closes it at once when the loop shuts down and cancels
        this watch (a CLI's ``asyncio.run`` returning soon after a timeout). The grace itself is
        kept by :data:`_ORPHAN_CLOCK` too, for a loop that never runs this watch to its end."""
        touched = run.touched
        try:
            while True:
                await asyncio.sleep(self._orphan_wait())
                with self._lock:
                    if not self._is_open(run_id, run):
                        return  # it ended, and was charged
                    if run.touched == touched:
                        break  # silent for the grace: gone
                    touched = run.touched  # still streaming: another task reads it on
        finally:  # (also when the loop shuts down and cancels this watch)
            self._orphan_gone(run_id, run)

    def _orphan_due(self, run_id: UUID, run: _Run, touched: float) -> None:
        """The grace of orphan ``run`` (last chunk at ``touched`` then) ran out (in
        :data:`_ORPHAN_CLOCK`'s thread): gone unless a chunk came meanwhile (then watched again)."""
        with self._lock:
            if self._orphans.get(run_id) is not run:
                return  # closed already: by its real end, its loop's watch, or the exit
            streaming = self._is_open(run_id, run) and run.touched != touched
            touched = run.touched
        if streaming:  # another task reads it on
            _ORPHAN_CLOCK.arm(self._orphan_wait(), self, run_id, run, touched)
            return
        self._orphan_gone(run_id, run)
        self._drop_stranded_watches()

    def _drop_stranded_watches(self) -> None:
        """Forget the watches left pending in a loop that closed (their orphans are closed):
        each would hold its run until the handler goes, then be logged as destroyed pending."""
        for watcher in list(self._watchers):
            if watcher.done() or not watcher.get_loop().is_closed():
                continue
            self._watchers.discard(watcher)
            with contextlib.suppress(AttributeError):  # (closed with its loop: nothing to report)
                setattr(watcher, "_log_destroy_pending", False)  # noqa: B010 (asyncio's own flag)
            watcher.get_coro().close()  # (its finally finds the orphan closed)

    def _orphan_gone(self, run_id: UUID, run: _Run) -> None:
        """Close the account of an orphan whose call is gone: released, or its streamed estimate
        charged. The run is kept: a late real end is a duplicate (or a commit after a release)."""
        with self._lock:
            if self._orphans.get(run_id) is not run:
                return
            del self._orphans[run_id]
            still_open = self._is_open(run_id, run)
        if still_open:
            self._finish(self._settle_of(run, None, failed=True))
            run.settled = True

    def _orphans_at_exit(self) -> None:
        for run_id, run in list(self._orphans.items()):
            self._orphan_gone(run_id, run)

    # -- multi-prompt calls (see _Batch) ----------------------------------------------------------

    def _join(self, kwargs: Mapping[str, Any]) -> _Batch | None:
        """The batch this prompt belongs to (``None``: a single prompt).

        Raises:
            BudgetExceededError: The call was refused already: this prompt is refused too
                (``TokenBudgetError`` when the call was stopped by another error).
        """
        size, params = kwargs.get("batch_size"), kwargs.get("invocation_params")
        if type(size) is not int or size < 2 or params is None:
            return None
        now = time.monotonic()
        with self._lock:
            batch = self._batches.get(id(params))
            if batch is None or batch.params is not params:
                self._forget_stale(now)
                batch = self._batches[id(params)] = _Batch(params=params, left=size, touched=now)
            batch.touched = now
            if batch.refusal is not None:
                self._started(batch)
                raise batch.refusal()
        return batch

    def _left_to_another(self, batch: _Batch | None) -> None:
        """This prompt is another handler's to charge: it finished starting here, holding nothing."""
        if batch is not None:
            with self._lock:
                self._started(batch)

    def _sink(self, batch: _Batch | None, error: BaseException) -> list[Reservation]:
        """Mark the batch refused; the reservations of its started prompts, to release."""
        if batch is None:
            return []
        with self._lock:
            if batch.refusal is None:
                batch.refusal = fresh_refusal(error)
            self._started(batch)
            held = [run.reservation for r in batch.runs if (run := self._pop(r)) is not None]
            batch.runs.clear()
        return held

    def _started(self, batch: _Batch) -> None:
        """One more prompt of ``batch`` finished starting (lock held): forget it after the last."""
        batch.left -= 1
        if batch.left <= 0:
            self._forget(batch)

    def _forget(self, batch: _Batch) -> None:
        if self._batches.get(id(batch.params)) is batch:
            del self._batches[id(batch.params)]

    def _forget_stale(self, now: float) -> None:
        """Forget batches idle longer than a lease (lock held): a refused synchronous batch never
        starts its later prompts, and whatever it reserved has expired by then anyway."""
        oldest = now - self.ledger.lease_ms / 1000
        for batch in [b for b in self._batches.values() if b.touched < oldest]:
            self._forget(batch)

    @staticmethod
    def _refused(batch: _Batch | None) -> BaseException:
        assert batch is not None  # _keep refuses only a prompt of a refused batch
        assert batch.refusal is not None
        return batch.refusal()

    def _chunk(self, run_id: UUID, token: object, chunk: object) -> None:
        """A stream chunk: keep a Claude running total (the latest replaces, never adds) and the
        text streamed so far (for runs in flight only: dropped when the run settles)."""
        run = self._current(run_id)
        if run is None:
            return
        run.touched = time.monotonic()
        if run.claim is not None:
            run.claim.streamed()
        total = running_total(chunk)
        if total is not None:
            run.total = total
        text = streamed_text(token, chunk)
        if text:
            if run.streamed is None:
                run.streamed = [text]
            else:
                run.streamed.append(text)

    def _event(self, run_id: UUID, event: object) -> None:
        """A v3 protocol event: keep the output it carries (see :func:`stream_event_text`)."""
        text = stream_event_text(event)
        if not text:
            return
        run = self._current(run_id)
        if run is None:
            return
        run.touched = time.monotonic()
        if run.claim is not None:
            run.claim.streamed()
        if run.evented is None:
            run.evented = [text]
        else:
            run.evented.append(text)

    def _unsent_siblings(self, run_id: UUID) -> list[_Settle]:
        """A prompt of a sync multi-prompt chat call (``generate([[a], [b], [c]])``) failed:
        LangChain's ``BaseChatModel.generate`` sends the prompts one by one, calls
        ``on_llm_error`` for the failed one and raises, ending no other. The prompts started
        before it were sent (and billed): each is charged a flagged estimate (its counted input,
        plus what it streamed; its reply is not visible), but one a ``TokenBudgetLLMCache``
        answered is settled as the hit it was (its claim kept the reply); those after it were
        never sent: released. ``agenerate`` ends every prompt itself: not called for it."""
        with self._lock:
            run = self._current(run_id)
            batch = run.batch if run is not None else None
            if run is None or batch is None or not isinstance(run.prompt, list) or run_id not in batch.runs:
                return []
            k = batch.runs.index(run_id)
            before, after = batch.runs[:k], batch.runs[k + 1 :]
            batch.runs.clear()
            sent = [r for i in before if (r := self._pop(i)) is not None]
            unsent = [r for i in after if (r := self._pop(i)) is not None]
        answered = [r for r in sent if r.claim is not None and r.claim.served is not None]
        settles = [  # a prompt the cache answered was not sent: settled as the hit it was
            self._settle_of(r, LLMResult(generations=[list(r.claim.served)]), failed=False)
            for r in answered
            if r.claim is not None and r.claim.served is not None
        ]
        settles += [
            _Settle(
                r.reservation,
                None,
                streamed_estimate(r.streamed, r.evented),
                False,
                r.counter,
                None,
                r.premium_model,
            )
            for r in sent
            if r not in answered
        ]
        return settles + [
            _Settle(r.reservation, None, "", True, r.counter, None, r.premium_model) for r in unsent
        ]

    def _settle(self, run_id: UUID, response: LLMResult | None, *, failed: bool) -> _Settle | None:
        """What the ledger needs to close the run (``None``: not ours, or settled already)."""
        if self._payers:  # the router's own run (generate() paths) noted its payer
            self._forget_payer(run_id)
        with self._lock:
            run = self._pop(run_id)
            if run is not None and run.batch is not None:
                self._forget(run.batch)  # a prompt ended: the call is past starting its prompts
        if run is None:
            return None
        return self._settle_of(run, response, failed=failed)

    def _settle_of(self, run: _Run, response: LLMResult | None, *, failed: bool) -> _Settle:
        """What the ledger needs to close ``run`` (ended with ``response``, or ``failed``)."""
        if run.claim is not None:
            run.claim.close()
        plain = None if run.total is not None else _plain_reply(response)
        if plain is not None:  # the common case, read in one go (see _plain_reply)
            usage_of = _plain_usage(plain, run)
            if usage_of is not None:
                return _Settle(run.reservation, usage_of, "", failed, run.counter, None, run.premium_model)
        replies: list[BaseMessage] = []
        texts: list[BaseMessage] = []  # completion models' generations: text only
        for gs in response.generations if response else ():
            for g in gs:
                m = getattr(g, "message", _NO_MESSAGE)
                if m is _NO_MESSAGE:
                    texts.append(AIMessage(g.text))
                elif isinstance(m, BaseMessage):
                    replies.append(m)
        replies += texts
        totals = [run.total] if run.total is not None else []
        usage = reported(replies, totals, marked_ttl=run.ttl)
        if usage is None and response is not None and not run.batched:
            usage = llm_output_usage(response.llm_output)
        text = reply_text(replies) if usage is None else ""  # only an estimate reads the text
        if failed and usage is None and not text and (run.streamed or run.evented):
            text = streamed_estimate(run.streamed, run.evented)  # the error carries no partial reply
        premium = run.premium_model or premium_model_of(route_of(replies))
        hit = cache_hit_of(replies)
        recorded_in = run.claim.recorded_in if run.claim is not None else None
        elsewhere = recorded_in is not None and not self.ledger.shares_books_with(recorded_in)
        if hit is not None and hit.recorded and elsewhere:  # the cache recorded it in its own ledger
            hit = hit._replace(recorded=False)  # this ledger records it too
        return _Settle(run.reservation, usage, text, failed, run.counter, hit, premium)

    def _finish(self, s: _Settle | None) -> Charge | None:
        if s is None:
            return None
        hit = s.hit or _NO_HIT
        return self.ledger.settle(
            s.reservation, s.usage, reply_text=s.text, failed=s.failed, counter=s.counter,
            cache_hit=s.hit is not None, saved_usd=hit.saved_usd, hit_recorded=hit.recorded,
            premium_model=s.premium_model,
        )  # fmt: skip

    async def _afinish(self, s: _Settle | None) -> Charge | None:
        if s is None:
            return None
        hit = s.hit or _NO_HIT
        return await self.ledger.asettle(
            s.reservation, s.usage, reply_text=s.text, failed=s.failed, counter=s.counter,
            cache_hit=s.hit is not None, saved_usd=hit.saved_usd, hit_recorded=hit.recorded,
            premium_model=s.premium_model,
        )  # fmt: skip


def _chain(head: _Run) -> Iterator[_Run]:
    """The runs open under one run id, oldest first."""
    run: _Run | None = head
    while run is not None:
        yield run
        run = run.next


def _unwatch(run: _Run) -> None:
    """The run ended: its task's done-callback is not needed (a long-lived task making many
    calls would keep one per call)."""
    task, ended = run.watch  # type: ignore[misc]
    run.watch = None
    loop = task.get_loop()
    if asyncio._get_running_loop() is loop:
        task.remove_done_callback(ended)
        return
    with contextlib.suppress(RuntimeError):  # (its loop is closed: its tasks are done)
        loop.call_soon_threadsafe(task.remove_done_callback, ended)  # a task is its loop's to change


def _plain_reply(response: LLMResult | None) -> AIMessage | None:
    """The reply of a call that returned one chat message reporting its usage, neither from a
    cache nor routed: the case the general reading of :meth:`_BudgetHandler._settle` reduces to
    ``usage_from_langchain(reply.usage_metadata)``, no cache hit, no route. Else ``None``."""
    if response is None or len(response.generations) != 1 or len(response.generations[0]) != 1:
        return None
    m = getattr(response.generations[0][0], "message", None)
    if type(m) is not AIMessage or not m.usage_metadata or m.usage_metadata.get("total_cost") == 0:
        return None
    meta = m.response_metadata
    return None if CACHE_HIT_KEY in meta or ROUTE_KEY in meta else m


def _plain_usage(reply: AIMessage, run: _Run) -> Usage | None:
    """The usage a plain reply (:func:`_plain_reply`) reports, its unsplit cache writes at the
    run's marked TTL; ``None`` when the core rejects its figures: the general reading of the run
    then charges the estimate (:func:`reported`)."""
    try:
        return usage_from_langchain(reply.usage_metadata, marked_ttl=run.ttl)
    except InvalidInputError:
        return None


def _model_named(
    serialized: Mapping[str, Any] | None, params: Mapping[str, Any], meta: Mapping[str, Any]
) -> str | None:
    """The model a call names: its ``model`` / ``model_name`` parameter or setting, else ``ls_model_name``."""
    built: Mapping[str, Any] = (serialized or _EMPTY).get("kwargs") or _EMPTY
    return first(str, MODEL_KEYS, params, built) or first(str, ["ls_model_name"], meta)


def _cache_writes(inputs: Inputs, kwargs: Mapping[str, Any]) -> CacheMarks | None:
    """:func:`cache_writes_in` of a callback's chat messages and invocation parameters."""
    if isinstance(inputs[0], str):  # a completion model's prompts: no markers
        return None
    params: Mapping[str, Any] = kwargs.get("invocation_params") or _EMPTY
    messages = [m for batch in inputs if isinstance(batch, list) for m in batch]
    return cache_writes_in(messages, params.get("tools"), option=params.get("cache_control"))


class _Call(NamedTuple):
    """What a model call reserves with, read from its callback arguments."""

    counter: SupportsTokenCount
    model: str
    max_output_tokens: int | None
    feature: str | None
    user: str | None
    conversation: str | None
    tools: Tools
    choices: int
    premium_model: str | None
    """The routed call's premium model (``None``: not routed)."""
    attribution: Attribution | None
    """The attribution to reserve under, when an ``attribute()`` block opened inside an outer
    run would otherwise win over that run's payer; ``None``: the one in force."""
    tenant: str | None = None
    """The tenant the run's metadata or tags name (scopes its cache entries)."""


def _billed_if_cut_off(settle: _Settle | None, error: BaseException) -> _Settle | None:
    """A failed run's settlement, charged the ledger's estimate (not released) when the call was
    cut off after its request may have gone out (:func:`~tokenbudget_core.failures.may_have_been_billed`:
    cancelled, timed out waiting, its connection dropped mid-answer): the provider bills it."""
    if settle is not None and settle.failed and may_have_been_billed(error):
        return settle._replace(failed=False)
    return settle


class _Settle(NamedTuple):
    reservation: Reservation
    usage: Usage | None
    text: str
    failed: bool
    counter: SupportsTokenCount
    hit: CacheHit | None
    premium_model: str | None = None


_NO_HIT = CacheHit(None, False)


class BudgetCallbackHandler(_BudgetHandler, BaseCallbackHandler):
    """Refuse model calls that would exceed a budget; commit what each call used.

    Attach it to a model (``callbacks=[handler]``) or to a run (``config={"callbacks": [...]}``).
    The payer of a run comes from its metadata (``tokenbudget_feature``/``feature``,
    ``tokenbudget_user``/``user``/``user_id``, ``tokenbudget_conversation``/``thread_id``) or
    tags (``feature:support``, ``user:u-42``), else the defaults given here (an id in metadata
    is a string, or an int or ``uuid.UUID`` taken as its ``str()``; another type is refused,
    with ``InvalidInputError`` naming the key); outer wins: an
    enclosing :func:`~tokenbudget_core.attribute` block wins over both (the ledger's rule), and
    the outermost run the handler sees that names a payer wins over inner runs' metadata and
    over ``attribute()`` blocks opened inside it. Two handlers on one ledger seeing the same
    call charge it once (the reservation's request id is the run id). A model call that a
    :class:`~langchain_tokenbudget.budget_middleware.BudgetMiddleware` on the same ledger is
    charging (an agent's model call, made while the middleware marks it) is left to the
    middleware: it is charged once; other calls made inside it (another model's) are charged here.

    Args:
        ledger: The ledger that prices, limits and records the calls.
        model: Model name to count and price unrouted calls with (default: the call's
            ``model`` / ``model_name`` invocation parameter). A routed call (a
            :class:`~langchain_tokenbudget.router_chat_model.RouterChatModel` tier run) is
            counted, reserved and charged on the model its route names (``tokenbudget_route`` in
            the run's metadata: the tier's model, or the fallback that is answering).
        feature: Default feature of the calls.
        user: Default user of the calls.
        max_output_tokens: Output tokens to reserve when the call sets no ``max_tokens``
            (default: the policy's per-call limit, else the model's maximum).
        counter: Token counter to count every call's input with, routed calls included
            (default: ``TokenCounter.for_model`` of the model charged).

    Raises:
        InvalidInputError: A bad option, named (a misspelt one, such as ``usr=``, with the closest
            option; one passed by position, with the keyword to pass it by); at a run's start,
            a payer id in its metadata of a type that is not an id (``metadata.<key>``): the
            call is not sent.

    Example:
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from tokenbudget_core.ledger import Ledger
        >>> ledger = Ledger("memory://")
        >>> handler = BudgetCallbackHandler(ledger, model="gpt-4o", feature="support")
        >>> model = GenericFakeChatModel(messages=iter(["Hi!"]))
        >>> model.invoke("hello", config={"callbacks": [handler], "metadata": {"user_id": "u-42"}}).content
        'Hi!'
    """

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Count the input and reserve the worst case; raises ``BudgetExceededError`` to refuse."""
        start_worker()  # for the stream ends the garbage collector delivers (see on_llm_error)
        try:
            if not self._start_plain(serialized, messages, run_id, kwargs):
                self._start(serialized, messages, run_id, kwargs)
        except BudgetExceededError as e:
            if not self._defer(serialized, messages, run_id, kwargs, e):
                self._stop(run_id, messages, kwargs, e)
                raise
        except BaseException as e:
            self._stop(run_id, messages, kwargs, e)
            raise

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Completion models: count the prompts and reserve the worst case."""
        start_worker()
        try:
            self._start(serialized, prompts, run_id, kwargs)
        except BaseException as e:
            self._stop(run_id, prompts, kwargs, e)
            raise

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        """Keep a Claude stream's latest running total, and the text streamed so far."""
        self._chunk(run_id, token, chunk)

    def on_stream_event(self, event: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Keep the output a v3 protocol stream (``stream_events(version="v3")``) delivered so far."""
        self._event(run_id, event)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the usage the provider reported (idempotent per run)."""
        if self._deferred and (hit := self._undefer(run_id, response)) is not None:
            self.ledger.record(**hit)  # a refused run the cache answered: nothing held to settle
            return
        marked = _MIDDLEWARE_CALL.get()
        if marked is not None and run_id in marked.taken:  # the middleware reads what it was charged
            self._charged_inside(run_id, self._finish(self._settle(run_id, response, failed=False)))
        elif not self._end_plain(run_id, response):
            self._finish(self._settle(run_id, response, failed=False))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Release the reservation, or commit an estimate when a stream broke off after output."""
        if collecting():  # a stream the garbage collector closed, maybe inside a lock we need: later
            # (this method itself: an async handler's own on_llm_error would return a coroutine)
            defer(functools.partial(BudgetCallbackHandler.on_llm_error, self, error, run_id=run_id, **kwargs))
            return
        if self._deferred:
            self._undefer(run_id)
        # (frame 1: LangChain's sync dispatcher, for this handler and the async one's sync twin)
        siblings = self._unsent_siblings(run_id) if sys._getframe(1).f_code is _SYNC_DISPATCH else ()
        charge = self._finish(
            _billed_if_cut_off(self._settle(run_id, kwargs.get("response"), failed=True), error)
        )
        if _MIDDLEWARE_CALL.get() is not None:
            self._charged_inside(run_id, charge)
        for sibling in siblings:
            self._finish(sibling)

    def on_chain_start(
        self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer the chain's metadata or tags name, for the model calls inside it."""
        self._note(run_id, kwargs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the chain's payer."""
        self._forget_payer(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the chain's payer."""
        self._forget_payer(run_id)

    def on_tool_start(
        self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer for the model calls a tool makes (as :meth:`on_chain_start`)."""
        self._note(run_id, kwargs)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the tool run's payer."""
        self._forget_payer(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the tool run's payer."""
        self._forget_payer(run_id)

    def on_retriever_start(
        self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer for the model calls a retriever makes (as :meth:`on_chain_start`)."""
        self._note(run_id, kwargs)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the retriever run's payer."""
        self._forget_payer(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the retriever run's payer."""
        self._forget_payer(run_id)


_SYNC_TWINS = frozenset(
    {
        "on_chat_model_start",
        "on_llm_start",
        "on_llm_new_token",
        "on_stream_event",
        "on_llm_end",
        "on_llm_error",
        "on_chain_start",
        "on_chain_end",
        "on_chain_error",
        "on_tool_start",
        "on_tool_end",
        "on_tool_error",
        "on_retriever_start",
        "on_retriever_end",
        "on_retriever_error",
    }
)
_SYNC_DISPATCH = handle_event.__code__


class AsyncBudgetCallbackHandler(_BudgetHandler, AsyncCallbackHandler):
    """Async twin of :class:`BudgetCallbackHandler`: counting and ledger calls are awaited.

    Takes the same arguments. Refuses sync calls as well (see the module docstring).

    Example:
        >>> import asyncio
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from tokenbudget_core.ledger import Ledger
        >>> handler = AsyncBudgetCallbackHandler(Ledger("memory://"), model="gpt-4o")
        >>> model = GenericFakeChatModel(messages=iter(["Hi!"]), callbacks=[handler])
        >>> asyncio.run(model.ainvoke("hello")).content
        'Hi!'
    """

    def __getattribute__(self, name: str) -> Any:
        # LangChain's sync dispatcher would collect our coroutines and swallow their errors:
        # hand it the sync twin. (Frame 1 is whoever looks the hook up.)
        if name in _SYNC_TWINS and sys._getframe(1).f_code is _SYNC_DISPATCH:
            return getattr(BudgetCallbackHandler, name).__get__(self)
        return super().__getattribute__(name)

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Count the input and reserve the worst case; raises ``BudgetExceededError`` to refuse."""
        try:
            await self._astart(serialized, messages, run_id, kwargs)
        except BudgetExceededError as e:
            if not self._defer(serialized, messages, run_id, kwargs, e):
                await self._astop(run_id, messages, kwargs, e)
                raise
        except BaseException as e:
            await self._astop(run_id, messages, kwargs, e)
            raise

    async def _astop(
        self, run_id: UUID, inputs: Inputs, kwargs: Mapping[str, Any], error: BaseException
    ) -> None:
        """Async twin of :meth:`_BudgetHandler._stop`."""
        drop_claims(run_id)
        for ledger, reservation in self._stopped(run_id, inputs, kwargs, error):
            await ledger.arelease(reservation)

    async def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Completion models: count the prompts and reserve the worst case."""
        try:
            await self._astart(serialized, prompts, run_id, kwargs)
        except BaseException as e:
            await self._astop(run_id, prompts, kwargs, e)
            raise

    async def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        """Keep a Claude stream's latest running total, and the text streamed so far."""
        self._chunk(run_id, token, chunk)

    async def on_stream_event(self, event: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Keep the output a v3 protocol stream (``astream_events(version="v3")``) delivered so far."""
        self._event(run_id, event)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the usage the provider reported (idempotent per run)."""
        if self._deferred and (hit := self._undefer(run_id, response)) is not None:
            await self.ledger.arecord(**hit)  # a refused run the cache answered: nothing held to settle
            return
        charge = await self._afinish(self._settle(run_id, response, failed=False))
        if _MIDDLEWARE_CALL.get() is not None:
            self._charged_inside(run_id, charge)  # the middleware reads what it was charged

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Release the reservation, or commit an estimate when a stream broke off after output."""
        if self._deferred:
            self._undefer(run_id)
        charge = await self._afinish(
            _billed_if_cut_off(self._settle(run_id, kwargs.get("response"), failed=True), error)
        )
        if _MIDDLEWARE_CALL.get() is not None:
            self._charged_inside(run_id, charge)

    async def on_chain_start(
        self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer the chain's metadata or tags name, for the model calls inside it."""
        self._note(run_id, kwargs)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the chain's payer."""
        self._forget_payer(run_id)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the chain's payer."""
        self._forget_payer(run_id)

    async def on_tool_start(
        self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer for the model calls a tool makes (as :meth:`on_chain_start`)."""
        self._note(run_id, kwargs)

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the tool run's payer."""
        self._forget_payer(run_id)

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the tool run's payer."""
        self._forget_payer(run_id)

    async def on_retriever_start(
        self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note the payer for the model calls a retriever makes (as :meth:`on_chain_start`)."""
        self._note(run_id, kwargs)

    async def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the retriever run's payer."""
        self._forget_payer(run_id)

    async def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the retriever run's payer."""
        self._forget_payer(run_id)
