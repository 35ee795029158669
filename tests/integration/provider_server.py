"""A loopback HTTP server speaking OpenAI's and Anthropic's wire formats, for integration tests.

The official SDK clients talk to it over real sockets. Each test scripts the usage
figures of the next replies with :meth:`ProviderServer.queue` (figures are given in
the provider's *own* semantics: Anthropic's ``input_tokens`` excludes cache reads and
writes), and reads what the SDK sent from :attr:`ProviderServer.requests`.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE, ``stream_options.include_usage``
honoured), ``POST /v1/responses`` (JSON), ``POST /v1/messages`` (JSON or SSE) and
``POST /v1/messages/count_tokens`` (the SDK's beta twin too: same path, with an ``anthropic-beta``
header, kept in the request's headers; a query string such as ``?beta=true`` is kept in
:attr:`RecordedRequest.query`). A reply with ``cut_short_after=n`` drops the connection after
``n`` content deltas, mid chunked body, as a dropped network would. With
:attr:`ProviderServer.count_tokens_rules` set, ``count_tokens`` refuses what the real API refuses
(see :func:`count_tokens_refusal`).
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "AnthropicReply",
    "ErrorReply",
    "OpenAIReply",
    "ProviderServer",
    "RecordedRequest",
    "count_tokens_refusal",
    "default_count_tokens",
]

CREATED = 1_735_689_600  # fixed timestamps keep replies deterministic
# The fields of a completed Responses API object that these tests do not vary.
# fmt: off
_RESPONSE_DEFAULTS: dict[str, Any] = {
    "object": "response", "created_at": CREATED, "status": "completed", "error": None,
    "incomplete_details": None, "parallel_tool_calls": True, "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
    "truncation": "disabled", "user": None, "metadata": {},
}
# fmt: on
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(kw_only=True)
class OpenAIReply:
    """The next OpenAI reply (Chat Completions or Responses), figures in OpenAI's semantics."""

    text: str = "Hello from the loopback server."
    prompt_tokens: int = 12
    """All input tokens, ``cached_tokens`` included (``input_tokens`` in the Responses API)."""
    completion_tokens: int = 7
    """All output tokens, ``reasoning_tokens`` included."""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cut_short_after: int | None = None
    """Streams only: drop the connection after this many content chunks."""
    delay: float = 0.0
    """Seconds the model "thinks" before answering (a client's read timeout cuts the call off
    after its request was received: the provider bills it)."""


@dataclass(kw_only=True)
class AnthropicReply:
    """The next Anthropic reply, figures in Anthropic's semantics."""

    text: str = "Hello from the loopback server."
    input_tokens: int = 12
    """Input tokens *excluding* cache reads and writes, as Anthropic reports them."""
    output_tokens: int = 7
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0
    start_output_tokens: int = 1
    """Streams: ``output_tokens`` reported in ``message_start``."""
    message_deltas: int = 1
    """Streams: how many ``message_delta`` events, each carrying the running total."""
    delta_repeats_input: bool = True
    """Streams: ``message_delta.usage`` repeats the (cumulative) input and cache figures."""
    cut_short_after: int | None = None
    """Streams only: drop the connection after this many ``content_block_delta`` events."""


@dataclass(kw_only=True)
class ErrorReply:
    """The next reply is an HTTP error in the endpoint's provider's error format."""

    status: int = 529
    message: str = "Overloaded"


Reply = OpenAIReply | AnthropicReply | ErrorReply


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: str = ""
    """The query string, without the ``?`` (``""`` when there is none)."""


def _words(value: object) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("text")) + _words(value.get("content"))
    return 0


def default_count_tokens(body: dict[str, Any]) -> int:
    """Deterministic stand-in for Anthropic's counter: words of all text, +3 per message, + tools."""
    messages = body.get("messages") or []
    tools = sum(len(json.dumps(t, sort_keys=True).split()) for t in body.get("tools") or [])
    return sum(3 + _words(m.get("content")) for m in messages) + _words(body.get("system")) + tools


def count_tokens_refusal(body: dict[str, Any], headers: dict[str, str]) -> str | None:
    """The message of the 400 the real ``count_tokens`` answers ``body`` with, or ``None``.

    The API's request rules: at least one message; every message has content, except an
    optional final assistant one; a text block holds non-whitespace text; and a beta built-in
    tool comes with its beta in the ``anthropic-beta`` header (langchain-anthropic's table of
    them, which the host's real call follows). Messages as the API words them.
    """
    messages = body.get("messages") or []
    if not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        content = m.get("content")
        if not content and not (i == len(messages) - 1 and m.get("role") == "assistant"):
            return (
                f"messages.{i}: all messages must have non-empty content"
                " except for the optional final assistant message"
            )
        for block in content if isinstance(content, list) else ():
            if block.get("type") == "text" and not str(block.get("text", "")).strip():
                return f"messages.{i}: text content blocks must contain non-whitespace text"
    from langchain_anthropic.chat_models import _TOOL_TYPE_TO_BETA

    sent = {b.strip() for k, v in headers.items() if k.lower() == "anthropic-beta" for b in v.split(",")}
    for i, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type")
        if kind in _TOOL_TYPE_TO_BETA and _TOOL_TYPE_TO_BETA[kind] not in sent:
            return (
                f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
                "'bash_20250124', 'custom', 'text_editor_20250124', 'web_search_20250305'"
            )
    return None


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


class ProviderServer:
    """The server, running in a background thread on ``127.0.0.1`` and a free port.

    Attributes:
        requests: Every request received, in order.
        count_tokens: Computes ``input_tokens`` of ``/v1/messages/count_tokens`` from the body.
        count_tokens_error: When set, ``count_tokens`` fails with this HTTP status (529: overloaded).
        count_tokens_error_message: The message of that failure (default: from the status).
        count_tokens_delay: Seconds ``count_tokens`` waits before answering (to test timeouts).
        count_tokens_rules: When set, ``count_tokens`` answers a body the real API refuses with
            its 400 (:func:`count_tokens_refusal`). Off by default (``reset`` turns it off).
        errors: Exceptions raised inside handlers (a test should end with none).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        self._ids = itertools.count(1)
        self._wake = threading.Event()
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        self.count_tokens: Callable[[dict[str, Any]], int] = default_count_tokens
        self.count_tokens_error: int | None = None
        self.count_tokens_error_message: str | None = None
        self.count_tokens_delay: float = 0.0
        self.count_tokens_rules: bool = False
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.provider = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="provider-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash, no ``/v1``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ProviderServer:
        """Start serving; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._wake.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def queue(self, *replies: Reply) -> None:
        """Script the next replies, consumed one per request (a default reply when none is queued)."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget queued replies, recorded requests and switches; wake any sleeping handler."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.errors.clear()
            self._wake.set()
            self._wake = threading.Event()
        self.count_tokens = default_count_tokens
        self.count_tokens_error = None
        self.count_tokens_error_message = None
        self.count_tokens_delay = 0.0
        self.count_tokens_rules = False

    def _next_reply(self, default: Reply) -> Reply:
        with self._lock:
            return self._replies.pop(0) if self._replies else default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):024d}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    provider: ProviderServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            self.provider.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing -------------------------------------------------------------------

    def _send_json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", "req_loopback")
        self.send_header("x-request-id", "req_loopback")
        self.end_headers()
        self.wfile.write(body)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, data: object, event: str | None = None) -> None:
        text = "" if event is None else f"event: {event}\n"
        text += f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        raw = text.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """End the exchange mid-body: the client sees an incomplete chunked read."""
        self.close_connection = True

    def _error(self, status: int, message: str, *, anthropic: bool) -> None:
        if anthropic:
            kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
            payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        self._send_json(status, payload)

    def do_POST(self) -> None:
        provider = self.server.provider
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path, _, query = self.path.partition("?")
        provider._record(RecordedRequest("POST", path, dict(self.headers.items()), body, query))
        routes: dict[str, Callable[[ProviderServer, dict[str, Any]], None]] = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
        }
        route = routes.get(path)
        if route is None:
            self._error(404, f"no route {path}", anthropic=path.startswith("/v1/messages"))
            return
        route(provider, body)

    def _reply(self, provider: ProviderServer, kind: type[Any], anthropic: bool) -> Any:
        reply = provider._next_reply(kind())
        if isinstance(reply, ErrorReply):
            self._error(reply.status, reply.message, anthropic=anthropic)
            return None
        if not isinstance(reply, kind):
            self._error(500, f"test bug: queued {type(reply).__name__} for {self.path}", anthropic=anthropic)
            return None
        return reply

    # --- OpenAI -----------------------------------------------------------------------

    def _chat(self, provider: ProviderServer, body: dict[str, Any]) -> None:
        reply: OpenAIReply | None = self._reply(provider, OpenAIReply, anthropic=False)
        if reply is None:
            return
        provider._sleep(reply.delay)
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        head = {
            "id": provider._new_id("chatcmpl-"),
            "created": CREATED,
            "model": body.get("model", "gpt-4o"),
            "service_tier": "default",
            "system_fingerprint": "fp_loopback",
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            self._send_json(200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage})
            return
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}

        self._start_sse()
        self._sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        for n, piece in enumerate(_pieces(reply.text)):
            if reply.cut_short_after is not None and n >= reply.cut_short_after:
                self._drop()
                return
            self._sse(chunk({"content": piece}))
        self._sse(chunk({}, "stop"))
        if with_usage:
            self._sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        self._sse("[DONE]")
        self._end_sse()

    def _responses(self, provider: ProviderServer, body: dict[str, Any]) -> None:
        reply: OpenAIReply | None = self._reply(provider, OpenAIReply, anthropic=False)
        if reply is None:
            return
        content = [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}]
        output = {
            "type": "message",
            "id": provider._new_id("msg_"),
            "status": "completed",
            "role": "assistant",
        }
        output["content"] = content
        usage = {
            "input_tokens": reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": reply.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        self._send_json(
            200,
            {
                **_RESPONSE_DEFAULTS,
                "id": provider._new_id("resp_"),
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": body.get("model", "gpt-4.1"),
                "output": [output],
                "usage": usage,
            },
        )

    # --- Anthropic --------------------------------------------------------------------

    def _messages(self, provider: ProviderServer, body: dict[str, Any]) -> None:
        reply: AnthropicReply | None = self._reply(provider, AnthropicReply, anthropic=True)
        if reply is None:
            return
        cache_write = reply.ephemeral_5m_input_tokens + reply.ephemeral_1h_input_tokens
        input_figures = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
        }
        split = {
            "ephemeral_5m_input_tokens": reply.ephemeral_5m_input_tokens,
            "ephemeral_1h_input_tokens": reply.ephemeral_1h_input_tokens,
        }
        message = {
            "id": provider._new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-sonnet-4-5"),
            "stop_sequence": None,
        }
        full = {**input_figures, "cache_creation": split, "service_tier": "standard"}
        if not body.get("stream"):
            usage = {**full, "output_tokens": reply.output_tokens}
            content = [{"type": "text", "text": reply.text}]
            self._send_json(200, {**message, "content": content, "stop_reason": "end_turn", "usage": usage})
            return
        start_usage = {**full, "output_tokens": reply.start_output_tokens}
        self._start_sse()
        start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        self._sse({"type": "message_start", "message": start}, "message_start")
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        self._sse(block, "content_block_start")
        self._sse({"type": "ping"}, "ping")
        for n, piece in enumerate(_pieces(reply.text)):
            if reply.cut_short_after is not None and n >= reply.cut_short_after:
                self._drop()
                return
            delta = {"type": "text_delta", "text": piece}
            self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        for k in range(1, reply.message_deltas + 1):
            running = reply.output_tokens * k // reply.message_deltas
            usage = {**(input_figures if reply.delta_repeats_input else {}), "output_tokens": running}
            stop = {"stop_reason": "end_turn", "stop_sequence": None}
            self._sse({"type": "message_delta", "delta": stop, "usage": usage}, "message_delta")
        self._sse({"type": "message_stop"}, "message_stop")
        self._end_sse()

    def _count_tokens(self, provider: ProviderServer, body: dict[str, Any]) -> None:
        provider._sleep(provider.count_tokens_delay)
        if provider.count_tokens_error is not None:
            status = provider.count_tokens_error
            default = "Overloaded" if status == 529 else f"HTTP {status}"
            self._error(status, provider.count_tokens_error_message or default, anthropic=True)
            return
        refused = (
            count_tokens_refusal(body, dict(self.headers.items())) if provider.count_tokens_rules else None
        )
        if refused is not None:
            self._error(400, refused, anthropic=True)
            return
        self._send_json(200, {"input_tokens": provider.count_tokens(body)})
