"""Token counts for Claude models through Anthropic's ``messages.count_tokens`` API.

Anthropic publishes no offline tokenizer for current models, so exact counts come
from the API (system prompt, tools and images included). Results are kept in an LRU
cache keyed on the request's content, so counting the same request again (a budget
check followed by the call, a retry, a re-render of the same history) costs nothing.
When the API cannot be reached (no client or key, timeout, connection error, 429 or
5xx, or a gateway that has no ``count_tokens`` endpoint: a 404 that names no model), the
counter returns an estimate flagged ``exact=False`` and says why in
:attr:`AnthropicTokenCounter.last_error`; with ``strict=True`` it raises instead.
Errors that are the caller's (bad request, authentication) always raise
:class:`~tokenbudget_core.errors.TokenCountError`: an estimate would hide them.
Estimates correct themselves from reported usage (:meth:`AnthropicTokenCounter.observe`).
A request holding a tool call whose arguments are not a JSON object is counted with that call's
``input`` as ``{}`` (as langchain-anthropic sends it; see :mod:`~tokenbudget_core.anthropic_format`)
and the count is flagged ``exact=False``, the guess named in ``last_error``.
Lone surrogates (half of an emoji cut upstream, e.g. ``json.loads('"\\ud83d"')``) cannot be
encoded as UTF-8, so the count request carries U+FFFD in their place (what a decoder that
replaces errors produces); such a count is flagged ``exact=False`` and ``last_error`` says so.
The offline estimate counts the text as given.

Anthropic's beta built-in tools (computer use, code execution, MCP toolsets, memory, web fetch,
tool search...) are counted through ``client.beta.messages.count_tokens`` with the betas their
types need, as langchain-anthropic adds them to the real call (the API refuses such a tool without
its beta). A 400 that names a tool type of the request as unknown (a tool newer than this table)
is estimated, flagged, instead of raised: the host may well send that tool fine.

A body the API refuses by its own rules is never sent: no message at all (what
``count_messages([], tools)``, the request's framing for fitting and memory, asks) or a last user
turn with no content (whitespace-only text, whose block is dropped). The first is answered with
the system prompt and tools measured by the API (a one-word user message counted with them and
alone, the difference taken) plus the estimate's framing; the second, and the first when there is
no system prompt or tool, with the offline estimate. Both are flagged ``exact=False``, with or
without ``strict`` (the API cannot count such a body at all), and ``last_error`` says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from .anthropic_format import AnthropicRequest, build_anthropic_request
from .calibration import Calibration
from .counting import TokenCount, TokenCounter, ToolLike, check_text, check_timeout, check_tools
from .errors import InvalidInputError, MissingDependencyError, TokenCountError, check_flag
from .estimating import EstimatingTokenCounter, json_keys, not_json
from .messages import MessageLike, to_messages
from .registry import ModelInfo

__all__ = ["AnthropicTokenCounter", "check_anthropic_client"]

# The beta each Anthropic built-in tool type needs, copied from langchain-anthropic
# (langchain_anthropic.chat_models._TOOL_TYPE_TO_BETA, 1.7.10), which adds it to the real call:
# the count request must carry the same betas, or the API refuses the tool type (a 400).
_TOOL_TYPE_TO_BETA: dict[str, str] = {
    "web_fetch_20250910": "web-fetch-2025-09-10",
    "code_execution_20250522": "code-execution-2025-05-22",
    "mcp_toolset": "mcp-client-2025-11-20",
    "memory_20250818": "context-management-2025-06-27",
    "computer_20250124": "computer-use-2025-01-24",
    "computer_20251124": "computer-use-2025-11-24",
    "tool_search_tool_regex_20251119": "advanced-tool-use-2025-11-20",
    "tool_search_tool_bm25_20251119": "advanced-tool-use-2025-11-20",
    "advisor_20260301": "advisor-tool-2026-03-01",
}
# A tool with ``input_examples`` needs this beta too (langchain-anthropic adds it the same way).
_INPUT_EXAMPLES_BETA = "advanced-tool-use-2025-11-20"
# The user turn the system prompt and tools of a request with no message are measured with.
_PLACEHOLDER = {"role": "user", "content": [{"type": "text", "text": "x"}]}


class AnthropicTokenCounter(TokenCounter):
    """Claude token counts: exact via the API, estimated (and flagged) offline.

    Built-in (server) tools go to the count request as the host sends them
    (:attr:`~tokenbudget_core.counting.TokenCounter.counts_builtin_tools`).

    Args:
        model: The registry entry of a Claude model.
        client: An ``anthropic.Anthropic`` client (anything with a synchronous
            ``messages.count_tokens``). Default: one is created when ``ANTHROPIC_API_KEY`` is set;
            without a key every count is an estimate.
        async_client: An ``anthropic.AsyncAnthropic`` client for :meth:`acount_messages`, used
            as given (an ``httpx`` async client belongs to the event loop it first ran on: the
            caller passing one runs it on one loop). Without it, the async twins count through
            ``client`` in a worker thread (the very client :meth:`count_messages` uses, with its
            headers, credentials, transport, timeout and retries), or, when the counter made its
            own client from ``ANTHROPIC_API_KEY``, through an ``AsyncAnthropic`` it makes for each
            event loop (a process may run several, one ``asyncio.run`` per job).
        timeout: Seconds to wait for the counting API.
        cache_size: Distinct requests whose counts are remembered.
        strict: Raise :class:`~tokenbudget_core.errors.TokenCountError` instead of estimating
            when the API cannot be reached (a request the API refuses by its rules, which is never
            sent, is still estimated and flagged: see the module doc).
        calibration: Where the offline estimate's correction factor is learned.

    Raises:
        InvalidInputError: ``timeout`` is not a finite number > 0, ``cache_size`` not an int
            >= 1, ``strict`` not a bool, ``calibration`` not a ``Calibration`` (or ``None``),
            ``client`` not a sync Anthropic client or ``async_client`` not an async one (see
            :func:`check_anthropic_client`).

    Example:
        >>> import anthropic
        >>> counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=anthropic.Anthropic())
        >>> n = counter.count_messages([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
        >>> n.exact  # doctest: +SKIP
        True

        (``True`` with a key and the API reachable; offline the count is an estimate: ``False``.)
    """

    counts_builtin_tools = True

    def __init__(
        self,
        model: ModelInfo,
        *,
        client: Any = None,
        async_client: Any = None,
        timeout: float = 5.0,
        cache_size: int = 4096,
        strict: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        super().__init__(model)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise InvalidInputError("cache_size", "must be a positive integer", value=cache_size)
        self.timeout = check_timeout(timeout)
        self.strict = check_flag("strict", strict)
        # Checked here: a key string or a sync client given as the async one would otherwise
        # fail at every count, caught as an outage, and turn every count into an estimate.
        if client is not None:
            check_anthropic_client(client, "client")
        if async_client is not None:
            check_anthropic_client(async_client, "async_client", async_=True)
        self._client = client
        self._async_client = async_client
        self._client_checked = client is not None
        # The caller's sync client cannot be rebuilt as an AsyncAnthropic without losing what it
        # holds (an http_client with proxies or TLS settings, middleware, credential providers):
        # the async twins run that very client in a worker thread, so both twins agree.
        self._caller_client = client is not None
        # AsyncAnthropic clients this counter made, one per event loop: an httpx async client's
        # connections belong to the loop they were opened on and fail on any other.
        self._loop_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        self._estimator = EstimatingTokenCounter(model, calibration=calibration)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.last_error: str | None = None
        """Why the last count was not exact: an estimate, or a guessed tool-call ``input``
        (``None`` after an exact count)."""
        self.api_calls = 0
        """How many times the counting API was called (cache misses)."""

    # -- plumbing -----------------------------------------------------------------------------

    def _sync_client(self) -> Any:
        if not self._client_checked:
            self._client_checked = True
            if os.environ.get("ANTHROPIC_API_KEY"):
                self._client = _make_client(async_=False, timeout=self.timeout)
        return self._client

    async def _aclient(self) -> Any:
        """The async client for the running loop: the caller's, else one made for this loop
        (``None`` when the async twins count through the caller's sync client, or there is no
        client at all)."""
        if self._async_client is not None:
            return self._async_client
        if self._caller_client or not os.environ.get("ANTHROPIC_API_KEY"):
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._loop_clients if lp.is_closed()]:
                # Closed without finalising its async generators: its connections died with it.
                del self._loop_clients[old]
            made = self._loop_clients.get(loop)
            if made is None or made[0].is_closed():  # closed: the loop finalised its generators
                client = _make_client(async_=True, timeout=self.timeout)
                closer = _close_at_loop_end(client)
                made = self._loop_clients[loop] = (client, closer)
            else:
                closer = None
        if closer is not None:
            # Started on this loop, the generator is finalised by the loop's shutdown_asyncgens
            # (asyncio.run does it): the client's connections are closed while the loop runs.
            await closer.__anext__()
        return made[0]

    def _request(self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None) -> AnthropicRequest:
        request = build_anthropic_request(messages, check_tools(tools))
        request.body["model"] = self._api_model()
        return request

    def _api_model(self) -> str:
        """The model id the counting API is asked about: the caller's name, or for a stand-in
        (``for_model("my-proxy", fallback="claude-sonnet-4-5")``) the fallback model, since
        Anthropic answers 404 for a name it does not know. A ``provider/`` prefix is dropped."""
        model = self.model
        if model.fallback_for is not None:
            return (model.fallback_model or model.canonical).rpartition("/")[2]
        return model.name.rpartition("/")[2]

    @staticmethod
    def _key(request: dict[str, Any]) -> str:
        """The cache key of a request body.

        Raises:
            UnicodeEncodeError: The body holds lone surrogates (see :meth:`_begin`).
            InvalidInputError: A tool schema is not JSON (a tuple key, a circular reference).
        """
        try:
            blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):  # keys of mixed types (1 and "x"): sort
            try:  # the strings JSON makes of them
                blob = json.dumps(
                    json_keys(request), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
                )
            except (TypeError, ValueError, RecursionError) as e:
                raise not_json("tools", request.get("tools"), e) from e
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cached(self, key: str) -> int | None:
        with self._lock:
            n = self._cache.get(key)
            if n is not None:
                self._cache.move_to_end(key)
            return n

    def _store(self, key: str, n: int) -> None:
        with self._lock:
            self._cache[key] = n
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _exact(self, n: int, guessed: Sequence[str] = (), replaced: bool = False) -> TokenCount:
        """The API's count; flagged inexact when the request holds a guessed tool-call ``input``
        or lone surrogates that went to the API as U+FFFD."""
        reason = _guess_reason(guessed)
        if replaced:
            reason = f"{reason}; {_REPLACED_REASON}" if reason else _REPLACED_REASON
        self.last_error = reason
        return TokenCount(n, exact=reason is None, model=self.model.name, method="anthropic-api")

    def _fallback(
        self, reason: str, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> TokenCount:
        self.last_error = reason
        if self.strict:
            raise TokenCountError(self.model.name, reason)
        return self._estimator.count_messages(messages, tools)

    @property
    def cache_size(self) -> int:
        """Number of request counts currently cached."""
        return len(self._cache)

    # -- public API ---------------------------------------------------------------------------

    def count_message(self, message: MessageLike) -> TokenCount:
        """Calibrated estimate of one message's tokens (``exact=False``; no API call per message)."""
        return self._estimator.count_message(message)

    def count(self, text: str) -> TokenCount:
        """Tokens of ``text`` sent as one user message (Claude's message framing included).

        The empty string is 0 tokens (the API rejects empty messages). Whitespace-only text is
        the offline estimate, flagged ``exact=False``: its block is dropped as the API refuses it,
        which leaves a user turn with no content, refused too (see the module doc).
        """
        if check_text(text) == "":
            return self._exact(0)
        return self.count_messages([{"role": "user", "content": text}])

    def count_output(self, text: str) -> TokenCount:
        """Tokens of ``text`` as a reply's output: the calibrated offline estimate of the text
        alone (``exact=False``), with no user-message framing and no API call (the counting API
        counts requests, and this runs when a stream was cut short, on the call's way out)."""
        return self._estimator.count(text)

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Input tokens of a Messages API request, exact when the API answers.

        A request the API refuses by its rules (no message, a last user turn with no content) is
        never sent: see the module doc. ``count_messages([], tools)`` (a request's framing) is
        the tools and system prompt measured by the API plus the estimated framing, flagged
        ``exact=False``.
        """
        request = self._request(messages, tools)
        if not _sendable(request.body):
            reason, probes = self._unsendable(request, messages)
            if probes is None:
                return self._estimated(reason, messages, tools)
            with_extras = self._count_request(probes[0], messages, tools)
            if with_extras.method != "anthropic-api":
                return with_extras  # the API failed: the request's own estimate (last_error says why)
            reason = f"{reason}; {self.last_error}" if self.last_error else reason  # U+FFFD, a guess
            alone = self._count_request(probes[1], messages, tools)
            if alone.method != "anthropic-api":
                return alone
            return self._framed(reason, with_extras, alone, messages)
        return self._count_request(request, messages, tools)

    def _count_request(
        self, request: AnthropicRequest, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> TokenCount:
        """Count ``request`` through the API (or the cache); ``messages`` and ``tools`` are
        estimated when the API fails."""
        client = self._sync_client()
        request, key, replaced, done = self._begin(request, messages, tools, client)
        if done is not None:
            return done
        try:
            result = _send(client, request.body, self.timeout)
        except Exception as e:  # noqa: BLE001 - transport failures degrade to a flagged estimate
            return self._failed(e, request.body, messages, tools)
        return self._finish(key, result, request.guessed, replaced)

    async def acount(self, text: str) -> TokenCount:
        """Async twin of :meth:`count` (whitespace-only text is the flagged estimate too)."""
        if check_text(text) == "":
            return self._exact(0)
        return await self.acount_messages([{"role": "user", "content": text}])

    async def acount_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Async twin of :meth:`count_messages`: through ``async_client`` when one was given,
        else the sync ``client`` in a worker thread (same settings, same answer), else an
        ``anthropic.AsyncAnthropic`` made for the running event loop. A request the API refuses
        by its rules is never sent, as in :meth:`count_messages`."""
        request = self._request(messages, tools)
        if not _sendable(request.body):
            reason, probes = self._unsendable(request, messages)
            if probes is None:
                return self._estimated(reason, messages, tools)
            with_extras = await self._acount_request(probes[0], messages, tools)
            if with_extras.method != "anthropic-api":
                return with_extras  # the API failed: the request's own estimate (last_error says why)
            reason = f"{reason}; {self.last_error}" if self.last_error else reason  # U+FFFD, a guess
            alone = await self._acount_request(probes[1], messages, tools)
            if alone.method != "anthropic-api":
                return alone
            return self._framed(reason, with_extras, alone, messages)
        return await self._acount_request(request, messages, tools)

    async def _acount_request(
        self, request: AnthropicRequest, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> TokenCount:
        """Async twin of :meth:`_count_request`."""
        aclient = await self._aclient()
        client = aclient if aclient is not None else self._sync_client()
        request, key, replaced, done = self._begin(request, messages, tools, client)
        if done is not None:
            return done
        try:
            if aclient is not None:
                result = await _asend(aclient, request.body, self.timeout)
            else:  # the sync client, off the loop: what count_messages sends, sent the same way
                result = await asyncio.to_thread(_send, client, request.body, self.timeout)
        except Exception as e:  # noqa: BLE001 - transport failures degrade to a flagged estimate
            return self._failed(e, request.body, messages, tools)
        return self._finish(key, result, request.guessed, replaced)

    def _unsendable(
        self, request: AnthropicRequest, messages: Sequence[MessageLike]
    ) -> tuple[str, tuple[AnthropicRequest, AnthropicRequest] | None]:
        """Why ``request`` cannot be sent, and the two requests that measure its system prompt
        and tools instead (the placeholder turn with them, and alone), or ``None`` when the
        estimate answers (a last user turn with no content; nothing but framing to measure)."""
        body = request.body
        if body["messages"]:
            return (
                "the last user turn has no content (whitespace-only text is dropped, and the API "
                "refuses an empty turn): not sent, estimated",
                None,
            )
        if not body.get("system") and not body.get("tools"):
            return "a request with no message (the API refuses one): its framing is estimated", None
        reason = (
            "a request with no message (the API refuses one): its system prompt and tools are "
            "counted by the API (with a one-word user turn, taken off again), its framing estimated"
        )
        with_extras = dataclasses.replace(request, body={**body, "messages": [_PLACEHOLDER]})
        alone = AnthropicRequest(body={"messages": [_PLACEHOLDER], "model": body["model"]})
        return reason, (with_extras, alone)

    def _estimated(
        self, reason: str, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> TokenCount:
        """The offline estimate of a request that cannot be sent (even with ``strict``: the API
        cannot count it at all)."""
        self.last_error = reason
        return self._estimator.count_messages(messages, tools)

    def _framed(
        self, reason: str, with_extras: TokenCount, alone: TokenCount, messages: Sequence[MessageLike]
    ) -> TokenCount:
        """A request with no message to send: its system prompt and tools as the API counted them
        (``with_extras - alone``) plus the estimated framing of the messages given (none, or
        turns left with no content)."""
        turns = [m for m in to_messages(messages) if m.role not in ("system", "developer")]
        framing = int(self._estimator.count_messages(turns))
        self.last_error = reason
        return TokenCount(
            max(0, int(with_extras) - int(alone)) + framing,
            exact=False,
            model=self.model.name,
            method="anthropic-api",
        )

    def _begin(
        self,
        request: AnthropicRequest,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None,
        client: Any,
    ) -> tuple[AnthropicRequest, str, bool, TokenCount | None]:
        """Answer ``request`` from the cache, or estimate when there is no client.

        Also says whether lone surrogates in the request were replaced by U+FFFD (the SDK
        sends UTF-8 and cannot encode them)."""
        replaced = False
        try:
            key = self._key(request.body)
        except UnicodeEncodeError:  # lone surrogates: only this (rare) path pays for the walk
            request = dataclasses.replace(request, body=_replace_surrogates(request.body))
            key = self._key(request.body)
            replaced = True
        hit = self._cached(key)
        if hit is not None:
            return request, key, replaced, self._exact(hit, request.guessed, replaced)
        if client is None:
            reason = "no Anthropic client (set ANTHROPIC_API_KEY or pass a client)"
            return request, key, replaced, self._fallback(reason, messages, tools)
        self.api_calls += 1
        return request, key, replaced, None

    def _failed(
        self,
        e: Exception,
        body: dict[str, Any],
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None,
    ) -> TokenCount:
        tag = _unknown_tool_type(e, body)
        if tag is not None:  # a tool newer than _TOOL_TYPE_TO_BETA: the host may send it fine
            reason = f"the counting API does not know the tool type {tag!r}: estimated ({_describe(e)})"
            return self._fallback(reason[:400], messages, tools)
        _raise_if_caller_error(self.model.name, e)
        return self._fallback(_describe(e), messages, tools)

    def _finish(self, key: str, result: Any, guessed: Sequence[str], replaced: bool) -> TokenCount:
        n = _input_tokens(result)
        self._store(key, n)
        return self._exact(n, guessed, replaced)

    def observe(
        self,
        messages: Sequence[MessageLike],
        actual_input_tokens: int,
        tools: Sequence[ToolLike] | None = None,
    ) -> None:
        """Teach the offline estimate from the input tokens Anthropic reported for these messages.

        Pass ``Usage.from_anthropic(response).input_tokens`` (cache reads and writes included).
        """
        self._estimator.observe(messages, actual_input_tokens, tools)


def check_anthropic_client(client: object, field: str = "client", *, async_: bool = False) -> Any:
    """``client`` when it can count tokens: a sync client's ``messages.count_tokens`` is a plain
    callable; an async one's (``async_=True``) a coroutine function (an ``AsyncAnthropic``).

    Raises:
        InvalidInputError: Anything else (a key string, a sync client given as the async one and
            the reverse), named ``field``.
    """
    kind = "anthropic.AsyncAnthropic" if async_ else "anthropic.Anthropic"
    if isinstance(client, str | bytes):  # (its value is not kept on the error: it may be a key)
        raise InvalidInputError(
            field,
            f"must be an {kind} client, got a {type(client).__name__} (an API key?)",
            fix=f"pass {kind}(api_key=...), or set ANTHROPIC_API_KEY and leave it out",
        )
    count = getattr(getattr(client, "messages", None), "count_tokens", None)
    if not callable(count):
        raise InvalidInputError(
            field,
            f"must be an {kind} client (with messages.count_tokens), got {type(client).__name__}",
            value=client,
            fix=f"pass {kind}(...), or leave it out",
        )
    is_async = inspect.iscoroutinefunction(count)
    if is_async and not async_:
        raise InvalidInputError(
            field,
            f"is an async client ({type(client).__name__}); this argument takes a sync anthropic.Anthropic",
            value=client,
            fix="pass it as the async client (anthropic_async_client= / async_client=)",
        )
    if async_ and not is_async:
        raise InvalidInputError(
            field,
            f"must be an async client (an anthropic.AsyncAnthropic), got the sync {type(client).__name__}",
            value=client,
            fix="pass it as the sync client (anthropic_client= / client=): the async twins run it in a "
            "worker thread; or pass anthropic.AsyncAnthropic(...) here",
        )
    return client


def _sendable(body: dict[str, Any]) -> bool:
    """Whether the API accepts ``body``'s turns: at least one, and a last user turn with content
    (the builder drops every other empty turn; a final assistant one may be empty)."""
    turns = body["messages"]
    return bool(turns) and (turns[-1]["role"] != "user" or bool(turns[-1]["content"]))


def _betas(body: dict[str, Any]) -> list[str]:
    """The betas the request's tools need (see :data:`_TOOL_TYPE_TO_BETA`), in order, once each."""
    betas: list[str] = []
    for tool in body.get("tools") or ():
        kind = tool.get("type")
        needed = [_TOOL_TYPE_TO_BETA.get(kind) if isinstance(kind, str) else None]
        if tool.get("input_examples"):
            needed.append(_INPUT_EXAMPLES_BETA)
        betas += [b for b in needed if b is not None and b not in betas]
    return betas


def _beta_count(client: Any) -> Any:
    """The client's ``beta.messages.count_tokens``, or ``None`` (a wrapper without it)."""
    return getattr(getattr(getattr(client, "beta", None), "messages", None), "count_tokens", None)


def _send(client: Any, body: dict[str, Any], timeout: float) -> Any:
    """Count ``body`` with a sync client: through ``beta.messages.count_tokens`` with the betas
    its tools need, else ``messages.count_tokens``."""
    betas = _betas(body)
    if not betas:
        return client.messages.count_tokens(**body, timeout=timeout)
    beta_count = _beta_count(client)
    if callable(beta_count):
        return beta_count(**body, betas=betas, timeout=timeout)
    # a client without the SDK's beta namespace: the header the SDK would send
    return client.messages.count_tokens(
        **body, extra_headers={"anthropic-beta": ",".join(betas)}, timeout=timeout
    )


async def _asend(client: Any, body: dict[str, Any], timeout: float) -> Any:
    """Async twin of :func:`_send`."""
    betas = _betas(body)
    if not betas:
        return await client.messages.count_tokens(**body, timeout=timeout)
    beta_count = _beta_count(client)
    if callable(beta_count):
        return await beta_count(**body, betas=betas, timeout=timeout)
    return await client.messages.count_tokens(
        **body, extra_headers={"anthropic-beta": ",".join(betas)}, timeout=timeout
    )


_UNKNOWN_TAG = re.compile(r"Input tag '([^']+)' found using 'type' does not match")


def _unknown_tool_type(e: Exception, body: dict[str, Any]) -> str | None:
    """The tool type a 400 refuses as unknown, when it is the type of one of the request's
    tools (the API's ``tools.N: Input tag 'X' found using 'type' does not match any of the
    expected tags``); ``None`` for any other error."""
    if getattr(e, "status_code", None) != 400:
        return None
    error = getattr(e, "body", None)
    error = error.get("error") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    found = _UNKNOWN_TAG.search(message) if isinstance(message, str) else None
    if found is None:
        return None
    types = {t.get("type") for t in body.get("tools") or ()}
    return found[1] if found[1] in types else None


_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACED_REASON = (
    "the text holds lone surrogates (not encodable as UTF-8): counted with U+FFFD in their place"
)


def _replace_surrogates(value: Any) -> Any:
    """``value`` (a JSON-like request body) with every lone surrogate in its strings as U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_surrogates(v) for v in value]
    return value


def _guess_reason(guessed: Sequence[str]) -> str | None:
    if not guessed:
        return None
    return (
        f"{', '.join(guessed)}: not a JSON object; counted as input {{}} "
        "(as langchain-anthropic sends it; another integration may send otherwise)"
    )


def _make_client(*, async_: bool, timeout: float) -> Any:
    """A client from the environment (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``...).

    An async one is made on a plain ``httpx`` client, which, dropped unclosed after its loop
    closed, does not try to close itself on whichever loop runs then (the SDK's default one does,
    and fails: its connections belong to the closed loop)."""
    try:
        import anthropic
    except ImportError as e:
        raise MissingDependencyError("anthropic", "anthropic") from e
    if async_:
        return anthropic.AsyncAnthropic(
            timeout=timeout, max_retries=0, http_client=anthropic.DefaultAsyncHttpxClient()
        )
    return anthropic.Anthropic(timeout=timeout, max_retries=0)


async def _close_at_loop_end(client: Any) -> AsyncGenerator[None, None]:
    """Closes ``client`` when its event loop finalises its async generators (at the end of
    ``asyncio.run``), on that loop, where its connections can still be closed."""
    try:
        yield
    finally:
        await client.close()


def _input_tokens(result: Any) -> int:
    n = getattr(result, "input_tokens", None)
    if n is None and isinstance(result, dict):
        n = result.get("input_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TokenCountError("anthropic", f"count_tokens returned no valid input_tokens: {result!r}")
    return n


def _raise_if_caller_error(model: str, e: Exception) -> None:
    """A 4xx other than timeout/conflict/rate limit is the caller's error: estimating would hide it.

    A 404 that does not name the model is not: the endpoint is missing (a gateway or proxy that
    forwards ``/v1/messages`` but not ``count_tokens``), which is estimated like an outage.
    """
    status = getattr(e, "status_code", None)
    if status == 404 and not _names_model(e):
        return
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429):
        raise TokenCountError(model, _describe(e)) from e


def _names_model(e: Exception) -> bool:
    """Anthropic's 404 for an unknown model (``not_found_error``, ``"model: <name>"``)."""
    body = getattr(e, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and message.lower().startswith("model")


def _describe(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}{f' (HTTP {status})' if status else ''}: {e}"[:300]
