"""Bad messages and tools are named errors: the field, the problem and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import TokenCounter
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.messages import Message, to_messages

COUNTER = TokenCounter.for_model("gpt-4o")


@pytest.mark.parametrize("role", [["user"], {"r": 1}, 5])
def test_a_role_that_is_not_a_string_is_named(role: object) -> None:
    with pytest.raises(InvalidMessageError) as info:
        COUNTER.count_messages([{"role": role, "content": "x"}])
    assert info.value.field == "messages[0].role"
    with pytest.raises(InvalidMessageError) as info:
        Message(role=role, content="x")  # type: ignore[arg-type]
    assert info.value.field == "message.role"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": "x", "name": 5}, "messages[1].name"),
        ({"role": "tool", "content": "x", "tool_call_id": 5}, "messages[1].tool_call_id"),
        ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
        ({"role": "robot", "content": "x"}, "messages[1].role"),
    ],
)
def test_field_names_in_errors_are_the_caller_s_paths(message: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        to_messages([{"role": "user", "content": "ok"}, message])
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


@pytest.mark.parametrize(
    ("function", "field"),
    [
        ({"name": "f", "parameters": "oops"}, "tools[0].function.parameters"),
        (
            {"name": "f", "parameters": {"type": "object", "properties": ["a"]}},
            "tools[0].function.parameters.properties",
        ),
    ],
)
def test_a_tool_schema_that_is_not_an_object_is_refused(function: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        COUNTER.count_messages([], tools=[{"type": "function", "function": function}])
    assert info.value.field == field
    with pytest.raises(InvalidInputError) as info:
        COUNTER.count_messages([], tools=[{"name": "f", "input_schema": "oops"}])
    assert info.value.field == "tools[0].input_schema"
    fine = {"type": "function", "function": {"name": "f", "parameters": None}}
    assert COUNTER.count_messages([], tools=[fine]) > 0
