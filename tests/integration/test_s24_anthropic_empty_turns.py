"""Claude's exact count of a conversation holding an empty turn (an ``AIMessage("")`` mid-way: a
model that answered nothing, a turn whose tool calls were stripped).

The Messages API refuses empty content in any message but the final assistant one (a 400, which
the counter raises as a ``TokenCountError``), and langchain-anthropic drops such a turn from the
real request. The count request must drop it too. A small loopback server of this file speaks
``count_tokens`` with that rule, for the official ``anthropic`` client pointed at it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from langchain_anthropic.chat_models import _format_messages
from langchain_core.messages import AIMessage, HumanMessage
from provider_server import default_count_tokens

from langchain_tokenbudget import to_core_messages
from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.integration


def refusal(body: dict[str, Any]) -> str | None:
    """The API's rule: every message has content, except an optional final assistant message."""
    messages = body.get("messages") or []
    for i, m in enumerate(messages):
        final_assistant = i == len(messages) - 1 and m.get("role") == "assistant"
        if not m.get("content") and not final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content"
                " except for the optional final assistant message"
            )
    return None


class CountTokensHandler(BaseHTTPRequestHandler):
    """``POST /v1/messages/count_tokens`` only; records each body in ``server.bodies``."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        message = refusal(body)
        if message is not None:
            status, payload = (
                400,
                {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
            )
        else:
            status, payload = 200, {"input_tokens": default_count_tokens(body)}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def strict_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CountTokensHandler)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def client(strict_server: ThreadingHTTPServer) -> Iterator[anthropic.Anthropic]:
    host, port = strict_server.server_address[:2]
    with anthropic.Anthropic(base_url=f"http://{host!s}:{port}", api_key="test", max_retries=0) as c:
        yield c


def test_the_rule_is_the_apis(client: anthropic.Anthropic) -> None:
    """The local server refuses what the API refuses (so the tests below test something)."""
    with pytest.raises(anthropic.BadRequestError, match="non-empty content"):
        client.messages.count_tokens(
            model="claude-sonnet-4-5",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": []},
                {"role": "user", "content": "again"},
            ],
        )


def test_an_empty_assistant_turn_mid_conversation_is_counted_as_the_real_request_sends_it(
    strict_server: ThreadingHTTPServer, client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=client)
    history = [HumanMessage("hi"), AIMessage(""), HumanMessage("again")]
    n = counter.count_messages(to_core_messages(history))
    assert n.exact
    sent = strict_server.bodies[-1]["messages"]  # type: ignore[attr-defined]
    assert sent == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}
    ]
    real = _format_messages(history, model="claude-sonnet-4-5")[1]
    assert real == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
    ]  # one turn to the API


def test_a_message_of_empty_text_mid_conversation_is_dropped(
    strict_server: ThreadingHTTPServer, client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=client)
    n = counter.count_messages(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": ""}]},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ]
    )
    assert n.exact
    sent = strict_server.bodies[-1]["messages"]  # type: ignore[attr-defined]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


def test_an_empty_final_assistant_turn_stays(
    strict_server: ThreadingHTTPServer, client: anthropic.Anthropic
) -> None:
    counter = TokenCounter.for_model("claude-sonnet-4-5", anthropic_client=client)
    n = counter.count_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}])
    assert n.exact
    sent = strict_server.bodies[-1]["messages"]  # type: ignore[attr-defined]
    assert sent == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": []},
    ]
