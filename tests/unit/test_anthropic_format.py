"""Core messages to the Messages API shape: tool calls as langchain-anthropic sends them."""

from __future__ import annotations

import doctest
import hashlib
from typing import Any

import pytest

from tokenbudget_core import anthropic_format
from tokenbudget_core.anthropic_format import build_anthropic_request, to_anthropic_request


def conversation(arguments: str, call_id: str = "toolu_1") -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "Error: bad arguments"},
    ]


def tool_use(body: dict[str, Any]) -> dict[str, Any]:
    [block] = body["messages"][1]["content"]
    assert block["type"] == "tool_use"
    return dict(block)


@pytest.mark.parametrize(
    ("arguments", "sent", "guessed"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}, False),
        ("", {}, False),
        ('{"city": "Os', {}, True),  # cut off by max_tokens
        ("null", {}, True),  # JSON, not an object: langchain-anthropic sends {} too
        ('["Oslo"]', {}, True),
        ("[" * 100_000, {}, True),  # too deep for json: still a malformed call, not a crash
    ],
)
def test_arguments_that_are_not_a_json_object_go_as_an_empty_input_and_are_named(
    arguments: str, sent: dict[str, Any], guessed: bool
) -> None:
    request = build_anthropic_request(conversation(arguments))
    assert tool_use(request.body)["input"] == sent
    assert request.guessed == (("messages[1].tool_calls[0].arguments",) if guessed else ())
    assert to_anthropic_request(conversation(arguments)) == request.body


def test_call_ids_the_api_refuses_are_rewritten_in_the_call_and_its_result() -> None:
    call_id = "functions.get_weather:0"  # as Kimi and others mint them
    body = to_anthropic_request(conversation('{"city": "Oslo"}', call_id))
    rewritten = "toolu_" + hashlib.sha256(call_id.encode()).hexdigest()[:24]  # langchain-anthropic's rule
    assert tool_use(body)["id"] == rewritten
    assert body["messages"][2]["content"][0]["tool_use_id"] == rewritten
    assert tool_use(to_anthropic_request(conversation("{}", "call_Ab-9_z")))["id"] == "call_Ab-9_z"


def test_doctests() -> None:
    assert doctest.testmod(anthropic_format, raise_on_error=True).attempted > 0
