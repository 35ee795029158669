"""RoutingMiddleware names a misspelt or positional option (InvalidInputError with the closest
option / the keyword to pass it by), never a bare TypeError; a bad ``models=`` value is blamed on
``models['<tier>']``, not on the tier's chat model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from langchain_tokenbudget import RoutingMiddleware
from tokenbudget_core.errors import InvalidInputError


def _tiers() -> dict[str, Any]:
    return {
        "small": GenericFakeChatModel(messages=iter(["Paris."])),
        "large": GenericFakeChatModel(messages=iter(["An essay."])),
    }


MODELS = {"small": "gpt-4o-mini", "large": "gpt-4o"}


def test_misspelt_option_is_named_with_the_closest_one() -> None:
    with pytest.raises(InvalidInputError) as e:
        RoutingMiddleware(_tiers(), models=MODELS, fallback={"small": []})  # type: ignore[call-arg]
    assert e.value.field == "fallback"
    assert "fallbacks" in str(e.value)


def test_option_by_position_is_named_with_its_keyword() -> None:
    with pytest.raises(InvalidInputError) as e:
        RoutingMiddleware(_tiers(), MODELS)  # type: ignore[misc]
    assert e.value.field == "models"
    assert "models=" in str(e.value)


def test_bad_models_value_is_blamed_on_models() -> None:
    with pytest.raises(InvalidInputError) as e:
        RoutingMiddleware(_tiers(), models={"small": 5, "large": "gpt-4o"})  # type: ignore[dict-item]
    assert e.value.field == "models['small']"


def test_keyword_options_still_route_an_agent() -> None:
    tiers = _tiers()
    agent = create_agent(
        tiers["small"], middleware=[RoutingMiddleware(tiers, models=MODELS, max_output_tokens=64)]
    )
    reply = agent.invoke({"messages": [("user", "Capital of France?")]})["messages"][-1]
    assert reply.response_metadata["tokenbudget_route"]["model"] == "gpt-4o-mini"
