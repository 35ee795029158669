"""Routers tell their chat models apart by place, not by model name.

A fallback that names the same model as its tier (the same model on another endpoint or key, the
commonest fallback for a 429) must be called when the tier's endpoint fails, and two tiers of one
model with different settings must each be called: the adapters used to look chat models up by
model name, so the failing primary was retried and the backup never ran.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from router_fakes import ProviderError, TierModel

from langchain_tokenbudget import RouterChatModel, RoutingMiddleware
from tokenbudget_core import InvalidInputError
from tokenbudget_core.routing import TierRouter

EASY = "What is the capital of France?"


def primary_and_backup() -> tuple[TierModel, TierModel, dict[str, TierModel]]:
    primary = TierModel(model_name="gpt-4o-mini", fail_with=ProviderError(429))
    backup = TierModel(model_name="gpt-4o-mini", answers=["from the backup endpoint"])
    return primary, backup, {"small": primary, "large": TierModel(model_name="gpt-4o")}


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
def test_a_fallback_of_the_same_model_is_called_after_the_tier_fails(how: str) -> None:
    primary, backup, tiers = primary_and_backup()
    router = RouterChatModel(tiers, fallbacks={"small": [backup]})
    if how == "invoke":
        text = router.invoke(EASY).content
    elif how == "ainvoke":
        text = asyncio.run(router.ainvoke(EASY)).content
    elif how == "stream":
        text = "".join(str(c.content) for c in router.stream(EASY))
    else:

        async def chunks() -> str:
            return "".join([str(c.content) async for c in router.astream(EASY)])

        text = asyncio.run(chunks())
    assert text == "from the backup endpoint"
    assert len(primary.received) == 1  # tried once, then the backup (a stream records each read)
    assert backup.received


def test_a_same_model_fallback_gets_the_tools_bound_to_the_router() -> None:
    _, backup, tiers = primary_and_backup()
    router = RouterChatModel(tiers, fallbacks={"small": [backup]})

    def get_time(city: str) -> str:
        """The time in a city."""
        return "noon"

    reply = router.bind_tools([get_time]).invoke(EASY)
    assert reply.content == "from the backup endpoint"
    assert [t[0]["function"]["name"] for t in backup.bound_tools] == ["get_time"]


def test_two_tiers_of_one_model_with_different_settings_are_each_called() -> None:
    # e.g. one reasoning model at two effort levels: the same pricing name, two chat models
    quick = TierModel(model_name="gpt-4o", answers=["quick"])
    careful = TierModel(model_name="gpt-4o", answers=["careful"])
    router = RouterChatModel({"small": quick, "large": careful})
    assert router.invoke(EASY, force_tier="large").content == "careful"
    assert router.invoke(EASY, force_tier="small").content == "quick"
    assert (len(quick.received), len(careful.received)) == (1, 1)


def test_the_routing_middleware_calls_a_same_model_fallback() -> None:
    primary, backup, tiers = primary_and_backup()
    agent = create_agent(primary, middleware=[RoutingMiddleware(tiers, fallbacks={"small": [backup]})])
    last = agent.invoke({"messages": [HumanMessage(EASY)]})["messages"][-1]
    assert last.content == "from the backup endpoint"
    assert (len(primary.received), len(backup.received)) == (1, 1)


def test_the_core_picker_gives_each_attempt_its_object_in_order() -> None:
    router = TierRouter(
        {"small": "gpt-4o-mini", "large": "gpt-4o"}, fallbacks={"small": ["gpt-4o-mini", "gpt-4.1-nano"]}
    )
    decision = router.route(EASY, force_tier="small")
    pick = router.picker(decision, {"small": "tier", "large": "big"}, {"small": ["same model", "nano"]})
    attempts: list[tuple[str, str]] = []

    def attempt(model: str) -> str:
        attempts.append((model, pick(model)))
        if len(attempts) < 3:
            raise ProviderError(429)
        return model

    assert router.call(decision, attempt) == "gpt-4.1-nano"
    assert attempts == [("gpt-4o-mini", "tier"), ("gpt-4o-mini", "same model"), ("gpt-4.1-nano", "nano")]
    with pytest.raises(InvalidInputError, match="tiers"):
        router.picker(decision, {"small": "tier"}, {"small": ["only one"]})
