"""The window check routes with the output cap each tier will actually be asked for.

A tier chat model's own ``max_tokens`` (e.g. ``ChatOpenAI(model="gpt-4o-mini", max_tokens=8000)``)
is what it sends when neither the call nor the router sets one, so routing must assume it: a prompt
that fits gpt-4o-mini's 128,000-token window with the default 1,024 output tokens but not with
8,000 goes to the tier whose window holds it. The call's own cap (or ``RouterChatModel(max_tokens=)``,
sent to every tier) still comes first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from langchain_tokenbudget import RouterChatModel, RoutingMiddleware

# ~125,017 gpt-4o-mini tokens: + 1,024 output fits its 128,000 window, + 8,000 does not
PROMPT = "What is the main topic of this text? " + "word " * 125_000


class CappedModel(GenericFakeChatModel):
    """A fake tier chat model that names its model and, like ChatOpenAI, may set its own max_tokens."""

    model_name: str = "gpt-4o-mini"
    max_tokens: int | None = None
    messages: Any = Field(default=None)

    def model_post_init(self, context: Any) -> None:
        self.messages = iter([AIMessage(f"from {self.model_name}")] * 10)


def capped_tiers(small_cap: int | None, large_cap: int | None) -> dict[str, CappedModel]:
    return {
        "small": CappedModel(model_name="gpt-4o-mini", max_tokens=small_cap),
        "large": CappedModel(model_name="gpt-4.1", max_tokens=large_cap),
    }


def route_of(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["tokenbudget_route"]  # type: ignore[no-any-return]


def routed(router: RouterChatModel, how: str, **kwargs: Any) -> dict[str, Any]:
    if how == "invoke":
        return route_of(router.invoke(PROMPT, **kwargs))
    if how == "ainvoke":
        return route_of(asyncio.run(router.ainvoke(PROMPT, **kwargs)))
    return route_of(next(iter(router.stream(PROMPT, **kwargs))))


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_tier_models_own_max_tokens_is_assumed_by_the_window_check(how: str) -> None:
    router = RouterChatModel(capped_tiers(8000, 8000))
    route = routed(router, how)
    assert route["max_output_tokens"] == 8000
    assert route["input_tokens"] + 8000 > 128_000  # would overflow gpt-4o-mini's window
    assert (route["tier"], route["model"], route["answered_by"]) == ("large", "gpt-4.1", "gpt-4.1")


def test_each_tier_is_checked_with_the_cap_its_own_chat_model_sets() -> None:
    # small sets 8,000 itself: the 125k-token prompt does not fit it; large sets nothing and is
    # asked for the router's 1,024
    route = routed(RouterChatModel(capped_tiers(8000, None)), "invoke")
    assert (route["tier"], route["max_output_tokens"]) == ("large", 1024)


def test_a_larger_tiers_own_cap_does_not_escalate_a_prompt_the_smaller_tier_holds() -> None:
    # large sets 30,000 itself; small nothing: the 125k-token prompt + 1,024 fits gpt-4o-mini
    route = routed(RouterChatModel(capped_tiers(None, 30_000)), "invoke")
    assert (route["tier"], route["max_output_tokens"]) == ("small", 1024)


@pytest.mark.parametrize(
    ("router_cap", "call_cap"), [(None, 100), (512, None), (512, 100)], ids=["call", "router", "both"]
)
def test_the_call_or_routers_own_cap_sent_to_the_tier_comes_first(
    router_cap: int | None, call_cap: int | None
) -> None:
    t = capped_tiers(8000, 8000)
    # unset, the tier models' own 8,000 is assumed: the prompt does not fit gpt-4o-mini
    assert (routed(RouterChatModel(t), "invoke")["tier"]) == "large"
    router = RouterChatModel(t, max_tokens=router_cap)
    kwargs = {} if call_cap is None else {"max_tokens": call_cap}
    route = routed(router, "invoke", **kwargs)
    sent = call_cap if call_cap is not None else router_cap
    assert (route["tier"], route["max_output_tokens"]) == ("small", sent)


def test_routing_middleware_assumes_the_tier_models_own_max_tokens() -> None:
    t = capped_tiers(8000, 8000)
    agent = create_agent(t["small"], middleware=[RoutingMiddleware(t)])
    reply = agent.invoke({"messages": [("user", PROMPT)]})["messages"][-1]
    route = route_of(reply)
    assert (route["tier"], route["model"], route["max_output_tokens"]) == ("large", "gpt-4.1", 8000)
    assert reply.content == "from gpt-4.1"


def test_a_larger_tiers_own_cap_never_makes_a_smaller_tier_unable_to_answer() -> None:
    # The large tier's chat model sets 30,000 output tokens (as ChatAnthropic always sets its
    # max_tokens): more than gpt-4o-mini's 16,384 output limit. That is the large model's own
    # setting, not the call's: a short, simple prompt still goes to the small tier.
    router = RouterChatModel(capped_tiers(None, 30_000))
    route = route_of(router.invoke("hi"))
    assert route["tier"] == "small"
    assert route["model"] == "gpt-4o-mini"
    # a cap the call names is the call's, asked of whichever tier answers: strict
    strict = route_of(router.invoke("hi", max_tokens=30_000))
    assert strict["tier"] == "large"
