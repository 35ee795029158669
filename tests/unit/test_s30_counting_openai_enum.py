"""An OpenAI tool property's ``enum`` given as a tuple is counted as the list the SDK sends.

``_tools_tokens`` counted an ``enum`` only when it was a ``list``: a tuple (which the OpenAI SDK
serialises as a JSON array, sent and billed) was left out of the count, still ``exact=True``. Any
other ``enum`` (a string, a set, a dict) is no JSON Schema enum: the API refuses it, and the count
refuses it too, naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError

COUNTRIES = ("Afghanistan", "Albania", "Algeria", "Andorra", "Angola", "Argentina", "Armenia", "Australia")
HI = [{"role": "user", "content": "Where?"}]


def ship(enum: Any) -> list[dict[str, Any]]:
    country: dict[str, Any] = {"type": "string", "description": "Destination"}
    if enum is not None:
        country["enum"] = enum
    schema = {"type": "object", "properties": {"country": country}, "required": ["country"]}
    return [{"type": "function", "function": {"name": "ship", "description": "Ship", "parameters": schema}}]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "gpt-4.1-mini"])
def test_a_tuple_enum_counts_as_the_list(model: str) -> None:
    counter = TokenCounter.for_model(model)
    as_list = counter.count_messages(HI, ship(list(COUNTRIES)))
    as_tuple = counter.count_messages(HI, ship(COUNTRIES))
    without = counter.count_messages(HI, ship(None))
    assert int(as_tuple) == int(as_list) > int(without)
    assert as_tuple.exact
    assert json.loads(json.dumps(ship(COUNTRIES))) == ship(list(COUNTRIES))  # the same wire JSON


def test_an_enum_of_none_is_no_enum() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    tools = ship(None)
    tools[0]["function"]["parameters"]["properties"]["country"]["enum"] = None
    assert int(counter.count_messages(HI, tools)) == int(counter.count_messages(HI, ship(None)))


@pytest.mark.parametrize("enum", ["celsius", {"a": 1}, {"x", "y"}, 3])
def test_any_other_enum_is_refused_naming_the_field(enum: Any) -> None:
    counter = TokenCounter.for_model("gpt-4o")
    with pytest.raises(InvalidInputError) as info:
        counter.count_messages(HI, ship(enum))
    assert info.value.field == "tools[0].function.parameters.properties.country.enum"
    assert info.value.fix is not None
    assert "list" in info.value.fix
