"""The scope of a route: ``using_route`` marks the routed call, ``without_route`` the calls a routed
call makes of its own, and ``routed_call`` tells one from the other by the model called."""

from __future__ import annotations

import asyncio

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.routing import (
    RouteDecision,
    TierRouter,
    current_route,
    routed_call,
    routed_model,
    using_route,
    without_route,
)


def decision() -> RouteDecision:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"})
    return router.route([{"role": "user", "content": "Hello"}], force_tier="large")


def test_without_route_clears_the_route_for_its_block_only() -> None:
    d = decision()
    with using_route(d):
        assert current_route() is d
        with without_route():
            assert (current_route(), routed_model(), routed_call("gpt-4o")) == (None, None, None)
        assert current_route() is d
        assert routed_model() == "gpt-4o"
    with without_route():  # outside any route: nothing to clear
        assert current_route() is None


def test_without_route_is_restored_after_an_error_and_in_tasks() -> None:
    d = decision()

    async def inner() -> object:
        with without_route():
            await asyncio.sleep(0)
            return current_route()

    with using_route(d):
        try:
            with without_route():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert current_route() is d
        assert asyncio.run(inner()) is None
        assert current_route() is d


def test_routed_call_is_the_call_to_the_route_model() -> None:
    d = decision()
    assert routed_call("gpt-4o") is None  # no route in force
    with using_route(d):
        assert routed_call("gpt-4o") == (d, "gpt-4o")
        assert routed_call("gpt-4o-2024-08-06") == (d, "gpt-4o")  # the same model, a dated name
        assert routed_call("openai/gpt-4o") == (d, "gpt-4o")
        assert routed_call(None) == (d, "gpt-4o")  # a chat model naming no model: the router names it
        assert routed_call("gpt-4o-mini") is None  # another model called inside the route
        assert routed_call("my-private-model") is None  # unknown to the registry: only itself
    with using_route(d, model="gpt-4.1"):  # a fallback being tried
        assert routed_call("gpt-4.1") == (d, "gpt-4.1")
        assert routed_call("gpt-4o") is None


def test_routed_call_matches_the_called_chat_models_own_names() -> None:
    d = decision()
    with using_route(d, names=("acme-large-deploy",)):  # an Azure deployment priced as gpt-4o
        assert routed_call("acme-large-deploy") == (d, "gpt-4o")
        assert routed_call("gpt-4o") == (d, "gpt-4o")
        assert routed_call("gpt-4o-mini") is None
    with using_route(d, model="gpt-4o", names=("gpt-4o-2024-08-06",)):  # resolved forms of an own name
        assert routed_call("openai/gpt-4o-2024-08-06") == (d, "gpt-4o")
    with pytest.raises(InvalidInputError, match="names"), using_route(d, names="acme"):
        pass
