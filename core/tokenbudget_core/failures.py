"""Whether a failed model call may still have been billed: :func:`may_have_been_billed`.

A call that fails before its request reaches the provider costs nothing, and its reservation is
released. A call cut off *after* the request went out (the caller cancelled it or gave up
waiting: ``asyncio.wait_for``, a task cancelled by a server's request timeout, the SDK's read
timeout, the connection dropped mid-answer) is processed and billed by the provider all the
same: the budget adapters charge it the ledger's flagged estimate (the counted input) rather
than nothing, so budgets never under-count exactly the slow, expensive calls. The rule is one
place, read by every adapter.

The error's chain (``__cause__``, ``__context__``) is read by type name, so that no HTTP client
needs importing: httpx's (which the OpenAI and Anthropic SDKs wrap in their
``APITimeoutError`` / ``APIConnectionError``) and aiohttp's / requests' read timeouts and
dropped connections mean the request was sent; a refused or timed-out *connection*, or a pool
timeout, means it was not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

__all__ = ["may_have_been_billed"]

_SENT = frozenset(
    {
        "ReadTimeout",  # httpx, requests: the request went out, no answer in time
        "ReadError",  # httpx: the connection broke while reading the answer
        "RemoteProtocolError",  # httpx: the server dropped the connection mid-answer
        "ServerDisconnectedError",  # aiohttp
        "ServerTimeoutError",  # aiohttp: a read timeout
        "ChunkedEncodingError",  # requests: the answer was cut off
        "IncompleteRead",  # http.client
    }
)
_NOT_SENT = frozenset(
    {
        "ConnectTimeout",  # httpx, requests: no connection, no request
        "ConnectError",  # httpx
        "PoolTimeout",  # httpx: no connection free in the pool
        "ClientConnectorError",  # aiohttp
        "WriteTimeout",  # httpx: the request was never sent whole (no provider bills half a request)
        "WriteError",  # httpx
        "ConnectionRefusedError",
    }
)
_CUT_OFF = (asyncio.CancelledError, TimeoutError, concurrent.futures.TimeoutError, KeyboardInterrupt)
_CUT_OFF_NAMES = frozenset({"APITimeoutError"})  # the OpenAI / Anthropic SDKs', when no cause tells more


def may_have_been_billed(error: BaseException | None) -> bool:
    """Whether a model call that ended with ``error`` may have been billed by the provider.

    ``True`` when the call was cut off after its request may have gone out: cancelled
    (``asyncio.CancelledError``, ``KeyboardInterrupt``), timed out waiting for the answer
    (``TimeoutError``; an SDK's read timeout), or its connection dropped mid-answer. ``False``
    for any other error (a refused connection, an HTTP error status, a validation error: the
    provider bills none of them) and for ``None``. The first error in the chain
    (``__cause__``, then ``__context__``) that tells either way decides; a plain timeout or
    cancellation wrapping a connection error is read as that connection error.
    """
    seen: set[int] = set()
    cut_off = False
    current = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & _NOT_SENT and not names & _SENT:
            return False
        if names & _SENT:
            return True
        cut_off = cut_off or isinstance(current, _CUT_OFF) or bool(names & _CUT_OFF_NAMES)
        current = current.__cause__ or current.__context__
    return cut_off
