"""RouterChatModel and RoutingMiddleware in real LangChain pipelines, over fake tier models."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from lc_fakes import get_weather
from pydantic import BaseModel
from router_fakes import ProviderError, TierModel, tiers
from test_lc_budget_edge_cases import PDF_BLOCK, pdf_question

from langchain_tokenbudget import BudgetCallbackHandler, RouterChatModel, RoutingMiddleware
from tokenbudget_core import (
    BudgetExceededError,
    ContextOverflowError,
    InvalidInputError,
    Ledger,
    UnknownModelError,
    Usage,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import PDF_PAGE_TOKENS

EASY = "What is the capital of France?"
HARD = (
    "Analyze the trade-offs, then design and implement a distributed rate limiter step by step: "
    "compare token bucket and sliding window, debug the race conditions, and explain why. " * 3
)
ROUTE = "tokenbudget_route"


def route_of(message: Any) -> dict[str, Any]:
    return message.response_metadata[ROUTE]  # type: ignore[no-any-return]


def router(**kwargs: Any) -> tuple[RouterChatModel, dict[str, TierModel]]:
    models = tiers()
    return RouterChatModel(models, **kwargs), models


def test_easy_prompts_go_cheap_hard_ones_premium_and_the_reply_says_why() -> None:
    model, t = router()
    easy = model.invoke(EASY)
    hard = model.invoke(HARD)
    assert easy.content == "small answer"
    assert route_of(easy)["tier"] == "small"
    assert route_of(easy)["answered_by"] == "gpt-4o-mini"
    assert route_of(easy)["premium_model"] == "gpt-4o"
    assert float(route_of(easy)["saved_usd"]) > 0  # the counterfactual: the same call on gpt-4o
    assert route_of(hard)["tier"] != "small"
    assert route_of(hard)["reason"].startswith("classifier")
    assert len(t["small"].received) == 1  # each call reaches exactly one tier model


def test_force_tier_through_the_call_the_config_or_a_tier_model_name() -> None:
    model, t = router()
    assert route_of(model.invoke(EASY, force_tier="large"))["tier"] == "large"
    configured = model.invoke(EASY, config={"configurable": {"force_tier": "medium"}})
    assert route_of(configured)["tier"] == "medium"
    assert route_of(configured)["reason"] == "forced: tier medium"
    assert route_of(model.invoke(EASY, model="gpt-4o"))["tier"] == "large"
    assert [len(t[k].received) for k in ("small", "medium", "large")] == [0, 1, 2]


def test_an_lcel_chain_with_a_prompt_routes_on_the_rendered_messages() -> None:
    model, _ = router()
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | model
    reply = chain.invoke({"question": EASY})
    assert route_of(reply)["tier"] == "small"
    assert reply.content == "small answer"


def test_batch_routes_each_input_on_its_own() -> None:
    model, _ = router()
    replies = model.batch([EASY, HARD, EASY])
    assert [route_of(r)["tier"] == "small" for r in replies] == [True, False, True]


async def test_async_invoke_and_batch() -> None:
    model, _ = router()
    assert route_of(await model.ainvoke(EASY))["tier"] == "small"
    replies = await model.abatch([EASY, EASY], config={"configurable": {"force_tier": "large"}})
    assert {route_of(r)["tier"] for r in replies} == {"large"}


def test_stream_passes_the_tier_models_chunks_through_the_first_carrying_the_route() -> None:
    model, t = router()
    t["small"].answers = ["one two three"]
    chunks = list(model.stream(EASY))
    assert "".join(str(c.content) for c in chunks) == "one two three"
    assert len(chunks) > 1
    assert route_of(chunks[0])["tier"] == "small"
    assert all(ROUTE not in c.response_metadata for c in chunks[1:])
    joined = chunks[0]
    for c in chunks[1:]:
        joined += c
    assert route_of(joined)["model"] == "gpt-4o-mini"


async def test_astream() -> None:
    model, t = router()
    t["large"].answers = ["async streamed reply"]
    chunks = [c async for c in model.astream(EASY, force_tier="large")]
    assert "".join(str(c.content) for c in chunks) == "async streamed reply"
    assert route_of(chunks[0])["tier"] == "large"


def test_streaming_true_makes_invoke_stream_from_the_tier() -> None:
    model, t = router(streaming=True)
    t["small"].answers = ["joined from chunks"]
    reply = model.invoke(EASY)
    assert isinstance(reply, AIMessage)
    assert reply.content == "joined from chunks"
    assert route_of(reply)["tier"] == "small"


def test_tools_bound_on_the_router_are_bound_on_every_tier() -> None:
    model, t = router()
    t["large"].answers = [
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}])
    ]
    bound = model.bind_tools([get_weather], tool_choice="any")
    assert all(m.bound_tools[-1][0]["function"]["name"] == "get_weather" for m in t.values())
    assert all(m.tool_choices[-1] == "any" for m in t.values())
    reply = bound.invoke("Weather in Oslo?", force_tier="large")
    assert reply.tool_calls[0]["args"] == {"city": "Oslo"}
    # the tools are counted as input when routing
    assert route_of(reply)["input_tokens"] > route_of(model.invoke("Weather in Oslo?"))["input_tokens"]


def test_bind_tools_on_a_tier_without_tool_calling_is_refused_when_binding() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    model = RouterChatModel(
        {"small": GenericFakeChatModel(messages=iter([])), "large": TierModel(model_name="gpt-4o")},
        models={"small": "gpt-4o-mini"},
    )
    with pytest.raises(InvalidInputError, match=r"'gpt-4o-mini'.*does not support tool calling"):
        model.bind_tools([get_weather])


class Person(BaseModel):
    name: str
    age: int


def test_with_structured_output_uses_the_chosen_tiers_own_structured_output() -> None:
    model, t = router()
    t["medium"].answers = [
        AIMessage("", tool_calls=[{"name": "Person", "args": {"name": "Ada", "age": 36}, "id": "p1"}])
    ]
    structured = model.with_structured_output(Person, include_raw=True)
    out = structured.invoke("Who wrote the first program?", config={"configurable": {"force_tier": "medium"}})
    assert out["parsed"] == Person(name="Ada", age=36)
    assert route_of(out["raw"])["tier"] == "medium"


async def test_with_structured_output_async() -> None:
    model, t = router()
    t["small"].answers = [
        AIMessage("", tool_calls=[{"name": "Person", "args": {"name": "Alan", "age": 41}, "id": "p1"}])
    ]
    assert await model.with_structured_output(Person).ainvoke(EASY) == Person(name="Alan", age=41)


def test_a_rate_limited_tier_falls_back_and_the_reply_says_who_answered() -> None:
    small, backup = (
        TierModel(model_name="gpt-4o-mini"),
        TierModel(model_name="gpt-4.1-nano", answers=["backup"]),
    )
    small.fail_with = ProviderError(429)
    model = RouterChatModel(
        {"small": small, "large": TierModel(model_name="gpt-4o")}, fallbacks={"small": [backup]}
    )
    reply = model.invoke(EASY)
    assert reply.content == "backup"
    assert route_of(reply)["model"] == "gpt-4o-mini"
    assert route_of(reply)["answered_by"] == "gpt-4.1-nano"
    assert route_of(reply)["fallbacks"] == ["gpt-4.1-nano"]
    assert len(small.received) == 1
    chunks = list(model.stream(EASY))  # a stream falls back before its first chunk
    assert route_of(chunks[0])["answered_by"] == "gpt-4.1-nano"


def test_a_caller_error_is_not_retried_on_a_fallback() -> None:
    small, backup = TierModel(model_name="gpt-4o-mini"), TierModel(model_name="gpt-4.1-nano")
    small.fail_with = ProviderError(400)
    model = RouterChatModel(
        {"small": small, "large": TierModel(model_name="gpt-4o")}, fallbacks={"small": [backup]}
    )
    with pytest.raises(ProviderError, match="400"):
        model.invoke(EASY)
    assert backup.received == []


def test_with_fallbacks_wraps_the_router_like_any_chat_model() -> None:
    broken, _ = router()
    for m in broken.tiers.values():
        m.fail_with = ProviderError(503)
    spare = TierModel(model_name="gpt-4o", answers=["from the spare model"])
    assert broken.with_fallbacks([spare]).invoke(EASY).content == "from the spare model"


def test_a_spent_budget_stops_the_call_before_any_tier_is_called(tmp_path: Path) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000), spool_path=tmp_path / "s")
    ledger.record(Usage(input_tokens=900, output_tokens=100), model="gpt-4o", user="u-42")
    model, t = router(ledger=ledger)
    with pytest.raises(BudgetExceededError):
        model.invoke(EASY, config={"metadata": {"user_id": "u-42"}})
    assert all(m.received == [] for m in t.values())
    assert route_of(model.invoke(EASY, config={"metadata": {"user_id": "someone-else"}}))["tier"] == "small"


def test_a_filling_budget_steps_down_a_tier(tmp_path: Path) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000), spool_path=tmp_path / "s")
    ledger.record(Usage(input_tokens=600, output_tokens=100), model="gpt-4o", user="u-42")
    model, _ = router(ledger=ledger)
    fresh = route_of(model.invoke(HARD, config={"metadata": {"user_id": "new"}}))
    tight = route_of(model.invoke(HARD, config={"metadata": {"user_id": "u-42"}}))
    order = ["small", "medium", "large"]
    assert order.index(tight["tier"]) < order.index(fresh["tier"])
    assert tight["budget_step"] != "normal"


def test_the_budget_callback_charges_the_model_that_answered(tmp_path: Path) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100_000), spool_path=tmp_path / "s")
    handler = BudgetCallbackHandler(ledger, feature="chat")
    model, _ = router()
    model.invoke(EASY, config={"callbacks": [handler], "metadata": {"user_id": "u"}})
    model.invoke(EASY, force_tier="large", config={"callbacks": [handler], "metadata": {"user_id": "u"}})
    keys = {r.rollup_key for r in ledger.store.rollup([ledger.day()])}
    models = {k.rsplit("/", 1)[-1] for k in keys}
    assert models == {"gpt-4o-mini", "gpt-4o"}  # one charge per call, on the tier's model


def test_callbacks_see_the_decision_in_the_runs_metadata() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[dict[str, Any]] = []

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            seen.append(kwargs["metadata"])

    model, _ = router()
    model.invoke(EASY, config={"callbacks": [Spy()]})
    [meta] = seen  # one model run per call
    assert meta[ROUTE]["tier"] == "small"
    assert meta["ls_model_name"] == "gpt-4o-mini"


# -- create_agent ------------------------------------------------------------------------------------


def weather_agent_tiers() -> dict[str, TierModel]:
    t = tiers()
    for m in t.values():
        m.answers = [
            AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
            "It is 18C in Oslo.",
        ]
    return t


def test_create_agent_with_the_router_as_its_model() -> None:
    t = weather_agent_tiers()
    agent = create_agent(RouterChatModel(t), tools=[get_weather])
    messages = agent.invoke({"messages": [HumanMessage("Weather in Oslo?")]})["messages"]
    assert messages[-1].content == "It is 18C in Oslo."
    assert messages[2].content == "18C and sunny in Oslo"  # the tool ran
    assert t["small"].bound_tools[-1][0]["function"]["name"] == "get_weather"
    assert route_of(messages[-1])["tier"] == "small"


async def test_create_agent_with_the_routing_middleware_async_and_forced_by_config() -> None:
    t = weather_agent_tiers()
    agent = create_agent(t["small"], tools=[get_weather], middleware=[RoutingMiddleware(t)])
    out = await agent.ainvoke(
        {"messages": [HumanMessage("Weather in Oslo?")]}, config={"configurable": {"force_tier": "large"}}
    )
    assert out["messages"][-1].content == "It is 18C in Oslo."
    assert route_of(out["messages"][-1])["tier"] == "large"
    assert len(t["large"].received) == 2
    assert t["small"].received == []
    assert t["large"].bound_tools  # the agent bound its tools on the model the router chose


def test_routing_middleware_routes_each_model_call_and_reads_force_tier_from_the_context() -> None:
    t = weather_agent_tiers()
    agent = create_agent(
        t["small"],
        tools=[get_weather],
        system_prompt="You are a weather assistant.",
        middleware=[RoutingMiddleware(t)],
        context_schema=dict,
    )
    out = agent.invoke({"messages": [HumanMessage("Weather in Oslo?")]}, context={"force_tier": "medium"})
    assert len(t["medium"].received) == 2
    assert isinstance(t["medium"].received[0][0], SystemMessage)
    assert route_of(out["messages"][-1])["tier"] == "medium"
    with pytest.raises(InvalidInputError, match="force_tier"):
        agent.invoke({"messages": [HumanMessage("hi")]}, context={"force_tier": "huge"})


def test_routing_middleware_falls_back_on_a_rate_limit() -> None:
    t = weather_agent_tiers()
    t["small"].fail_with = ProviderError(429)
    backup = TierModel(model_name="gpt-4.1-nano", answers=["backup answer"])
    agent = create_agent(t["small"], middleware=[RoutingMiddleware(t, fallbacks={"small": [backup]})])
    last = agent.invoke({"messages": [HumanMessage(EASY)]})["messages"][-1]
    assert last.content == "backup answer"
    assert route_of(last)["answered_by"] == "gpt-4.1-nano"


# -- content the core cannot represent ------------------------------------------------------------


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_pdf_is_routed_on_its_estimate_and_reaches_the_tier_as_sent(how: str) -> None:
    model, t = router()
    messages = pdf_question(PDF_BLOCK)
    reply = model.invoke(messages) if how == "invoke" else asyncio.run(model.ainvoke(messages))
    route = route_of(reply)
    assert route["exact"] is False  # two pages at the core's per-page estimate
    assert route["input_tokens"] > 2 * PDF_PAGE_TOKENS
    (received,) = t[route["tier"]].received
    assert received == messages  # the tier model gets the PDF block itself


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_the_routing_middleware_routes_an_agent_reading_a_pdf(how: str) -> None:
    t = tiers()
    agent = create_agent(t["small"], middleware=[RoutingMiddleware(t)])
    payload = {"messages": pdf_question(PDF_BLOCK)}
    out = agent.invoke(payload) if how == "invoke" else asyncio.run(agent.ainvoke(payload))
    route = route_of(out["messages"][-1])
    assert (route["exact"], route["input_tokens"] > 2 * PDF_PAGE_TOKENS) == (False, True)
    assert t[route["tier"]].received[0][-1].content == payload["messages"][-1].content


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: RouterChatModel({}), InvalidInputError, "tiers: must be a non-empty mapping"),
        (lambda: RouterChatModel(), InvalidInputError, "tiers"),
        (
            lambda: RouterChatModel({"small": "gpt-4o-mini"}),
            InvalidInputError,
            r"tiers\['small'\].*chat model",
        ),
        (lambda: RouterChatModel({"s": TierModel(model_name="gpt-9000")}), UnknownModelError, "gpt-9000"),
        (lambda: RouterChatModel(tiers(), models={"huge": "gpt-4o"}), InvalidInputError, "models"),
        (lambda: RouterChatModel(tiers(), api_key="sk-..."), InvalidInputError, "api_key"),
        (lambda: RoutingMiddleware({}), InvalidInputError, "tiers"),
        (
            lambda: RoutingMiddleware({"s": TierModel(model_name="gpt-4o")}, fallbacks={"x": []}),
            InvalidInputError,
            "fallbacks",
        ),
    ],
)
def test_bad_configuration_is_refused_at_construction(make: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_a_model_that_does_not_name_itself_needs_an_explicit_name() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    with pytest.raises(InvalidInputError, match=r"does not name its model.*models="):
        RouterChatModel({"small": GenericFakeChatModel(messages=iter([]))})
    named = RouterChatModel(
        {"small": GenericFakeChatModel(messages=iter(["hi"]))}, models={"small": "gpt-4o"}
    )
    assert named.invoke("hello").content == "hi"


def test_bad_calls_are_refused_before_any_tier_is_called() -> None:
    model, t = router()
    with pytest.raises(InvalidInputError, match=r"force_tier.*one of"):
        model.invoke(EASY, force_tier="huge")
    with pytest.raises(InvalidInputError, match="force_tier"):
        asyncio.run(model.ainvoke(EASY, config={"configurable": {"force_tier": "huge"}}))
    with pytest.raises(InvalidInputError, match=r"model.*not the model of any tier"):
        model.invoke(EASY, model="claude-opus-4")
    small_windows = RouterChatModel({"small": t["small"], "large": t["large"]})  # 128k each
    with pytest.raises(ContextOverflowError):
        small_windows.invoke("word " * 150_000)
    with pytest.raises(InvalidInputError):
        list(model.stream(EASY, force_tier="huge"))
    assert all(m.received == [] for m in t.values())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"force_tier": ["large"]}, "force_tier"),
        ({"force_tier": {"large": 1}}, "force_tier"),
        ({"config": {"configurable": {"force_tier": ["large"]}}}, "force_tier"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 2.5}, "max_completion_tokens"),
    ],
)
async def test_bad_call_arguments_are_named_before_any_tier_is_called(
    kwargs: dict[str, Any], field: str
) -> None:
    model, t = router()
    with pytest.raises(InvalidInputError) as err:
        model.invoke(EASY, **kwargs)
    assert err.value.field == field
    with pytest.raises(InvalidInputError, match=field):
        await model.ainvoke(EASY, **kwargs)
    with pytest.raises(InvalidInputError, match=field):
        list(model.stream(EASY, **kwargs))
    assert all(m.received == [] for m in t.values())


def test_a_valid_max_tokens_is_what_routing_assumes() -> None:
    model, _ = router()
    reply = model.invoke(EASY, max_tokens=50)
    assert route_of(reply)["max_output_tokens"] == 50


def test_a_second_positional_argument_is_named() -> None:
    with pytest.raises(InvalidInputError, match="keyword"):
        RouterChatModel(tiers(), {"small": "gpt-4o-mini"})  # type: ignore[call-arg]
    with pytest.raises(InvalidInputError, match="tiers"):
        RouterChatModel(tiers(), tiers=tiers())
