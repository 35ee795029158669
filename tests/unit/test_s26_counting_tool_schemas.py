"""Tool schemas holding values that are not JSON: a named error, or the JSON the SDKs send."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from tokenbudget_core import ConversationWindow, TokenCounter, fit_messages
from tokenbudget_core.errors import InvalidInputError

HI = [{"role": "user", "content": "hi"}]


class Unit(enum.Enum):
    C = "celsius"


def tool_with(spec: dict[Any, Any], wrapped: bool = True) -> dict[str, Any]:
    fn = {
        "name": "weather",
        "description": "Get weather.",
        "parameters": {"type": "object", "properties": {"unit": spec}},
    }
    return {"type": "function", "function": fn} if wrapped else fn


@pytest.mark.parametrize(
    "spec", [{"type": "string", "default": Unit.C}, {"type": "string", "examples": {"a", "b"}}]
)
def test_a_value_that_is_not_json_is_a_named_error(spec: dict[str, Any]) -> None:
    tool = tool_with(spec)
    for call in (
        lambda: fit_messages(HI, 1000, "gpt-4o", tools=[tool]),
        lambda: ConversationWindow("gpt-4o", max_tokens=1000, tools=[tool]),
        lambda: TokenCounter.for_model("gpt-4").count_messages(HI, [tool]),
    ):
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.field == "tools[0].function.parameters.properties.unit"
        assert "tool schemas must be JSON" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        TokenCounter.for_model("gpt-4o").count_messages(HI, [tool_with(spec, wrapped=False)])
    assert info.value.field == "tools[0].parameters.properties.unit"


def test_mixed_key_types_count_as_the_json_the_sdks_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    # json.dumps (what the OpenAI and Anthropic SDKs use) sends the int key as "1", in order.
    mixed = {"type": "object", "properties": {"x": {"type": "string"}, 1: {"type": "string"}}}
    as_sent = {"type": "object", "properties": {"x": {"type": "string"}, "1": {"type": "string"}}}
    counter = TokenCounter.for_model("gpt-4o")
    assert counter.count_messages(HI, [tool_with(mixed)]) == counter.count_messages(HI, [tool_with(as_sent)])
    assert fit_messages(HI, 1000, "gpt-4o", tools=[tool_with(mixed)]) == HI
    ConversationWindow("gpt-4o", max_tokens=1000, tools=[tool_with(mixed)])
    for model in ("gemini-2.5-pro", "claude-sonnet-4-5"):  # the estimating counter (offline)
        estimator = TokenCounter.for_model(model)
        n = estimator.count_messages(HI, [tool_with(mixed)])
        assert not n.exact
        assert int(n) == int(estimator.count_messages(HI, [tool_with(as_sent)]))


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("gpt-4o", "tools[0].function.parameters.properties.unit"),
        ("gemini-2.5-pro", "tools[0]"),
        ("claude-sonnet-4-5", "tools"),
    ],
)
def test_a_key_json_cannot_write_is_a_named_error(
    model: str, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    tool = tool_with({"type": "object", "properties": {("a", "b"): {"type": "string"}}})
    with pytest.raises(InvalidInputError) as info:
        TokenCounter.for_model(model).count_messages(HI, [tool])
    assert info.value.field == field
    assert "tool schemas must be JSON" in str(info.value)
