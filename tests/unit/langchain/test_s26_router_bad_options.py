"""Bad ``models=`` / ``fallbacks=`` for the LangChain routers: named InvalidInputErrors with a fix
that works."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from pydantic import Field

from langchain_tokenbudget import RouterChatModel, RoutingMiddleware
from tokenbudget_core.errors import InvalidInputError


class Named(GenericFakeChatModel):
    """A fake chat model that names its model (``model_name``), as provider chat models do."""

    model_name: str = "gpt-4o"
    messages: Any = Field(default=None)
    fail: bool = False

    def model_post_init(self, context: Any) -> None:
        self.messages = iter([AIMessage(f"from {self.model_name}")] * 10)

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            error = Exception("rate limited")
            error.status_code = 429  # type: ignore[attr-defined]
            raise error
        return super()._generate(*args, **kwargs)


def tiers() -> dict[str, Named]:
    return {"small": Named(model_name="gpt-4o-mini"), "large": Named(model_name="gpt-4o")}


@pytest.mark.parametrize(
    ("option", "value", "example"),
    [
        ("fallbacks", [Named(model_name="gpt-4.1")], "fallbacks={'large': ["),
        ("models", ["gpt-4o"], "models={'small': 'gpt-4o-mini'"),
        ("models", "gpt-4o", "models={'small': 'gpt-4o-mini'"),
    ],
)
def test_routing_middleware_names_an_option_that_is_not_a_mapping_by_tier(
    option: str, value: object, example: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        RoutingMiddleware(tiers(), **{option: value})
    assert caught.value.field == option
    assert "mapping by tier" in caught.value.problem
    assert caught.value.fix is not None
    assert example in caught.value.fix


@pytest.mark.parametrize("adapter", [RouterChatModel, RoutingMiddleware])
def test_an_unnamed_fallback_is_told_a_fix_that_works(adapter: Any) -> None:
    unnamed = GenericFakeChatModel(messages=iter([AIMessage("from the fallback")]))
    with pytest.raises(InvalidInputError) as caught:
        adapter(tiers(), fallbacks={"large": [unnamed]})
    error = caught.value
    assert error.field == "fallbacks['large'][0]"
    assert error.fix is not None
    assert "models={'<tier>'" not in error.fix  # models= names tiers only: no fix for a fallback
    assert "model_name" in error.fix
    assert "models= names tiers only" in error.fix
    # following the fix (a class with a model_name field) works: the fallback answers a 429
    t = tiers()
    t["small"].fail = True
    router = RouterChatModel(t, fallbacks={"small": [Named(model_name="gpt-4.1")]})
    reply = router.invoke("What is the capital of France?")
    route = reply.response_metadata["tokenbudget_route"]
    assert (route["tier"], route["answered_by"], reply.content) == ("small", "gpt-4.1", "from gpt-4.1")


@pytest.mark.parametrize(
    "make", [RouterChatModel, RoutingMiddleware], ids=["RouterChatModel", "RoutingMiddleware"]
)
def test_a_bare_fallback_model_is_refused_with_the_list_it_should_be(make: Any) -> None:
    with pytest.raises(
        InvalidInputError, match=r"fallbacks\['large'\].*list of chat models.*wrap it in a list"
    ):
        make(tiers(), fallbacks={"large": Named(model_name="gpt-4.1")})
