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
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
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
from .messages import MessageLike
from .registry import ModelInfo

__all__ = ["AnthropicTokenCounter"]


class AnthropicTokenCounter(TokenCounter):
    """Claude token counts: exact via the API, estimated (and flagged) offline.

    Built-in (server) tools go to the count request as the host sends them
    (:attr:`~tokenbudget_core.counting.TokenCounter.counts_builtin_tools`).

    Args:
        model: The registry entry of a Claude model.
        client: An ``anthropic.Anthropic`` client. Default: one is created when
            ``ANTHROPIC_API_KEY`` is set; without a key every count is an estimate.
        async_client: An ``anthropic.AsyncAnthropic`` client for :meth:`acount_messages`, used
            as given (an ``httpx`` async client belongs to the event loop it first ran on: the
            caller passing one runs it on one loop). Without it, the async twins count through
            ``client`` in a worker thread (the very client :meth:`count_messages` uses, with its
            headers, credentials, transport, timeout and retries), or, when the counter made its
            own client from ``ANTHROPIC_API_KEY``, through an ``AsyncAnthropic`` it makes for each
            event loop (a process may run several, one ``asyncio.run`` per job).
        timeout: Seconds to wait for the counting API.
        cache_size: Distinct requests whose counts are remembered.
        strict: Raise :class:`~tokenbudget_core.errors.TokenCountError` instead of estimating.
        calibration: Where the offline estimate's correction factor is learned.

    Raises:
        InvalidInputError: ``timeout`` is not a finite number > 0, ``cache_size`` not an int
            >= 1, ``strict`` not a bool, or ``calibration`` not a ``Calibration`` (or ``None``).

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

        The empty string is 0 tokens (the API rejects empty messages).
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
        """Input tokens of a Messages API request, exact when the API answers."""
        request, key, replaced, done = self._begin(messages, tools, self._sync_client())
        if done is not None:
            return done
        try:
            result = self._sync_client().messages.count_tokens(**request.body, timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - transport failures degrade to a flagged estimate
            return self._failed(e, messages, tools)
        return self._finish(key, result, request.guessed, replaced)

    async def acount(self, text: str) -> TokenCount:
        """Async twin of :meth:`count`."""
        if check_text(text) == "":
            return self._exact(0)
        return await self.acount_messages([{"role": "user", "content": text}])

    async def acount_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Async twin of :meth:`count_messages`: through ``async_client`` when one was given,
        else the sync ``client`` in a worker thread (same settings, same answer), else an
        ``anthropic.AsyncAnthropic`` made for the running event loop."""
        aclient = await self._aclient()
        client = aclient if aclient is not None else self._sync_client()
        request, key, replaced, done = self._begin(messages, tools, client)
        if done is not None:
            return done
        try:
            if aclient is not None:
                result = await aclient.messages.count_tokens(**request.body, timeout=self.timeout)
            else:  # the sync client, off the loop: what count_messages sends, sent the same way
                result = await asyncio.to_thread(
                    lambda: client.messages.count_tokens(**request.body, timeout=self.timeout)
                )
        except Exception as e:  # noqa: BLE001 - transport failures degrade to a flagged estimate
            return self._failed(e, messages, tools)
        return self._finish(key, result, request.guessed, replaced)

    def _begin(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None, client: Any
    ) -> tuple[AnthropicRequest, str, bool, TokenCount | None]:
        """Build the request; answer from the cache, or estimate when there is no client.

        Also says whether lone surrogates in the request were replaced by U+FFFD (the SDK
        sends UTF-8 and cannot encode them)."""
        request = self._request(messages, tools)
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
        self, e: Exception, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> TokenCount:
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
