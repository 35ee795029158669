"""A LangChain ``BaseCache`` on tokenbudget's response caches (exact or semantic).

LangChain hands a cache an opaque ``prompt`` (for chat models, the JSON of the messages) and
an ``llm_string`` (the model's settings). Both are read as plain data into a core
:class:`~tokenbudget_core.cache_keys.CacheRequest`; generations are stored as a plain-JSON
:class:`~tokenbudget_core.cached_response.CachedResponse` and rebuilt as fresh ``Generation`` /
``ChatGeneration`` objects on a hit, never with LangChain's ``loads``. Messages the core cannot
translate (a PDF block) are keyed on the prompt text as an ``opaque`` request, which a semantic
cache serves only exactly; images are part of the semantic match. What may be cached
(sampled requests, tool calls, cut-off answers), the scope rules and the similarity threshold
are the core cache's.

Who a lookup is for: a :class:`~langchain_tokenbudget.BudgetCallbackHandler` on the run claims
the lookup LangChain makes right after the run starts (:class:`RunClaim`), so the lookup, its hit
(recorded in the cache's ledger) and the store of a miss are scoped and recorded under the payer
the handler charges the run to (the run's metadata or tags, the handler's defaults, outer runs),
not only under the ``attribute()`` block in force. A run the budget refused is left to the
lookup when it is sure to come first (:func:`answers_next_lookup`): a hit is served, a miss raises
the refusal (:attr:`RunClaim.refusal`).
"""

from __future__ import annotations

import ast
import collections
import contextlib
import contextvars
import dataclasses
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.tracers.context import register_configure_hook

from tokenbudget_core.attribution import Attribution, current_attribution, in_force
from tokenbudget_core.cache_keys import (
    CacheRequest,
    CacheScope,
    integration_provider,
    with_default_temperature,
)
from tokenbudget_core.cached_response import CachedResponse, CacheHit, stop_reason_of
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.money import decimal_text
from tokenbudget_core.response_cache import ResponseCacheBase, hits_not_recorded
from tokenbudget_core.usage import Usage

from .messages import to_core_messages

if TYPE_CHECKING:
    from tokenbudget_core.response_cache import ExactCache
    from tokenbudget_core.semantic_cache import SemanticCache

__all__ = ["CACHE_HIT_KEY", "TokenBudgetLLMCache"]

CACHE_HIT_KEY = "tokenbudget_cache"
"""The ``response_metadata`` key of a served cache hit's audit data."""

logger = logging.getLogger("tokenbudget.cache")

ScopeLike = CacheScope | Callable[[], CacheScope | None] | None
_MESSAGE_TYPES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "tool": ToolMessage,
    "chat": ChatMessage,
    "function": FunctionMessage,
    **{  # a streamed reply kept in the history is a chunk: read as the message it adds up to
        f"{cls.__name__}Chunk": cls
        for cls in (HumanMessage, AIMessage, SystemMessage, ToolMessage, ChatMessage, FunctionMessage)
    },
}
_MESSAGE_FIELDS = ("content", "name", "tool_calls", "invalid_tool_calls", "tool_call_id", "additional_kwargs")
"""What a cache key reads of each message: every field the provider integrations send (a
malformed call's raw arguments, a legacy ``function_call``), so two histories that differ in
what was sent never share an answer."""
_EXTRA_FIELDS: dict[type[BaseMessage], tuple[str, ...]] = {
    ChatMessage: (*_MESSAGE_FIELDS, "role"),
    ToolMessage: (*_MESSAGE_FIELDS, "status"),  # Anthropic sends it as is_error
}
_UNREADABLE: list[BaseMessage] = []
"""What ``_messages`` returns for a list of LangChain messages it cannot read (never filled)."""
_MODEL_KEYS = ("model", "model_name", "model_id", "_type")


# -- the payer of the run a lookup is made for -----------------------------------------------------


_GENERATE_CODES = frozenset({BaseChatModel.generate.__code__, BaseChatModel.agenerate.__code__})
_START_CODES = frozenset(
    {CallbackManager.on_chat_model_start.__code__, AsyncCallbackManager.on_chat_model_start.__code__}
)
_FRAMES_UP = 12
"""How far up the stack a callback looks for LangChain's dispatch of its start."""


@dataclasses.dataclass(eq=False, slots=True)
class RunClaim:
    """A chat model run a budget handler started in this context, with the payer it resolved.

    LangChain looks the cache up right after it starts the run (``on_chat_model_start``), in the
    same context, from ``BaseChatModel._generate_with_cache`` (``_agenerate_with_cache``), which
    holds the run's callback manager; the cache reads the run's id there. A lookup takes only
    the claims of its own run (``run``), every handler's, and scopes and records the call under
    the payer of the newest (a refused one first); the store of that run's miss uses the claims
    its lookup took, and nothing else. So a claim left open by a call that was cut off (a
    timeout, a handler that stopped it) can never scope another call. A lookup made outside a
    run LangChain started (no run id up the stack) takes no claim.

    An ``attribute()`` block in force at the lookup always wins: a claim naming another tenant,
    feature or user than the block is not taken (the block scopes the call; a refused run's
    refusal is raised without a lookup). A claim is closed when its run ends, errs, is
    cancelled, streams a chunk without having taken a lookup (none will come), or is stopped
    at its start; and when another chat run starts here, every claim no lookup took of an
    earlier call (one not up the stack) is withdrawn. A withdrawn run's lookup and store skip
    the cache (a refused one raises its refusal): never the shared scope. (In async code the
    other prompts of an ``agenerate()`` run in tasks of their own, not up the stack: a chat run
    started inside one prompt's model call, before the other prompts looked the cache up,
    withdraws their claims, and those prompts are sent uncached.)
    """

    attribution: Attribution
    """The payer the handler reserved the run under (tenant and overhead: those in force)."""
    size: int
    """How many messages the run's prompt has."""
    last: str | None
    """The last message's text (``None`` when its content is not plain text)."""
    prompt: str | None = None
    """The prompt of the lookup that took the claim (its store names the same)."""
    llm_string: str | None = None
    open: bool = True
    run: object = None
    """The run's id: the claims of the handlers of one run are that run's."""
    recorded_in: object = None
    """The ledger the cache recorded the run's hit in (the handler's ledger records it too when
    it is another one); set on every claim of the run."""
    refusal: Callable[[], BaseException] | None = None
    """Set when the budget refused the run and left the refusal to this cache: the lookup serves a
    hit (it costs nothing) and raises this error on a miss, so the call is not sent."""
    batch: object = None
    """The start dispatch that made it (LangChain's list of the call's prompts): the claims of one
    multi-prompt call are all made before its first lookup."""
    served: list[Generation] | None = None
    """The generations the cache answered the run's lookup with (a hit), for a handler that must
    settle the run without its end (a failed multi-prompt call)."""
    payer: bool = False
    """The claim whose payer the lookup used (its store uses it again)."""

    def close(self) -> None:
        """The run ended: the claim is taken by no lookup nor store any more."""
        self.open = False
        self.last = None  # (a closed claim may linger in the context until the next run starts)

    def streamed(self) -> None:
        """The run streams: past its lookup. Closed unless a lookup took it (its store may follow)."""
        if self.prompt is None:
            self.open = False


_CLAIMS: contextvars.ContextVar[tuple[RunClaim, ...]] = contextvars.ContextVar(
    "tokenbudget_llm_cache_claims", default=()
)
_MAX_CLAIMS = 64
"""Open claims kept per context besides those of the call starting (never dropped): past it, the
oldest of earlier calls are withdrawn (their lookups skip the cache)."""
_MAX_WITHDRAWN = 65_536
"""Withdrawn runs remembered (more than a budget handler forgets at once: its 10,000 open runs)."""
_WITHDRAWN: collections.OrderedDict[object, Callable[[], BaseException] | None] = collections.OrderedDict()
"""Runs whose claims were withdrawn before their lookup (with a refused run's refusal): their
lookup and store skip the cache rather than use the shared scope (a refused run's lookup raises
its refusal). Each is forgotten once used (a refused run's lookup, another run's store), so a
later call reusing the run id is not refused for it."""
_WITHDRAWN_LOCK = threading.Lock()
_KEPT = object()
_IN_USE = [False]
"""Whether a ``TokenBudgetLLMCache`` was ever made: until then, budget handlers claim nothing."""
_NO_RUN = object()
"""What :func:`_run_of_lookup` returns when the cache is not called by LangChain for a run."""


def cache_in_use() -> bool:
    """Whether a ``TokenBudgetLLMCache`` was ever made in this process (until then, no run's
    lookup can take a claim: :func:`claim_run` makes none, and a caller need not work out the
    payer to claim for)."""
    return _IN_USE[0]


def withdraw_claim(claim: RunClaim) -> None:
    """Close ``claim`` for good before its lookup: that lookup and its store skip the cache (a
    refused run's raises its refusal), never falling back to the shared scope. For a handler
    that forgets a run still in flight (past its caps)."""
    claim.close()
    with _WITHDRAWN_LOCK:
        if claim.refusal is not None or claim.run not in _WITHDRAWN:
            _WITHDRAWN[claim.run] = claim.refusal
        while len(_WITHDRAWN) > _MAX_WITHDRAWN:
            _WITHDRAWN.popitem(last=False)


def _starts_up_the_stack() -> tuple[object, set[int]]:
    """The prompts list of the chat model start dispatch running (up the stack; ``None``: none),
    and the ids of the prompts lists of the ``generate`` / ``agenerate`` calls up the stack."""
    batch: object = None
    calls: set[int] = set()
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if batch is None and code in _START_CODES:
            batch = frame.f_locals.get("messages")
        elif code in _GENERATE_CODES:
            calls.add(id(frame.f_locals.get("messages_to_trace")))
        frame = frame.f_back
    return batch, calls


def claim_run(
    attribution: Attribution,
    messages: Sequence[BaseMessage],
    *,
    run: object = None,
    refusal: Callable[[], BaseException] | None = None,
) -> RunClaim | None:
    """Claim the cache lookup of a chat model run just started here, for ``attribution`` (see
    :class:`RunClaim`); ``None`` when no ``TokenBudgetLLMCache`` exists (nothing to claim for).
    ``run``: the run's id (the handlers of one run claim it each). ``refusal``: the budget
    refused the run; the lookup raises it on a miss (see :func:`answers_next_lookup` for when
    that lookup is sure to come first). The claims no lookup took of an earlier call (not
    running up the stack) are withdrawn: their lookups would have come before."""
    if not _IN_USE[0]:
        return None
    batch, calls = _starts_up_the_stack()
    if batch is None:  # a start made outside LangChain's dispatch: the run's other handlers'
        same = (c.batch for c in _CLAIMS.get() if c.open and c.run == run and c.prompt is None)
        batch = next(same, None) or object()
    last = messages[-1].content if messages else None
    text = last if isinstance(last, str) else None
    claim = RunClaim(
        attribution=attribution, size=len(messages), last=text, run=run, refusal=refusal, batch=batch
    )
    mine: list[RunClaim] = []
    others: list[RunClaim] = []
    for c in _CLAIMS.get():
        if not c.open:
            continue
        if c.batch is batch:
            mine.append(c)
        elif c.run == run or (c.prompt is None and id(c.batch) not in calls):
            withdraw_claim(c)  # an earlier call's (stopped before its lookup, or its run id reused)
        else:
            others.append(c)
    for c in others[: max(0, len(others) - (_MAX_CLAIMS - 1))]:
        withdraw_claim(c)  # never a claim of the call starting
    with _WITHDRAWN_LOCK:
        _WITHDRAWN.pop(run, None)  # (a reused run id: this call's lookup is its own)
    _CLAIMS.set((*others[-(_MAX_CLAIMS - 1) :], *mine, claim))
    return claim


def drop_claims(run: object) -> None:
    """Close the claims made here for ``run``: its start failed (a handler of it raised), so
    LangChain neither looks its cache up nor ends it."""
    for claim in _CLAIMS.get():
        if claim.run == run:
            claim.close()


_WITH_CACHE_CODES = frozenset(
    {BaseChatModel._generate_with_cache.__code__, BaseChatModel._agenerate_with_cache.__code__}
)


def _looks_up_itself(cls: type[BaseChatModel]) -> bool:
    """Whether ``cls`` looks its cache up through LangChain's own ``_generate_with_cache`` /
    ``_agenerate_with_cache`` (where :func:`_run_of_lookup` reads the run's id)."""
    return (
        cls._generate_with_cache is BaseChatModel._generate_with_cache
        and cls._agenerate_with_cache is BaseChatModel._agenerate_with_cache
    )


def _run_of_lookup() -> object:
    """The id of the chat model run whose ``_generate_with_cache`` called the cache (up the
    stack), or ``_NO_RUN``."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAMES_UP):
        if frame is None:
            break
        if frame.f_code in _WITH_CACHE_CODES:
            manager = frame.f_locals.get("run_manager")
            run = getattr(manager, "run_id", None)
            return _NO_RUN if run is None else run
        frame = frame.f_back
    return _NO_RUN


def _differs(claim: RunClaim, block: Attribution) -> bool:
    """Whether the ``attribute()`` block in force names another payer than ``claim``."""
    mine = claim.attribution
    return any(
        b is not None and b != c
        for b, c in (
            (block.tenant, mine.tenant),
            (block.feature, mine.feature),
            (block.user, mine.user),
        )
    )


class _Skip(Exception):
    """The run's claims were withdrawn: its lookup and store skip the cache."""


def _take(prompt: str, llm_string: str, run: object) -> RunClaim | None:
    """The claim whose payer the lookup of ``prompt`` for ``run`` is scoped under: the run's
    claims are all taken (a refused one's payer first, else the newest handler's); ``None``:
    the run has none (or the ``attribute()`` block in force names another payer: it wins).

    Raises:
        _Skip: The run's claims were withdrawn (skip the cache).
        BaseException: The refusal of a withdrawn refused run, or of a refused run whose claim
            names another payer than the ``attribute()`` block in force (nothing is sent).
    """
    if run is _NO_RUN:
        return None
    with _WITHDRAWN_LOCK:
        withdrawn = run in _WITHDRAWN
        refusal = _WITHDRAWN.get(run)
        if withdrawn and refusal is not None:
            del _WITHDRAWN[run]  # its one lookup: no store follows a refusal
    if withdrawn:
        if refusal is not None:
            raise refusal()
        raise _Skip  # (kept for its store, which skips the cache too)
    claims = [c for c in _CLAIMS.get() if c.open and c.prompt is None and c.run == run]
    if not claims:
        return None
    claim = next((c for c in claims if c.refusal is not None), claims[-1])
    if _differs(claim, current_attribution()):
        for c in claims:
            c.close()
        if claim.refusal is not None:
            raise claim.refusal()
        return None
    for c in claims:
        c.prompt, c.llm_string = prompt, llm_string
    claim.payer = True
    return claim


def _taken(prompt: str, llm_string: str, run: object) -> RunClaim | None:
    """The claim the lookup of ``run``'s ``prompt`` used (the store of its miss); its claims
    close. (A refused run's claim has no store: nothing was sent.)

    Raises:
        _Skip: The run's claims were withdrawn (skip the cache).
    """
    if run is _NO_RUN:
        return None
    with _WITHDRAWN_LOCK:
        if _WITHDRAWN.pop(run, _KEPT) is not _KEPT:  # the run's store: its last use of the cache
            raise _Skip
    found = None
    for claim in _CLAIMS.get():
        if claim.open and claim.run == run and claim.prompt == prompt and claim.llm_string == llm_string:
            claim.close()
            if claim.payer and claim.refusal is None:
                found = claim
    return found


def answers_next_lookup() -> bool:
    """Whether the chat model run whose ``on_chat_model_start`` callback is running (up the stack)
    looks a ``TokenBudgetLLMCache`` up before it sends anything: LangChain's callback manager
    was called for it by ``BaseChatModel.generate`` / ``agenerate`` themselves (``invoke``,
    ``batch`` and a non-streaming ``stream`` go through them; a streaming ``stream`` never looks
    a cache up), and the model's cache (its ``cache=``, else the global one unless
    ``cache=False``) is one. LangChain then looks it up right after the start, in the same
    context, before any other code runs: a claim made now is the one that lookup takes."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAMES_UP):
        if frame is None:
            return False
        if frame.f_code in _START_CODES:
            caller = frame.f_back
            if caller is None or caller.f_code not in _GENERATE_CODES:
                return False
            model = caller.f_locals.get("self")
            if not isinstance(model, BaseChatModel) or model.cache is False:
                return False
            if not _looks_up_itself(type(model)):  # its lookup could not be told to be this run's
                return False
            cache = model.cache if isinstance(model.cache, BaseCache) else get_llm_cache()
            return isinstance(cache, TokenBudgetLLMCache)
        frame = frame.f_back
    return False


class _RunScope(BaseCallbackHandler):
    """Claims the cache lookup of every chat model run started where it is in force
    (:func:`scoped_runs`) for ``payer``, as a budget handler claims its runs: the
    ``TokenBudgetLLMCache`` LangChain looks up next scopes and records the run under that payer.
    With a ``refusal`` the run is left to that cache (a hit is served, a miss raises the refusal
    there), and a run nothing is sure to look one up for (another cache, ``cache=False``, a
    streaming ``stream()``, a text LLM, several prompts) is refused at its start: nothing is sent."""

    raise_error = True  # (LangChain drops a handler's exception otherwise)
    run_inline = True  # (the claim must be made in the run's own context)

    def __init__(self, payer: Attribution, refusal: Callable[[], BaseException] | None) -> None:
        self.payer, self.refusal = payer, refusal
        self.claims: dict[object, RunClaim] = {}

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: Any, **kwargs: Any
    ) -> None:
        size = kwargs.get("batch_size")
        if len(messages) == 1 and not (type(size) is int and size > 1) and answers_next_lookup():
            claim = claim_run(self.payer, messages[0], run=run_id, refusal=self.refusal)
            if claim is not None:
                self.claims[run_id] = claim
                return
        if self.refusal is not None:
            raise self.refusal()

    def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: Any, **kwargs: Any) -> None:
        if self.refusal is not None:
            raise self.refusal()

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._done(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._done(run_id)

    def _done(self, run_id: object) -> None:
        claim = self.claims.pop(run_id, None)
        if claim is not None:
            claim.close()


_RUN_SCOPE: contextvars.ContextVar[_RunScope | None] = contextvars.ContextVar(
    "tokenbudget_run_scope", default=None
)
register_configure_hook(_RUN_SCOPE, True)


@contextlib.contextmanager
def scoped_runs(payer: Attribution, refusal: Callable[[], BaseException] | None = None) -> Iterator[None]:
    """Inside the block, the ``TokenBudgetLLMCache`` lookup of every chat model run LangChain
    starts is scoped and recorded under ``payer``, which is not put in force (a budget handler
    of another ledger still charges its own payer): how a caller that charges the runs itself (a
    budget middleware) keeps one payer's cached answers from another. With ``refusal``, nothing
    is sent: each run is answered from a ``TokenBudgetLLMCache`` or refused with ``refusal()``
    before it goes out, as a ``BudgetCallbackHandler`` that refused a run leaves it to the cache.
    A block inside another keeps the enclosing block's refusal (an inner budget middleware with
    room does not send what an outer one refused). Nothing is done until a
    ``TokenBudgetLLMCache`` exists (:func:`cache_in_use`) unless a refusal is in force."""
    outer = _RUN_SCOPE.get()
    if refusal is None and outer is not None:
        refusal = outer.refusal  # an enclosing block's refusal holds here too: nothing is sent
    if refusal is None and not _IN_USE[0]:
        yield
        return
    guard = _RunScope(payer, refusal)
    token = _RUN_SCOPE.set(guard)
    try:
        yield
    finally:
        _RUN_SCOPE.reset(token)
        for claim in guard.claims.values():
            withdraw_claim(claim)


@contextlib.contextmanager
def _payer(claim: RunClaim | None) -> Iterator[None]:
    if claim is None:
        yield
        return
    with in_force(claim.attribution):
        yield


class TokenBudgetLLMCache(BaseCache):
    """LangChain's LLM cache interface over a tokenbudget ``ExactCache`` or ``SemanticCache``.

    Use it process-wide with ``set_llm_cache(...)`` or per model with ``cache=``.

    Args:
        cache: The core cache (``ExactCache`` or ``SemanticCache``); it decides what is stored,
            for how long, in which scope, and what counts as a near-duplicate.
        scope: The :class:`~tokenbudget_core.cache_keys.CacheScope` entries belong to, or a
            callable returning it per call (e.g. from the app's tenant context); ``None`` takes
            the tenant, user and feature of the call's payer: the one a ``BudgetCallbackHandler``
            on the run charges (named in the run's metadata or tags, or the handler's defaults;
            the tenant: an ``attribute(tenant=...)`` block's, else the run's ``tenant`` /
            ``tokenbudget_tenant`` metadata or ``tenant:x`` tag), else the current
            ``attribute()`` block.

    Warning:
        With ``scope=None`` and neither a budget handler on the run nor an ``attribute()``
        block naming the payer, every caller shares one scope: a payer named only in a run's
        metadata is not seen, and user B may be served the answer cached for user A. Answers
        that depend on who asks need a handler on the run, an ``attribute(user=...)`` block, or
        an explicit ``scope=`` (a callable per call).

    Raises:
        InvalidInputError: ``cache`` is not a tokenbudget response cache, or ``scope`` is neither
            a ``CacheScope`` nor a callable.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage
        >>> from tokenbudget_core.cache_keys import CacheScope
        >>> from tokenbudget_core.response_cache import ExactCache
        >>> model = GenericFakeChatModel(messages=iter([AIMessage("Paris.")]),
        ...     cache=TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="acme")))
        >>> model.invoke("Capital of France?").content, model.invoke("Capital of France?").content
        ('Paris.', 'Paris.')
    """

    def __init__(self, cache: ExactCache | SemanticCache, *, scope: ScopeLike = None) -> None:
        if not isinstance(cache, ResponseCacheBase):
            raise InvalidInputError(
                "cache", f"must be an ExactCache or SemanticCache, got {type(cache).__name__}", value=cache,
                fix="TokenBudgetLLMCache(ExactCache()) or TokenBudgetLLMCache(SemanticCache())",
            )  # fmt: skip
        if scope is not None and not isinstance(scope, CacheScope) and not callable(scope):
            raise InvalidInputError(
                "scope", "must be a CacheScope, a callable returning one, or None", value=scope
            )
        self.cache = cache
        self.scope = scope
        _IN_USE[0] = True

    def _scope(self) -> CacheScope | None:
        return self.scope() if callable(self.scope) else self.scope

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for this prompt and model settings, or ``None``."""
        try:
            claim = _take(prompt, llm_string, _run_of_lookup())
        except _Skip:
            return None
        request = to_cache_request(prompt, llm_string)
        with _payer(claim):
            with hits_not_recorded():  # an entry that cannot be rebuilt is a miss: no hit recorded
                hit = self.cache.lookup(request, scope=self._scope())
            served = _rebuilt(hit, self._audit)
            if hit is not None and served is not None:
                self.cache.record_hit(request, hit)
        return _served(served, claim, self.cache.ledger)

    def _audit(self, hit: CacheHit) -> dict[str, Any]:
        """What a served hit puts in each message's ``response_metadata["tokenbudget_cache"]``.

        Cost callbacks read it: a hit is not a model call, and ``recorded`` says whether the
        core cache already recorded it (with what it saved) in a ledger.
        """
        return {
            "kind": hit.kind,
            "key": hit.key,
            "score": hit.score,
            "matched_prompt": hit.matched_prompt,
            "saved_usd": None if hit.saved_usd is None else decimal_text(hit.saved_usd),
            "saved_tokens": hit.saved_tokens,
            "recorded": self.cache.ledger is not None,
        }

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations (the core cache may decline: sampled, tool calls, cut off...).

        Raises:
            InvalidInputError: ``return_val`` is not a list of LangChain ``Generation`` objects.
        """
        request = to_cache_request(prompt, llm_string)
        response = _response(_generations_of(return_val), request.model, self.cache)
        try:
            claim = _taken(prompt, llm_string, _run_of_lookup())
        except _Skip:
            return
        if response is not None:
            with _payer(claim):
                self.cache.store(request, response, scope=self._scope())

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry of the core cache."""
        self.cache.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async twin of :meth:`lookup`."""
        try:
            claim = _take(prompt, llm_string, _run_of_lookup())
        except _Skip:
            return None
        request = to_cache_request(prompt, llm_string)
        with _payer(claim):
            with hits_not_recorded():
                hit = await self.cache.alookup(request, scope=self._scope())
            served = _rebuilt(hit, self._audit)
            if hit is not None and served is not None:
                await self.cache.arecord_hit(request, hit)
        return _served(served, claim, self.cache.ledger)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async twin of :meth:`update`."""
        request = to_cache_request(prompt, llm_string)
        response = _response(_generations_of(return_val), request.model, self.cache)
        try:
            claim = _taken(prompt, llm_string, _run_of_lookup())
        except _Skip:
            return
        if response is not None:
            with _payer(claim):
                await self.cache.astore(request, response, scope=self._scope())

    async def aclear(self, **kwargs: Any) -> None:
        """Async twin of :meth:`clear`."""
        await self.cache.aclear()


def _rebuilt(hit: CacheHit | None, audit: Callable[[CacheHit], dict[str, Any]]) -> list[Generation] | None:
    """The generations a lookup serves: the served hit's, rebuilt; ``None`` (a miss) for no hit, a
    hit not served (shadow mode) or an entry whose generations cannot be rebuilt."""
    return None if hit is None or not hit.served else _generations(hit.response, audit(hit))


def _served(
    served: list[Generation] | None,
    claim: RunClaim | None,
    ledger: object,
) -> RETURN_VAL_TYPE | None:
    """What a lookup answers: the served generations (see :func:`_rebuilt`), or ``None`` (a miss).
    A miss of a run the budget refused raises that refusal: the call is not sent (a hit is
    served: it costs nothing). A hit tells the claim the ledger it was recorded in (``ledger``,
    the cache's).

    Raises:
        BudgetExceededError: A miss of a refused run (see :attr:`RunClaim.refusal`).
    """
    if claim is None:
        return served
    claims = [c for c in _CLAIMS.get() if c.open and c.run == claim.run and c.prompt == claim.prompt]
    for c in claims:  # every handler of the run: each ledger records the hit once
        if served is not None:
            c.recorded_in, c.served = ledger, served
        if claim.refusal is not None or served is not None:
            c.close()  # no model call follows: no store
    if claim.refusal is not None and served is None:
        raise claim.refusal()
    return served


def _generations_of(value: object) -> Sequence[Generation]:
    if not isinstance(value, list | tuple) or not all(isinstance(g, Generation) for g in value):
        raise InvalidInputError(
            "return_val", "must be a list of LangChain Generation objects", value=type(value).__name__
        )
    return value


# -- LangChain's strings to a CacheRequest --------------------------------------------------------


def _settings(llm_string: str) -> tuple[dict[str, Any], str | None, str | None]:
    """The model settings in an ``llm_string`` (its JSON part and its ``[(key, value)]`` part), the
    class name and the provider (a core provider id) of the integration that wrote it."""
    settings: dict[str, Any] = {}
    name = None
    provider = None
    rest = llm_string
    try:
        data, end = json.JSONDecoder().raw_decode(llm_string)
    except ValueError:
        data, end = None, 0
    if isinstance(data, dict):
        if isinstance(data.get("kwargs"), dict):
            settings.update(data["kwargs"])
        ids = data.get("id")
        name = ids[-1] if isinstance(ids, list) and ids and isinstance(ids[-1], str) else None
        if isinstance(ids, list):
            provider = integration_provider(ids[:-1])  # its serialisation namespace
        rest = llm_string[end:].removeprefix("---")
    try:
        items = ast.literal_eval(rest) if rest else None  # literals only: never runs code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        items = None
    if isinstance(items, list):
        settings.update(i for i in items if isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str))
    kind = settings.get("_type")
    if provider is None:
        provider = integration_provider([kind])
    return settings, name, provider


def _messages(prompt: str) -> list[BaseMessage] | None:
    """The chat messages in a chat model's prompt (the JSON of the messages), read as plain data.

    ``None``: not a list of serialized LangChain objects (a completion model's prompt);
    ``_UNREADABLE``: such a list with a message this function cannot read.
    """
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not data or not all(isinstance(i, dict) and "lc" in i for i in data):
        return None
    out: list[BaseMessage] = []
    for item in data:
        kwargs = item.get("kwargs")
        cls = _MESSAGE_TYPES.get(str(kwargs.get("type"))) if isinstance(kwargs, dict) else None
        if cls is None or kwargs is None:
            return _UNREADABLE
        fields = _EXTRA_FIELDS.get(cls, _MESSAGE_FIELDS)
        try:
            out.append(cls(**{k: kwargs[k] for k in fields if kwargs.get(k) is not None}))
        except (ValueError, TypeError):
            return _UNREADABLE
    return out


def to_cache_request(prompt: str, llm_string: str) -> CacheRequest:
    """The core request for LangChain's ``prompt`` and ``llm_string``.

    The model name and the sampling settings (``temperature``, ``top_p``) are read from the
    ``llm_string``, which is also kept whole as a parameter (every setting is part of the key).
    A provider integration that sets no temperature (``ChatOpenAI()``, ``ChatAnthropic()``)
    samples at its provider's default: the core's
    :func:`~tokenbudget_core.cache_keys.with_default_temperature` says which.

    Raises:
        InvalidInputError: ``prompt`` or ``llm_string`` is not a string.
    """
    if not isinstance(llm_string, str):
        raise InvalidInputError("llm_string", "must be a string", value=type(llm_string).__name__)
    settings, name, provider = _settings(llm_string)
    found = [settings.get(k) for k in _MODEL_KEYS]
    model = next((m for m in found if isinstance(m, str) and m.strip()), name or "unknown-model")
    params: dict[str, Any] = {"llm_string": llm_string}
    extra = settings.get("model_kwargs")
    for key in ("temperature", "top_p"):
        value = settings.get(key)
        if value is None and isinstance(extra, dict):
            value = extra.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[key] = value
    params = with_default_temperature(params, provider)  # unset: the provider's default
    messages = _messages(prompt) if isinstance(prompt, str) else None
    if messages is not None:
        try:
            if messages is not _UNREADABLE:
                failed = [
                    m.tool_call_id for m in messages if isinstance(m, ToolMessage) and m.status == "error"
                ]
                if failed:  # a failed tool result is another request than a successful one
                    params["failed_tool_calls"] = failed
                return CacheRequest(model=model, messages=tuple(to_core_messages(messages)), params=params)
        except (InvalidInputError, TypeError):
            pass
        # messages the core cannot read (a PDF block, a message type unknown here): key on the
        # text, and let a semantic cache serve only the identical request
        return CacheRequest.from_text(model=model, prompt=prompt, params=params, opaque=True)
    return CacheRequest.from_text(model=model, prompt=prompt, params=params)


# -- generations <-> CachedResponse ---------------------------------------------------------------


def _response(
    generations: Sequence[Generation], model: str, cache: ResponseCacheBase
) -> CachedResponse | None:
    """The generations as a plain-JSON response; ``None`` (not stored) when they are not plain JSON.

    The entry names the model that answered by the core's rule
    (:meth:`~tokenbudget_core.response_cache.ResponseCacheBase.answering_model`, as LlamaIndex's
    ``CachedLLM`` names it): the one a chat message's ``response_metadata`` names when the cache's
    registry knows it (a dated snapshot prices as itself), else ``model``, the one the request
    names (a name the registry does not know would leave what a hit saves unpriced). Why it ended
    is the core's :func:`~tokenbudget_core.cached_response.stop_reason_of` over every
    generation's metadata (a streamed call's generation is LangChain's merge of its chunks).
    """
    items: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    usage: Usage | None = None
    reported: list[object] = []  # where each generation says why it ended
    named: str | None = None  # the model the reply names
    for g in generations:
        item: dict[str, Any] = {"text": g.text, "generation_info": g.generation_info}
        reported.append(g.generation_info)
        if isinstance(g, ChatGeneration) and isinstance(g.message, AIMessage):
            m = g.message
            invalid = [dict(c) for c in m.invalid_tool_calls]  # a malformed call is a call too
            calls += [dict(c) for c in m.tool_calls] + invalid
            item["message"] = {
                "content": m.content, "tool_calls": [dict(c) for c in m.tool_calls], "name": m.name,
                "invalid_tool_calls": invalid,
                "usage_metadata": dict(m.usage_metadata) if m.usage_metadata else None,
                "response_metadata": m.response_metadata, "additional_kwargs": m.additional_kwargs,
            }  # fmt: skip
            if usage is None and m.usage_metadata:
                usage = Usage.from_langchain(m.usage_metadata)
            answered_by = m.response_metadata.get("model_name") or m.response_metadata.get("model")
            if isinstance(answered_by, str) and answered_by:
                named = answered_by
            reported.append(m.response_metadata)
        items.append(item)
    try:
        answerer = cache.answering_model(model, reported=named)  # prices what a hit saves
        return CachedResponse(
            content=generations[0].text if generations else "", model=answerer.model,
            usage=usage if usage is not None else Usage(estimated=True),
            finish_reason=stop_reason_of(*reported) or "stop",
            tool_calls=tuple(calls), extra={"generations": items},
        )  # fmt: skip
    except InvalidInputError as e:
        logger.debug("LangChain generations not cached: %s", e)
        return None


def _generations(response: CachedResponse, audit: Mapping[str, Any]) -> list[Generation] | None:
    """Fresh LangChain objects from a cached response (``None``, a miss, for an unreadable entry).

    Chat messages carry ``audit`` under ``response_metadata["tokenbudget_cache"]``.
    """
    items = response.extra.get("generations")
    if not isinstance(items, Sequence) or isinstance(items, str):  # written by another host
        return [Generation(text=response.content)]
    try:
        out: list[Generation] = []
        for item in items:
            info = item.get("generation_info")
            message = item.get("message")
            if isinstance(message, Mapping):
                fields = {
                    k: message[k] for k in ("content", "name", "usage_metadata") if message.get(k) is not None
                }
                ai = AIMessage(
                    **fields, tool_calls=list(message.get("tool_calls") or []),
                    invalid_tool_calls=list(message.get("invalid_tool_calls") or []),
                    response_metadata={**(message.get("response_metadata") or {}), CACHE_HIT_KEY: {**audit}},
                    additional_kwargs=dict(message.get("additional_kwargs") or {}),
                )  # fmt: skip
                out.append(ChatGeneration(message=ai, generation_info=info))
            else:
                out.append(Generation(text=item["text"], generation_info=info))
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        logger.warning("unreadable LangChain cache entry ignored: %s", e)
        return None
