"""Budgets enforced on LlamaIndex LLM calls through the callback manager.

:class:`BudgetCallbackHandler` is a ``BaseCallbackHandler``. LlamaIndex's LLM wrappers
(``llm_chat_callback`` / ``llm_completion_callback``) call ``on_event_start`` *before* the
provider call and let its exceptions through (the same mechanism that lets LlamaIndex's own
``TokenCountingHandler(token_budget=...)`` stop a call), so the reservation made there can
refuse the call:

1. **start** (``CBEventType.LLM``): the messages (``EventPayload.MESSAGES``, translated with
   :func:`~llamaindex_tokenbudget.messages.to_core_request`) or the completion prompt
   (``EventPayload.PROMPT``) are counted by the core counter, then ``ledger.reserve(...)``
   with the call's output cap (:func:`max_output`: LlamaIndex's placeholder ``num_output`` is
   no cap);
   :class:`~tokenbudget_core.errors.BudgetExceededError` propagates and the call is not sent.
   Blocks the core cannot represent (documents, audio, thinking...) are counted by the core's
   estimate (:func:`~tokenbudget_core.counting.estimate_block`), flagged ``exact=False``;
2. **end**: the usage the provider reported in ``ChatResponse.raw`` (streams: the last
   chunk's) is committed; without one (a streamed Claude call, a FunctionAgent's stream), the
   output tokens are counted from the whole assistant message (:func:`reply_text`: its text,
   its thinking blocks and its tool calls' names and arguments) and the usage is flagged
   ``estimated``;
3. **error** (``EventPayload.EXCEPTION``): a call that failed before producing anything is
   released, unless it was cut off after its request may have gone out (cancelled, timed out
   waiting, its connection dropped mid-answer:
   :func:`~tokenbudget_core.failures.may_have_been_billed`): the provider bills it, so the
   ledger charges its flagged estimate, the counted input. A stream that produced output and
   then failed, was cancelled (``CancelledError``) or was abandoned by its consumer
   (``GeneratorExit``) was sent: the ledger charges the usage the last chunk LlamaIndex's stream
   wrapper handed out reported (a stream cut after OpenAI's closing usage chunk), else an
   estimate, flagged ``estimated``: the counted input plus the text streamed so far.

Register the handler on ``Settings.callback_manager`` (or the ``callback_manager=`` an engine
is given) for chat and query engines: their response synthesizer (``BaseSynthesizer``) and the
``Settings.llm`` getter replace an LLM's own callback manager, dropping a handler registered
there only; the LLM's own manager serves direct calls (``BudgetCallbackHandler.install`` does
both).

Two handlers of one ledger on the callback manager of a call (both on the LLM, or both in
``Settings``) see one event under one id: the one listed first reserves, gates and charges it,
on the payer it resolves; the others leave it to it, so the call is charged once (whatever
their ``feature`` / ``user`` / ``model`` options; as LangChain's handler does).

Nested LLM events of one LLM (``CustomLLM.chat`` calling its own ``complete``,
``CustomLLM.astream_chat`` iterating its own ``stream_chat``) or of a ``StructuredLLM`` and the
LLM it wraps are one provider call: the innermost event is charged and the enclosing one's
reservation is handed over (:func:`hands_over`). A call of another LLM inside an LLM's call (a
helper, a judge it asks while it answers) is a call of its own: both are charged. The inner event is
charged as if it had started where the enclosing call started: the ``attribute()`` block in
force then (its feature, user, conversation and overhead mark; maybe none) replaces the block
in force now, and the inner event's handler fills what it leaves unset with its own
``feature`` / ``user``, as ``CostEventHandler`` records it. So the provider call a lazily
started stream makes (``CustomLLM.astream_chat`` calls ``stream_chat`` once it is iterated,
maybe by a task inside another user's ``attribute()`` block) is charged to the caller, never
to the reader (a background job's stream read in bob's block is no call of bob's, and bob's
budget does not refuse it), and a ``StructuredLLM`` whose inner LLM has a handler of its own
is charged to that handler's ``feature`` (unless the caller's block names one). It is gated
on that payer too: the ``StructuredLLM``'s own event reserves for the payer the handler of the
LLM it wraps (through a ``CachedLLM`` or ``RoutedLLM``, which make no event of their own)
charges, when there is one on the same ledger and, for several (a ``RoutedLLM``'s tiers),
they agree; so the budgets of the handler its own event reaches (``Settings``'s) refuse no
call they are not charged for. Only a ``StructuredLLM``'s: any other LLM answers with its own
provider call, charged to and gated on the handler of its own event, whatever LLMs its fields
hold (a fallback, a judge, a helper it may call). A ``StructuredLLM`` call whose inner call a
``CachedLLM`` answered made no provider call: it is released, not charged (the cache records
the hit); any other call enclosing a ``CachedLLM``'s hit (an LLM asking a cached helper
inside its own call) made its own provider call and is charged as usual. A nested event is
recognised while the enclosing wrapper, or the stream wrapper it returned, is running (on the
stack). The callback manager is synchronous: with a networked store, ``reserve`` and
``commit`` block the event loop of ``achat`` for one round trip.
A stream created but never iterated ends no event: its reservation lasts until its lease ends.
A stream its consumer closes (``close()``, ``aclose()``, a ``for`` loop left and the stream
dropped) is settled as LlamaIndex ends its events: in that ``close()``, the provider's generator
closed and the nested events ended with it (an async stream's inner generator a loop step
later, when asyncio finalises it), the garbage collector not needed.
A stream abandoned inside a reference cycle is closed by the garbage collector, at any
allocation, maybe while this thread holds a lock its end needs: that end is settled a moment
later by a worker thread (:mod:`tokenbudget_core.finalizing`), never in the collection.

Routed calls (a :class:`~llamaindex_tokenbudget.routed_llm.RoutedLLM` calls its tier LLM under
:func:`~tokenbudget_core.routing.using_route`; a response may also carry the decision in
``additional_kwargs["tokenbudget_route"]``) are settled with their premium model, so the ledger
records what routing saved.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from types import CodeType, FrameType
from typing import Any, Never, Self, get_args

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.constants import DEFAULT_NUM_OUTPUTS
from llama_index.core.llms import LLM
from llama_index.core.llms.structured_llm import StructuredLLM
from llama_index.core.settings import Settings

from tokenbudget_core.attribution import Attribution, current_attribution, in_force, outer_first
from tokenbudget_core.counting import TokenCounter, add_file_tokens, countable_tools
from tokenbudget_core.errors import (
    InvalidInputError,
    TokenBudgetError,
    option_names,
    refuse_positional,
    refuse_unknown,
)
from tokenbudget_core.failures import may_have_been_billed
from tokenbudget_core.finalizing import collecting, defer, start_worker
from tokenbudget_core.ledger import Ledger, Reservation, check_budget_options
from tokenbudget_core.prompt_caching import Ttl, cache_writes_of
from tokenbudget_core.routing import current_route, premium_model_of, routed_model
from tokenbudget_core.usage import Usage

from .messages import to_core_request, to_countable_message
from .usage import usage_of

__all__ = ["BudgetCallbackHandler"]

logger = logging.getLogger(__name__)

_MAX_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
_LLM_CAP_KEYS = ("max_tokens", "max_completion_tokens", "max_new_tokens")
"""The fields of an LLM that cap what it asks for (not ``max_output_tokens``: ``RoutedLLM``'s
field by that name is an assumption for routing, never sent)."""
_FORGET_AFTER_SECONDS = 24 * 3600
"""A call whose end never came (a stream never iterated) is forgotten after this long."""
ROUTE_KEY = "tokenbudget_route"
_STREAM_WRAPPER = "wrapped_gen"
"""The generator ``llm_chat_callback`` / ``llm_completion_callback`` wrap a stream in."""
_STREAM_WRAPPER_DEPTH = 6
"""How far up from a handler the stream wrapper that ended an event is looked for."""


def routed_premium_model(response: object = None) -> str | None:
    """The premium model of the routed call being made, else of the route ``response`` carries."""
    premium = premium_model_of(current_route())
    if premium is None and isinstance(response, ChatResponse | CompletionResponse):
        premium = premium_model_of(response.additional_kwargs.get(ROUTE_KEY))
    return premium


def payer_with(feature: str | None, user: str | None) -> Attribution:
    """The payer of a call made now by a handler whose defaults are ``feature`` / ``user``: the
    ``attribute()`` block in force, its ids first (:func:`~tokenbudget_core.attribution.outer_first`),
    then the defaults."""
    return payer_from(current_attribution(), feature, user)


def payer_from(ctx: Attribution, feature: str | None, user: str | None) -> Attribution:
    """The payer of a call charged under the attribution ``ctx`` (the block it started in, or
    the one its enclosing call started in) by a handler whose defaults are ``feature`` /
    ``user``: ``ctx``'s ids first, then the defaults."""
    if feature is None and user is None:
        return ctx
    merged_feature, merged_user = outer_first((ctx.feature, ctx.user), (feature, user))
    return replace(ctx, feature=merged_feature, user=merged_user)


def model_name(serialized: object, default: str | None) -> str:
    """The model to price: ``default``, else the LLM's ``model`` / ``model_name`` in its payload.

    Raises:
        InvalidInputError: Neither names a model.
    """
    if default:
        return default
    if isinstance(serialized, Mapping):
        for key in ("model", "model_name"):
            value = serialized.get(key)
            if isinstance(value, str) and value and value != "unknown":
                return value
    name = serialized.get("class_name") if isinstance(serialized, Mapping) else None
    raise InvalidInputError(
        "model",
        f"the LLM ({name or 'unnamed'}) does not name its model",
        fix="pass model='gpt-4o' (the model to count and price with) to the handler",
    )


def _cap_in(source: object, keys: Sequence[str]) -> int | None:
    """The first positive integer ``source`` (a mapping) holds under one of ``keys``."""
    if isinstance(source, Mapping):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def max_output(kwargs: object, serialized: object, default: int | None, llm: object = None) -> int | None:
    """The output cap to reserve for a call; ``None``: the ledger's (the policy's per-call limit,
    else the model's maximum output).

    In this order, the first that is set:

    1. the call's own ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``,
       ``max_new_tokens``) in ``kwargs``;
    2. the cap the LLM sends: its ``max_tokens`` / ``max_completion_tokens`` /
       ``max_new_tokens`` field or such a key of its ``additional_kwargs`` (``llm``: the LLM
       instance making the call, when known);
    3. the LLM's ``metadata.num_output`` (in ``serialized``), unless it is LlamaIndex's
       placeholder ``DEFAULT_NUM_OUTPUTS`` (256): ``LLMMetadata`` fills it in for an LLM that
       set none, and integrations that send no cap (Ollama, Replicate...) pass it on as their
       own, so a 256 is never taken for a cap (a budget would be reserved for 256 tokens of a
       call that may write thousands; an LLM really capped at 256 sets ``max_tokens``); a
       non-positive one (OpenAI's ``-1``: no ``max_tokens``) is unset too;
    4. ``default`` (the handler's ``max_output_tokens``).
    """
    found = _cap_in(kwargs, _MAX_OUTPUT_KEYS)
    if found is None and llm is not None:
        fields = {key: getattr(llm, key, None) for key in _LLM_CAP_KEYS}
        found = _cap_in(fields, _LLM_CAP_KEYS) or _cap_in(
            getattr(llm, "additional_kwargs", None), _MAX_OUTPUT_KEYS
        )
    if found is None:
        declared = _cap_in(serialized, ("num_output",))
        found = None if declared == DEFAULT_NUM_OUTPUTS else declared
    return default if found is None else found


def count_input(
    counter: TokenCounter, *, messages: Sequence[ChatMessage] | None, prompt: str | None, kwargs: object
) -> int:
    """Input tokens of a chat request (with its ``tools``) or of a completion prompt (plain text).

    Built-in (server) tools beside the function tools (Anthropic's computer use, web search,
    MCP toolsets...; OpenAI's ``web_search_preview``...) are counted by a Claude counter (its
    count request carries them as the host sends them) and the estimating one; tiktoken's
    cannot count OpenAI's (OpenAI publishes no count of them): they are left out of its count,
    which is short by what they add (the usage the provider reports is what is charged).

    Blocks the core cannot represent (documents, audio, thinking...) are counted by the core's
    rule (:func:`~tokenbudget_core.counting.estimate_block`: their text in place, their files at
    a documented estimate); the count is then flagged ``exact=False``.
    """
    if messages is None:
        return int(counter.count(prompt or ""))
    tools = kwargs.get("tools") if isinstance(kwargs, Mapping) else None
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        tools = None
    else:  # (built-in tools only to a counter that counts them)
        tools = countable_tools(counter, counter.model.name, tools) or None
    core = to_core_request(messages)
    return add_file_tokens(counter.count_messages(core, tools), core)


def reported_usage(response: object) -> Usage | None:
    """The usage the provider reported in ``response.raw``, or ``None`` when it kept none."""
    if isinstance(response, ChatResponse | CompletionResponse):
        try:
            return usage_of(response)
        except InvalidInputError:
            return None
    return None


def reply_text(response: object) -> str:
    """The output of a chat or completion response, to estimate its tokens when the provider
    reported no usage (a streamed Claude call, a FunctionAgent's stream): a chat reply's whole
    assistant message (:func:`message_output`: its text, thinking and tool calls), a
    completion's text ("" for anything else)."""
    if isinstance(response, ChatResponse):
        return message_output(response.message)
    return response.text if isinstance(response, CompletionResponse) else ""


def message_output(message: ChatMessage) -> str:
    """What the model wrote in an assistant message, as text to count: its text blocks, its
    thinking blocks' text (``ThinkingBlock``, billed as output) and each tool call's name and
    arguments (``ToolCallBlock`` blocks and the ``additional_kwargs["tool_calls"]`` shapes
    :func:`~llamaindex_tokenbudget.messages.to_countable_message` reads), one per line. A tool
    call turn's text is often empty: its output is the call."""
    parts = [message.content or ""]
    parts += [block.content or "" for block in message.blocks if isinstance(block, ThinkingBlock)]
    parts += [f"{name} {arguments}" for name, arguments in _tool_calls_in(message)]
    return "\n".join(part for part in parts if part)


def _tool_calls_in(message: ChatMessage) -> list[tuple[str, str]]:
    """The name and arguments of each tool call of a reply's message (read as the assistant's,
    whatever role it carries); when the core cannot read them (arguments JSON cannot hold), the
    ``ToolCallBlock`` blocks' as text."""
    try:
        as_assistant = message.model_copy(update={"role": MessageRole.ASSISTANT})
        return [(c.name, c.arguments) for c in to_countable_message(as_assistant).tool_calls]
    except (TokenBudgetError, TypeError, ValueError):  # counting is all this is for: read it as text
        return [
            (block.tool_name or "", _as_text(block.tool_kwargs))
            for block in message.blocks
            if isinstance(block, ToolCallBlock)
        ]


def _as_text(arguments: object) -> str:
    """Tool-call arguments as the text the model wrote: a string as it is, else JSON (values
    JSON cannot hold as their ``str``)."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, default=str)


def caller_frame(depth: int) -> FrameType | None:
    """The frame ``depth`` levels above the caller of this function (``None`` past the top)."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


def calling_llm(frame: FrameType | None) -> object:
    """The LLM whose call LlamaIndex's wrapper ``frame`` is making (its ``_self``), else ``None``."""
    return frame.f_locals.get("_self") if frame is not None else None


_WRAPPERS: set[CodeType] = set()
"""The code of LlamaIndex's LLM wrappers (``llm_chat_callback`` / ``llm_completion_callback``'s
``wrapped_llm_chat``... ) seen starting an event, as :func:`note_wrapper` found them."""


def note_wrapper(frame: FrameType | None) -> None:
    """Remember the code of the LLM wrapper ``frame`` (the caller of an event's start), so
    :func:`enclosing` knows it on the stack by its code: no frame is kept (a kept frame keeps
    the stream its wrapper returned alive, so an abandoned stream would never end its event)."""
    if frame is not None:
        _WRAPPERS.add(frame.f_code)


def enclosing(calls: Mapping[str, Any], frame: FrameType | None, *, key: str) -> Any:
    """The open call of ``calls`` that encloses an LLM event started from ``frame``.

    A call encloses it while its LLM wrapper is on the stack above ``frame``: the wrapper
    function itself (:func:`note_wrapper`), or the stream wrapper it returned (LlamaIndex's
    ``wrapped_gen``, running while the stream is iterated). Either holds the call's key in
    ``calls`` in its ``key`` local (``event_id`` or ``span_id``); the second case is a stream
    whose provider call starts lazily, as ``CustomLLM.astream_chat`` calls ``stream_chat`` once
    it is iterated.
    """
    while frame is not None:
        code = frame.f_code
        if code in _WRAPPERS or code.co_name == _STREAM_WRAPPER:
            name = frame.f_locals.get(key)
            found = calls.get(name) if isinstance(name, str) else None
            if found is not None:
                return found
        frame = frame.f_back
    return None


def cache_writes_in(messages: object) -> Ttl | None:
    """The longest prompt-cache TTL the messages' ``CachePoint`` blocks mark (LlamaIndex's
    Anthropic integration turns them into ``cache_control``): the ledger prices the call's worst
    case at that write rate. ``None``: no marker (or not a list of messages)."""
    if not isinstance(messages, list):
        return None
    points = [
        b.model_dump()
        for m in messages
        for b in getattr(m, "blocks", ())
        if getattr(b, "block_type", None) == "cache"
    ]
    return cache_writes_of(points) if points else None


def streamed_chunk(key: str, value: str) -> ChatResponse | CompletionResponse | None:
    """The last chunk a stream ending with an error (or abandoned) had yielded, else ``None``.

    Read from LlamaIndex's stream wrapper (``wrapped_gen``, found up the stack by its ``key``
    local equal to ``value``; its loop variable is the chunk last handed to the consumer).
    ``None`` when no chunk was produced or the wrapper is not found (not a stream).

    The wrapper is in its ``except`` block, its ``exception`` bound: on Python 3.11 / 3.12
    ``f_locals`` is a snapshot the frame keeps, and ``exception`` -> traceback -> frame ->
    snapshot would be a reference cycle keeping the wrapper's locals (the provider's stream)
    alive past the consumer's ``close()`` until the cyclic garbage collector runs: the snapshot
    is emptied once read (the frame's own variables are untouched; the next read of
    ``f_locals`` takes a fresh one). The frame itself cannot be cleared: it is running.
    """
    frame = caller_frame(2)
    for _ in range(_STREAM_WRAPPER_DEPTH):
        if frame is None:
            break
        if frame.f_code.co_name == _STREAM_WRAPPER:
            names = frame.f_locals
            try:
                if names.get(key) == value:
                    chunk = names.get("x")
                    return chunk if isinstance(chunk, ChatResponse | CompletionResponse) else None
            finally:
                forget_snapshot(names)
        frame = frame.f_back
    return None


def forget_snapshot(names: Mapping[str, object]) -> None:
    """Empty ``names`` when it is the snapshot of a frame's variables that the frame keeps
    (``frame.f_locals`` of a function up to Python 3.12), so it holds nothing the frame's
    variables held; a write-through view (``FrameLocalsProxy``, Python 3.13+) is left alone:
    the frame keeps no reference to it."""
    if type(names) is dict:
        names.clear()


EVENTLESS = "tokenbudget_eventless"
"""A class attribute, true on an LLM that makes no callback event of its own (a ``CachedLLM``, a
``RoutedLLM``): the LLMs it wraps make (and their handlers charge) its provider calls."""
_NESTED_DEPTH = 3
"""How deep :func:`charging_defaults` looks into LLMs wrapping LLMs."""


def inner_llms(llm: object) -> list[LLM]:
    """The LLMs ``llm``'s pydantic fields hold, directly or in a mapping's values or a list (a
    ``StructuredLLM``'s LLM, a ``RoutedLLM``'s tiers and fallbacks)."""
    out: list[LLM] = []
    for name in _fields_holding_llms(type(llm)):
        pending: list[Any] = [getattr(llm, name, None)]
        for _ in range(3):  # a value, a mapping's values, the lists those hold
            if not pending:
                break
            nested: list[Any] = []
            for item in pending:
                if item is None or type(item) in _PLAIN:  # (most fields: checked before the ABCs)
                    continue
                if isinstance(item, LLM):
                    out.append(item)
                elif isinstance(item, dict):
                    nested += list(item.values())
                elif isinstance(item, list | tuple):
                    nested += list(item)
                elif isinstance(item, Mapping):
                    nested += list(item.values())
            pending = nested
    return out


_PLAIN = frozenset({str, int, float, bool, bytes})
_LLM_FIELDS: dict[type, tuple[str, ...]] = {}
"""Per pydantic class, the fields whose annotation may hold an LLM (:func:`_fields_holding_llms`)."""


def _fields_holding_llms(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s pydantic fields whose annotation may hold an LLM (an ``LLM``, a
    type an LLM is an instance of, ``Any``, or a container of one), worked out once per class:
    most of an LLM's fields (prompts, flags, its callback manager) never hold one."""
    found = _LLM_FIELDS.get(cls)
    if found is None:
        fields: Mapping[str, Any] = getattr(cls, "model_fields", None) or {}
        found = _LLM_FIELDS[cls] = tuple(n for n, f in fields.items() if _may_hold_llm(f.annotation))
    return found


def _may_hold_llm(annotation: object, depth: int = 0) -> bool:
    if annotation is Any or annotation is object:
        return True
    if isinstance(annotation, type):
        try:
            if issubclass(annotation, LLM) or issubclass(LLM, annotation):
                return True
        except TypeError:  # (a generic alias passing for a type)
            pass
    return depth < 4 and any(_may_hold_llm(arg, depth + 1) for arg in get_args(annotation))


def calls_through_inner(llm: object) -> bool:
    """Whether a call of ``llm`` makes no provider call of its own: ``llm`` is a
    ``StructuredLLM``, whose provider call the LLM it wraps makes (through any ``CachedLLM`` /
    ``RoutedLLM`` between them), that LLM's event nested in its own. Any other LLM answers with
    its own call, whatever LLMs its fields hold (a fallback, a judge, a helper it may call)."""
    return isinstance(llm, StructuredLLM)


def hands_over(outer_llm: object, inner_llm: object) -> bool:
    """Whether an LLM event of ``inner_llm`` nested in an open call of ``outer_llm`` is that
    call's provider call (one call: the inner event is charged, the outer one handed over):
    ``outer_llm`` is a ``StructuredLLM`` (:func:`calls_through_inner`), or both are the same LLM
    (``CustomLLM.chat`` calling its own ``complete``, ``astream_chat`` iterating its own
    ``stream_chat``). Any other LLM called inside a call (a helper, a judge, a fallback the
    outer LLM asks while it answers with its own provider call) makes a call of its own: both
    are charged."""
    return calls_through_inner(outer_llm) or outer_llm is inner_llm


def charging_defaults(llm: object, ledger: Ledger) -> tuple[str | None, str | None] | None:
    """The ``feature`` / ``user`` of the budget handler on ``ledger`` that charges the provider
    call a call of ``llm`` makes through the LLM it wraps, when ``llm`` is a ``StructuredLLM``
    (:func:`calls_through_inner`): its inner LLM, through any ``CachedLLM`` / ``RoutedLLM``
    between them, which make no event of their own; that LLM's event nests in ``llm``'s and its
    own handler charges it.

    ``None``: ``llm`` is no ``StructuredLLM`` (an LLM that merely holds another, as a fallback it
    may never call, makes its own provider call: the handler of its own event charges it), or
    it wraps an LLM whose calls no handler on ``ledger`` sees, or LLMs charged with different
    defaults (a ``RoutedLLM`` whose tiers have handlers of their own: which one answers is not
    known yet).
    """
    if not calls_through_inner(llm):
        return None
    level, seen = inner_llms(llm), {id(llm)}
    found: set[tuple[str | None, str | None]] = set()
    for _ in range(_NESTED_DEPTH):
        nested: list[LLM] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            if getattr(type(item), EVENTLESS, False):
                nested += inner_llms(item)
                continue
            handlers = getattr(getattr(item, "callback_manager", None), "handlers", None) or ()
            ours = [
                h
                for h in handlers
                if isinstance(h, BudgetCallbackHandler) and h.ledger.shares_books_with(ledger)
            ]
            if not ours:
                return None
            found.add((ours[0].feature, ours[0].user))
        if not nested:
            return found.pop() if len(found) == 1 else None
        level = nested
    return None


_IN_FORCE_HERE = nullcontext()
"""The payer of a call that no other encloses: the attribution in force (nothing to put in force)."""

_HANDLERS_LOCK = threading.Lock()
_HANDLERS: weakref.WeakSet[BudgetCallbackHandler] = weakref.WeakSet()
"""Every handler of this process: an event nested in another handler's call of the same ledger
is one provider call too."""


def note_cache_answer(served: bool, frame: FrameType | None = None) -> None:
    """Tell the open ``StructuredLLM`` call enclosing the caller (a ``CachedLLM`` looking a call
    up inside it, maybe through a ``RoutedLLM``) whether a response cache answered (``served``)
    or the call goes on to the LLM behind it. Such a call whose inner calls were all answered by
    the cache made no provider call: it is released at its end, not charged an estimate (the
    cache records the hit on the payer, as it does a direct hit). Any other enclosing call (an
    LLM that answers with its own call and asks a cached helper inside it) is left as it is:
    charged. ``frame``: where the lookup is made (default: the caller's)."""
    frame = frame or caller_frame(1)
    with _HANDLERS_LOCK:
        handlers = list(_HANDLERS)
    mark_cache_answer(handlers, frame, served, key="event_id")


def mark_cache_answer(handlers: Iterable[Any], frame: FrameType | None, served: bool, *, key: str) -> None:
    """For each handler (its open calls in ``_calls`` under ``_lock``, keyed by ``key``): mark
    the ``StructuredLLM`` call enclosing ``frame`` as answered by the cache (``served``) or
    sent on (both handlers' ``note_cache_answer``)."""
    for handler in handlers:
        if not handler._calls:
            continue
        with handler._lock:
            call = enclosing(handler._calls, frame, key=key)
            if call is not None and call.through_inner:
                if served:
                    call.cache_hit = True
                else:
                    call.sent = True


@dataclass(kw_only=True, slots=True)
class _Call:
    """One LLM event between its start and its end."""

    reservation: Reservation
    counter: TokenCounter
    input_tokens: int
    started: float
    attribution: Attribution
    """The attribution in force where the call started, or, for an event nested in another
    call, where that call started: an event nested in this one is reserved under it (replacing
    the block it starts in), with its own handler's ``feature`` / ``user`` filling what it
    leaves unset."""
    delegated: bool = False
    through_inner: bool = False
    """A ``StructuredLLM``'s call (:func:`calls_through_inner`): the LLM it wraps makes its
    provider call, so a response cache answering that LLM's call leaves it none."""
    cache_hit: bool = False
    """A response cache answered a call this one made (:func:`note_cache_answer`; a
    ``StructuredLLM``'s call only)."""
    sent: bool = False
    """A call this one made went past a response cache to the LLM behind it."""
    premium_model: str | None = None
    """The routed call's premium model (when a router made the call)."""
    llm: object = None
    """The LLM making the call (an event nested in this call is its provider call only when
    :func:`hands_over` says so)."""


def _managers_of(llms: Sequence[object], method: str) -> list[CallbackManager]:
    """The callback managers of ``llms`` (:meth:`BudgetCallbackHandler.install`'s arguments)
    and, for an eventless one (a ``CachedLLM``, a ``RoutedLLM``), of the LLMs it wraps, at any
    depth (:func:`event_makers`): theirs are the events its calls make. Each manager once.

    Raises:
        InvalidInputError: One is not a LlamaIndex LLM (named ``llms[i]``).
    """
    for i, llm in enumerate(llms):  # (all checked before any is touched: nothing half-done)
        if not isinstance(llm, LLM):
            raise InvalidInputError(
                f"llms[{i}]",
                f"must be a LlamaIndex LLM, got {type(llm).__name__}",
                value=llm,
                fix=f"pass the LLMs whose direct calls the handler checks: handler.{method}(llm, ...)",
            )
    managers: dict[int, CallbackManager] = {}
    for llm in llms:
        for reached in [llm, *event_makers(llm)]:
            manager = getattr(reached, "callback_manager", None)
            if isinstance(manager, CallbackManager):
                managers.setdefault(id(manager), manager)
    return list(managers.values())


def event_makers(llm: object) -> list[LLM]:
    """The LLMs whose events the calls of ``llm`` make when it is eventless (a ``CachedLLM``, a
    ``RoutedLLM``: :data:`EVENTLESS`): those it wraps (:func:`inner_llms`), through any other
    eventless one between them (their own managers listed too), to :data:`_NESTED_DEPTH`
    levels; none for any other LLM (its calls make their own events). Each LLM once."""
    found: list[LLM] = []
    seen = {id(llm)}
    level = inner_llms(llm) if getattr(type(llm), EVENTLESS, False) else []
    for _ in range(_NESTED_DEPTH):
        nested: list[LLM] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            found.append(item)
            if getattr(type(item), EVENTLESS, False):
                nested += inner_llms(item)
        if not nested:
            break
        level = nested
    return found


Warned = set[int]
"""The budget handlers an eventless LLM already warned about (:func:`warn_unreached`), by id."""


def warn_unreached(wrapper: LLM, warned: Warned) -> None:
    """Warn, once per handler, when a budget handler on an eventless ``wrapper``'s callback
    manager (a ``CachedLLM``, a ``RoutedLLM``: it makes no event of its own) is not on the
    manager of an LLM it wraps that makes the events: that handler neither checks nor charges
    the wrapped LLM's calls.

    Called before each call of the wrapper. LlamaIndex hands the LLM it is given its own
    callback manager (an engine's synthesizer, ``Settings.llm``: ``Settings.callback_manager``),
    never the wrapped LLMs, which, made before ``Settings.callback_manager`` was set, keep
    lists of their own. The handler is not put there for the call: a wrapped LLM may be shared
    (two tenants' wrappers around one provider LLM), and a handler lent to it would check and
    charge the other's calls. :meth:`BudgetCallbackHandler.install` of the wrapper registers it
    on the wrapped LLMs (the fix the warning names)."""
    handlers = getattr(wrapper.callback_manager, "handlers", None) or ()
    ours = [h for h in handlers if isinstance(h, BudgetCallbackHandler) and id(h) not in warned]
    if not ours:
        return  # (the common case)
    for llm in event_makers(wrapper):
        if getattr(type(llm), EVENTLESS, False):
            continue  # its own events are its wrapped LLMs'
        manager = getattr(llm, "callback_manager", None)
        listed = getattr(manager, "handlers", None) or ()
        for handler in ours:
            if id(handler) not in warned and not any(h is handler for h in listed):
                warned.add(id(handler))
                logger.warning(
                    "a BudgetCallbackHandler on the callback manager of %s does not reach the %s it "
                    "wraps, which makes the calls: they are neither checked nor charged by it. "
                    "Register it with handler.install(<the %s>) (it reaches the wrapped LLMs too), "
                    "or put it on the wrapped LLMs' callback managers",
                    type(wrapper).__name__,
                    type(llm).__name__,
                    type(wrapper).__name__,
                )


class BudgetCallbackHandler(BaseCallbackHandler):
    """Reserve each LLM call's worst case before it is sent; commit what it used after.

    Where to register it: for chat engines and query engines (``ContextChatEngine``,
    ``CondensePlusContextChatEngine``, ``index.as_query_engine()``, ``as_chat_engine()``,
    anything using ``Settings.llm``), on ``Settings.callback_manager``, or on the
    ``callback_manager=`` the engine is given. Not on the LLM's own ``CallbackManager`` alone:
    LlamaIndex's response synthesizer (``BaseSynthesizer.__init__``, which those engines build)
    sets its LLM's callback manager to the engine's, and the ``Settings.llm`` getter sets it to
    ``Settings.callback_manager`` once one is set, so a handler only on the LLM is silently
    dropped (for that LLM object's later calls too): nothing is refused, nothing charged. The
    LLM's own callback manager is the place for direct calls only (``llm.chat(...)``, an
    agent's LLM). :meth:`install` does both: it registers the handler on
    ``Settings.callback_manager`` and on the LLMs given; a call goes through one callback
    manager, so it is charged once.

    Handlers of several ledgers may see the same call (a per-team ledger and a global one on
    one callback manager): each reserves it, in the order they are listed. When one of them
    stops the call in its ``on_event_start`` (refuses it, or fails on it), LlamaIndex sends no
    end event for it: that handler releases and forgets the reservations the budget handlers
    listed before it made for the call, so a call refused by the global ledger holds nothing
    on the team's. A handler of another kind that raises from ``on_event_start`` (one of your
    own) cannot be noticed: list the budget handlers after it, so that a call it stops was
    never reserved; listed before it, their reservations for that call stay held until their
    lease ends (``Ledger(lease_seconds=...)``, 10 minutes by default).

    Two handlers of one ledger seeing the same call (both on its callback manager) charge it
    once: the one listed first reserves, gates and charges it; the others leave it to it.
    Nested events are recognised among the calls of every handler of the same ledger: a
    ``StructuredLLM`` whose events reach a handler in ``Settings`` and whose inner LLM has a
    handler of its own (for a feature) is charged once, by the inner one, and gated (reserved,
    maybe refused) on that payer only. Put a handler where
    the provider call is (the inner LLM, or ``Settings``): one on the ``StructuredLLM`` alone
    sees only the caller's messages (not the schema the program adds) and a parsed object
    instead of the provider's usage, so it charges an estimate.

    A call cancelled while the LLM's ``rate_limiter`` makes it wait (``achat`` under a timeout)
    ends no event (LlamaIndex starts the event before the wait, outside the ``try`` that ends
    it): its reservation lasts until its lease ends.

    Args:
        ledger: The core ledger that prices, limits and attributes.
        model: The model to count and price with; default: the LLM's own ``model`` or
            ``metadata.model_name``.
        max_output_tokens: The output cap to reserve when the call and the LLM set none
            (default: the policy's per-call limit, else the model's maximum output). The cap
            reserved is, first that is set: the call's ``max_tokens`` (or
            ``max_completion_tokens`` / ``max_output_tokens`` / ``max_new_tokens``); the LLM's
            own ``max_tokens`` / ``max_completion_tokens`` / ``max_new_tokens`` (field or
            ``additional_kwargs``); its ``metadata.num_output``, unless it is the placeholder
            256 (``LLMMetadata`` fills it in for an LLM that set none, as a ``CustomLLM`` often
            does, and Ollama-style integrations that send no cap pass it on); then this option;
            then the policy's per-call limit, else the model's maximum output.
        feature: The feature to charge, unless an ``attribute(...)`` block names one.
        user: The user to charge, unless an ``attribute(...)`` block names one.

    Raises:
        InvalidInputError: A bad option, named (``ledger`` is not a
            :class:`~tokenbudget_core.ledger.Ledger`, ``model`` / ``feature`` / ``user`` not a
            non-empty string, ``max_output_tokens`` not a non-negative integer, an unknown one
            such as ``usr=``, with the closest option, one passed by position, with the keyword
            to pass it by).

    Example:
        >>> from llama_index.core import Document, SummaryIndex
        >>> from llama_index.core.llms import MockLLM
        >>> from tokenbudget_core.ledger import Ledger
        >>> ledger = Ledger("memory://")
        >>> handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", feature="docs")
        >>> llm = MockLLM(max_tokens=5)
        >>> _ = handler.install(llm)  # Settings.callback_manager (engines), the LLM's (direct calls)
        >>> llm.complete("Say hi").text
        'text text text text text'
        >>> engine = SummaryIndex([Document(text="Paris is in France.")]).as_query_engine(llm=llm)
        >>> str(engine.query("Where is Paris?"))
        'text text text text text'
        >>> _ = handler.uninstall(llm)
        >>> [row] = ledger.store.rollup([ledger.day()])
        >>> row.values["requests"], row.values["output_tokens"], row.values["estimated"]
        (2, 10, 2)
    """

    def __init__(
        self,
        ledger: Ledger,
        *positional: Never,  # (refused: a type checker flags them, the constructor names them)
        model: str | None = None,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        **unknown: Any,
    ) -> None:
        options = option_names(BudgetCallbackHandler.__init__)
        refuse_positional("BudgetCallbackHandler", positional, options[1:], after="ledger")
        if unknown:  # a misspelt option (usr=...): named, with the closest one
            refuse_unknown("BudgetCallbackHandler", unknown, options)
        check_budget_options(
            ledger, model=model, feature=feature, user=user, counts={"max_output_tokens": max_output_tokens}
        )
        others: list[CBEventType] = [t for t in CBEventType if t is not CBEventType.LLM]
        super().__init__(event_starts_to_ignore=others, event_ends_to_ignore=others)
        self.ledger = ledger
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.feature = feature
        self.user = user
        self._calls: dict[str, _Call] = {}
        self._counters: dict[str, TokenCounter] = {}
        self._lock = threading.Lock()
        start_worker()
        with _HANDLERS_LOCK:
            _HANDLERS.add(self)

    def install(self, *llms: LLM) -> Self:
        """Register this handler where LlamaIndex keeps it: on ``Settings.callback_manager``
        (which chat engines, query engines and ``Settings.llm`` hand the LLM they use), and on
        the callback manager of each LLM given (its direct calls: ``llm.chat(...)``, an agent's).

        Registering it on an LLM's own callback manager alone is not enough for engines:
        LlamaIndex's response synthesizer (``BaseSynthesizer.__init__``, built by
        ``ContextChatEngine``, ``CondensePlusContextChatEngine`` and every query engine) sets
        the LLM's callback manager to the engine's (``Settings.callback_manager`` unless the
        engine is given ``callback_manager=``), and ``Settings.llm`` sets it to
        ``Settings.callback_manager`` once one is set: a handler on the LLM alone is dropped,
        for that LLM object's later calls too, and the calls go out unchecked and uncharged.

        A call goes through one callback manager, so the handler on both charges it once; a
        manager that already lists it (an LLM made after ``Settings.callback_manager`` was set
        shares its list of handlers) is left as it is. A ``CachedLLM`` or ``RoutedLLM`` makes no
        event of its own (the LLMs it wraps make them, on their managers): given one, the
        handler is registered on the managers of the LLMs it wraps too, at any depth (a wrapper
        an engine or ``Settings.llm`` hands a callback manager holding a budget handler its
        wrapped LLMs lack logs a warning naming this fix: that handler sees none of their
        calls). Call it after assigning
        ``Settings.callback_manager`` (a new manager assigned later lists none of its handlers).
        An engine given a ``callback_manager=`` of its own needs the handler in that manager.
        :meth:`uninstall` undoes it. Returns the handler (``BudgetCallbackHandler(ledger).install(llm)``).

        Raises:
            InvalidInputError: An argument is not a LlamaIndex LLM (named ``llms[i]``).
        """
        managers = [Settings.callback_manager, *_managers_of(llms, "install")]
        for manager in managers:
            if not any(h is self for h in manager.handlers):
                manager.add_handler(self)
        return self

    def uninstall(self, *llms: LLM) -> Self:
        """Remove this handler from ``Settings.callback_manager`` and from the callback manager of
        each LLM given and, for a ``CachedLLM`` / ``RoutedLLM``, of the LLMs it wraps (what
        :meth:`install` registered). Returns the handler.

        Raises:
            InvalidInputError: An argument is not a LlamaIndex LLM (named ``llms[i]``).
        """
        managers = [*_managers_of(llms, "uninstall"), Settings.callback_manager]
        for manager in managers:
            manager.handlers[:] = [h for h in manager.handlers if h is not self]
        return self

    def payer(self) -> Attribution:
        """The payer a call made now is charged to: the ``attribute()`` block in force, its ids
        first (outer payers win), then this handler's ``feature`` / ``user``. A
        :class:`~llamaindex_tokenbudget.cached_llm.CachedLLM` around the LLM looks up, stores and
        records its hits and embedding overhead under it."""
        return payer_with(self.feature, self.user)

    def _counter(self, model: str) -> TokenCounter:
        counter = self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = TokenCounter.for_model(model, registry=self.ledger.registry)
        return counter

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        """Count the request and reserve its worst case; raising here stops the call.

        Raises:
            BudgetExceededError: The call does not fit a budget; it is not sent.
            BudgetUnavailableError: The store is down and the ledger fails closed.
            InvalidInputError: The model cannot be named (pass ``model=``).
            UnknownModelError: The model is unknown to the registry.
        """
        if event_type is not CBEventType.LLM or payload is None:
            return event_id
        if self._held_elsewhere(event_id):  # another handler of this ledger holds and charges it
            return event_id
        try:
            return self._start(payload, event_id)
        except BaseException:
            # The call stops here (refused, or this handler failed on it): LlamaIndex sends no
            # end event for it, so what the handlers before this one reserved for it goes back.
            self._drop_elsewhere(event_id)
            raise

    def _start(self, payload: dict[str, Any], event_id: str) -> str:
        """Count and reserve the LLM event ``event_id`` (:meth:`on_event_start`'s work)."""
        start_worker()  # for ends the garbage collector delivers (a forked child starts its own)
        caller = caller_frame(3)  # the LLM wrapper that called CallbackManager.on_event_start
        note_wrapper(caller)
        serialized = payload.get(EventPayload.SERIALIZED)
        call_kwargs = payload.get(EventPayload.ADDITIONAL_KWARGS)
        model = routed_model() or model_name(serialized, self.model)  # a routed call: its tier's model
        counter = self._counter(model)
        messages = payload.get(EventPayload.MESSAGES)
        prompt = payload.get(EventPayload.PROMPT)
        tokens = count_input(counter, messages=messages, prompt=prompt, kwargs=call_kwargs)
        with self._lock:
            self._prune()
        llm = calling_llm(caller)
        outer = self._enclosing(caller.f_back if caller else None, llm)
        # A call whose provider call an LLM it wraps makes (a StructuredLLM's inner LLM) is
        # charged by that LLM's handler: it is gated on the payer that handler charges.
        feature, user = charging_defaults(llm, self.ledger) or (self.feature, self.user)
        if outer is None:
            attribution = current_attribution()
            payer: AbstractContextManager[object] = _IN_FORCE_HERE
        else:  # one provider call: its innermost event takes over the reservation
            self.ledger.release(outer.reservation)
            # and is charged as if it started where the enclosing call did (a lazily started
            # stream's provider call may start in its reader's block): that call's attribution
            # replaces the block in force, this handler's feature / user fill what it leaves unset
            attribution = outer.attribution
            payer = in_force(attribution)
        with payer:
            reservation = self.ledger.reserve(
                model=model,
                input_tokens=tokens,
                max_output_tokens=max_output(call_kwargs, serialized, self.max_output_tokens, llm=llm),
                feature=feature,
                user=user,
                request_id=event_id or None,
                cache_writes=cache_writes_in(messages),
            )
        call = _Call(
            reservation=reservation,
            counter=counter,
            input_tokens=tokens,
            started=time.monotonic(),
            attribution=attribution,
            premium_model=routed_premium_model(),
            through_inner=calls_through_inner(llm),
            llm=llm,
        )
        with self._lock:
            self._calls[event_id] = call
        return event_id

    def _drop_elsewhere(self, event_id: str) -> None:
        """Release and forget the reservations the other live handlers hold for the event
        ``event_id``, which this handler stopped (refused, or failed on) in its start: handlers
        of other ledgers listed before this one on the same callback manager (a per-team ledger
        and a global one) reserved it, and LlamaIndex ends no event whose start raised, so
        their reservations would hold their budgets until their leases end."""
        if not event_id:
            return
        with _HANDLERS_LOCK:
            handlers = list(_HANDLERS)
        for handler in handlers:
            if handler is self:
                continue
            with handler._lock:
                call = handler._calls.pop(event_id, None)
            if call is None:
                continue
            try:
                handler.ledger.release(call.reservation)
            except Exception:  # (the error that stopped the call is the one to raise)
                logger.exception("tokenbudget: the reservation of stopped LLM call %s not released", event_id)

    def _held_elsewhere(self, event_id: str) -> bool:
        """Whether another handler of this ledger holds the event ``event_id`` already (both on
        the callback manager that started it, which hands every handler the same id): the
        handler that started first reserves and charges it, on the payer it resolved, and this
        one leaves the call to it (a second hold of the call would charge an enclosing call it
        delegated, or be refused by the ledger under the live id when its worst case differs)."""
        if not event_id:
            return False
        with _HANDLERS_LOCK:
            handlers = list(_HANDLERS)
        for handler in handlers:
            if (
                handler is not self
                and handler.ledger.shares_books_with(self.ledger)
                and event_id in handler._calls
            ):
                return True
        return False

    def _enclosing(self, frame: FrameType | None, llm: object) -> _Call | None:
        """The open call enclosing an event of ``llm`` started from ``frame`` whose provider
        call that event is (:func:`hands_over`), marked delegated: this handler's, or
        another's on the same ledger (a ``StructuredLLM`` whose events reach the handler in
        ``Settings`` around an inner LLM with a handler of its own). ``None`` for a call made
        inside another LLM's own call (a helper it asks): a call of its own."""
        with _HANDLERS_LOCK:  # (a handler made in another thread meanwhile would change the set)
            handlers = list(_HANDLERS)
        others = [h for h in handlers if h is not self and h.ledger.shares_books_with(self.ledger)]
        for handler in (self, *others):
            with handler._lock:
                outer: _Call | None = enclosing(handler._calls, frame, key="event_id")
                if outer is not None:
                    if not hands_over(outer.llm, llm):
                        return None
                    outer.delegated = True
                    return outer
        return None

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        """Commit the call's usage, or release its reservation when it failed."""
        if event_type is not CBEventType.LLM:
            return
        payload = payload or {}
        error = payload.get(EventPayload.EXCEPTION)
        # A stream that failed, was cancelled or abandoned: the last chunk it handed out, read
        # from its wrapper's frame while it is on the stack.
        chunk = None if error is None else streamed_chunk("event_id", event_id)
        if collecting():  # closed by the garbage collector, maybe inside a lock it needs: later
            defer(self._end, payload, event_id, error, chunk)
            return
        self._end(payload, event_id, error, chunk)

    def _end(
        self,
        payload: dict[str, Any],
        event_id: str,
        error: BaseException | None,
        chunk: ChatResponse | CompletionResponse | None,
    ) -> None:
        with self._lock:
            call = self._calls.pop(event_id, None)
        if call is None:
            return
        if call.delegated or (call.cache_hit and not call.sent):  # another event's call, or none made
            self.ledger.release(call.reservation)
            return
        premium = call.premium_model
        if error is None:
            response = payload.get(EventPayload.RESPONSE, payload.get(EventPayload.COMPLETION))
            self.ledger.settle(
                call.reservation,
                reported_usage(response),
                reply_text=reply_text(response),
                counter=call.counter,
                premium_model=premium or routed_premium_model(response),
            )
            return
        # The stream was sent and output came back when it produced a chunk: the ledger charges
        # the usage the last chunk carried (a stream cut after its usage chunk), else an
        # estimate (input + text so far).
        self.ledger.settle(
            call.reservation,
            reported_usage(chunk),
            reply_text=reply_text(chunk),
            # (nothing streamed: released, unless the call was cut off once sent, which is billed)
            failed=chunk is None and not isinstance(error, GeneratorExit) and not may_have_been_billed(error),
            counter=call.counter,
            premium_model=premium or routed_premium_model(chunk),
        )

    def _prune(self) -> None:
        """Forget calls whose end never came (a stream never iterated); their leases ended long ago."""
        oldest = time.monotonic() - _FORGET_AFTER_SECONDS
        for key in [k for k, c in self._calls.items() if c.started < oldest]:
            del self._calls[key]

    def start_trace(self, trace_id: str | None = None) -> None:
        """Nothing to do when a trace starts."""

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        """Nothing to do when a trace ends."""
