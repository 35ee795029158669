"""Routing checks the output cap a call asks for and the size of the request on fallbacks too."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenbudget_core import TierRouter, TokenCounter, Usage, cost_of
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.registry import ModelRegistry

EASY = "What is the capital of France?"


def price(model: str, prompt: str, output: int) -> Decimal:
    n = TokenCounter.for_model(model).count_messages([{"role": "user", "content": prompt}])
    return cost_of(Usage(input_tokens=int(n), output_tokens=output), model)


class RateLimited(Exception):
    status_code = 429


@pytest.fixture
def windows() -> ModelRegistry:
    reg = ModelRegistry()
    reg.register(
        "mini-2k", provider="openai", context_window=2_000, max_output_tokens=1_000, canonical="gpt-4o-mini"
    )
    reg.register(
        "big-8k", provider="openai", context_window=8_000, max_output_tokens=1_000, canonical="gpt-4o"
    )
    reg.register(
        "alt-3k", provider="openai", context_window=3_000, max_output_tokens=1_000, canonical="gpt-4o"
    )
    reg.register(
        "alt-8k", provider="openai", context_window=8_000, max_output_tokens=1_000, canonical="gpt-4o"
    )
    reg.register(
        "short-8k", provider="openai", context_window=8_000, max_output_tokens=200, canonical="gpt-4o"
    )
    return reg


def long_easy_prompt(words: int) -> str:
    return "Translate this into French: " + "the cat sat on the mat " * (words // 6)


# -- 1. the output cap a call asks for ----------------------------------------------------------


def test_a_cap_above_the_cheap_models_output_limit_escalates_to_one_that_can_produce_it() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4.1"})
    d = router.route(EASY, max_output_tokens=30_000)
    assert d.classified_tier == "small"
    assert (d.tier, d.model, d.max_output_tokens, d.adjustments) == ("large", "gpt-4.1", 30_000, ("context",))
    assert "escalated: 30,000 output tokens exceed gpt-4o-mini's 16,384 output limit" in d.reason
    assert d.saved_usd == 0


def test_both_sides_of_the_savings_are_priced_with_the_same_output_cap() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4.1"})
    d = router.route(EASY, max_output_tokens=30_000)
    assert d.model == "gpt-4.1-mini"
    assert d.estimated_cost_usd == price("gpt-4.1-mini", EASY, 30_000)
    assert d.premium_cost_usd == price("gpt-4.1", EASY, 30_000)
    assert d.saved_usd == d.premium_cost_usd - d.estimated_cost_usd


def test_without_a_cap_of_the_call_the_default_is_lowered_to_the_model_limit_on_both_sides() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4.1"}, max_output_tokens=30_000)
    d = router.route(EASY)  # the call names no cap: the model answers within its own limit
    assert (d.model, d.max_output_tokens) == ("gpt-4o-mini", 16_384)
    assert d.estimated_cost_usd == price("gpt-4o-mini", EASY, 16_384)
    assert d.premium_cost_usd == price("gpt-4.1", EASY, 16_384)


def test_a_cap_no_tier_model_can_produce_is_refused_naming_max_output_tokens() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"})
    with pytest.raises(ContextOverflowError) as err:
        router.route(EASY, max_output_tokens=50_000)
    assert isinstance(err.value, InvalidInputError)
    assert (err.value.required, err.value.limit) == (50_000, 16_384)
    assert "max_output_tokens" in str(err.value)
    assert "lower max_output_tokens to 16,384 or less" in str(err.value)


def test_a_forced_tier_whose_model_cannot_produce_the_cap_is_refused_not_clamped() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4.1"})
    with pytest.raises(ContextOverflowError) as err:
        router.route(EASY, force_tier="small", max_output_tokens=30_000)
    assert "lower max_output_tokens to 16,384 or less" in str(err.value)
    assert "drop force_tier" in str(err.value)


async def test_aroute_checks_the_output_cap_too() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4.1"})
    d = await router.aroute(EASY, max_output_tokens=30_000)
    assert (d.model, d.max_output_tokens) == ("gpt-4.1", 30_000)


# -- 2. fallbacks must hold the request ---------------------------------------------------------


def test_a_fallback_whose_window_cannot_hold_the_request_is_left_out(windows: ModelRegistry) -> None:
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"},
        registry=windows,
        max_output_tokens=500,
        fallbacks={"large": ["alt-3k", "alt-8k"]},
    )
    d = router.route(long_easy_prompt(3_000))  # about 3,000 tokens: escalates to big-8k
    assert d.model == "big-8k"
    assert d.fallbacks == ("alt-8k",)
    assert "fallback alt-3k left out:" in d.reason
    assert "alt-3k's 3,000 window" in d.reason
    assert d.as_metadata()["fallbacks"] == ["alt-8k"]

    tried: list[str] = []

    def fn(model: str) -> str:
        tried.append(model)
        if model == "big-8k":
            raise RateLimited()
        return model

    assert router.call(d, fn) == "alt-8k"
    assert tried == ["big-8k", "alt-8k"]


def test_a_call_is_never_sent_to_a_fallback_too_small_for_it(windows: ModelRegistry) -> None:
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"}, registry=windows, fallbacks={"large": ["alt-3k"]}
    )
    d = router.route(long_easy_prompt(3_000))
    assert d.fallbacks == ()
    tried: list[str] = []

    def fn(model: str) -> str:
        tried.append(model)
        raise RateLimited()

    with pytest.raises(RateLimited):
        router.call(d, fn)
    assert tried == ["big-8k"]


def test_a_fallback_whose_output_limit_is_below_the_cap_is_left_out(windows: ModelRegistry) -> None:
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"},
        registry=windows,
        fallbacks={"small": ["short-8k", "alt-8k"]},
    )
    d = router.route(EASY, max_output_tokens=500)
    assert d.model == "mini-2k"
    assert d.fallbacks == ("alt-8k",)
    assert "fallback short-8k left out: 500 output tokens exceed short-8k's 200 output limit" in d.reason


def test_fallbacks_that_fit_are_kept_in_order_with_nothing_said(windows: ModelRegistry) -> None:
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"}, registry=windows, fallbacks={"small": ["alt-8k", "alt-3k"]}
    )
    d = router.route(EASY, max_output_tokens=500)
    assert d.fallbacks == ("alt-8k", "alt-3k")
    assert "fallback" not in d.reason


# -- 3. constructor input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "hint"),
    [
        ({"fallbacks": ["gpt-4o"]}, "fallbacks", "mapping of tier name -> list of model names"),
        ({"fallbacks": "gpt-4o"}, "fallbacks", "mapping of tier name -> list of model names"),
        ({"counters": ["x"]}, "counters", "mapping of model name -> token counter"),
        ({"counters": "gpt-4o"}, "counters", "mapping of model name -> token counter"),
        ({"counters": {1: TokenCounter.for_model("gpt-4o")}}, "counters", "model names"),
    ],
)
def test_bad_fallbacks_or_counters_are_named_with_the_expected_shape(
    options: dict[str, object], field: str, hint: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, **options)  # type: ignore[arg-type]
    assert err.value.field == field
    assert hint in str(err.value)
    assert err.value.fix  # says how to write it


def test_default_output_per_tier_is_each_tiers_cap_lowered_to_its_limit() -> None:
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4.1"})
    # large's own 30,000 is above gpt-4o-mini's 16,384 limit: still no reason to skip small
    decision = router.route(EASY, force_tier="small", default_output_tokens={"small": 500, "large": 30_000})
    assert (decision.tier, decision.max_output_tokens) == ("small", 500)
    lowered = router.route(EASY, force_tier="small", default_output_tokens={"small": 40_000})
    assert lowered.max_output_tokens == 16_384  # a default is lowered to the model's limit
    with pytest.raises(InvalidInputError) as info:
        router.route(EASY, default_output_tokens={"medium": 500})
    assert info.value.field == "default_output_tokens"
