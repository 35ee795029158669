"""TierRouter: tiers, force_tier, context escalation, budget step-down, fallbacks, counterfactuals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tokenbudget_core import (
    BudgetExceededError,
    BudgetPolicy,
    Classification,
    ContextOverflowError,
    FeatureBudget,
    HeuristicClassifier,
    InvalidInputError,
    InvalidMessageError,
    Ledger,
    Message,
    ModelRegistry,
    RouteDecision,
    TierRouter,
    TokenCounter,
    UnknownModelError,
    Usage,
    attribute,
    cost_of,
    is_retryable,
)

TIERS = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}
EASY = "What is the capital of France?"
HARD = "Design a sharded rate limiter for our API and analyze how it fails under a network partition."


def price(model: str, prompt: str, output: int = 1024) -> Decimal:
    n = TokenCounter.for_model(model).count_messages([{"role": "user", "content": prompt}])
    return cost_of(Usage(input_tokens=int(n), output_tokens=output), model)


# -- classification, reasons and counterfactuals ---------------------------------------------------


def test_an_easy_prompt_goes_to_the_cheap_tier_and_reports_what_it_saved() -> None:
    d = TierRouter(TIERS).route(EASY)
    assert (d.tier, d.model, d.classified_tier) == ("small", "gpt-4o-mini", "small")
    assert d.reason.startswith("classifier: score ")
    assert d.rule is not None
    assert "lookup" in d.rule
    assert d.score is not None
    assert 0 <= d.score < 0.4
    assert d.input_tokens == TokenCounter.for_model("gpt-4o-mini").count_messages(
        [{"role": "user", "content": EASY}]
    )
    assert d.estimated_cost_usd == price("gpt-4o-mini", EASY)
    assert d.premium_model == "gpt-4o"
    assert d.premium_cost_usd == price("gpt-4o", EASY)
    assert d.saved_usd == price("gpt-4o", EASY) - price("gpt-4o-mini", EASY)
    assert d.saved_usd > 0
    assert (d.budget_step, d.budget_shares, d.adjustments, d.exact) == ("normal", {}, (), True)


def test_a_hard_prompt_goes_to_premium_and_saves_nothing() -> None:
    d = TierRouter(TIERS).route(HARD)
    assert d.tier == "large"
    assert d.estimated_cost_usd == d.premium_cost_usd == price("gpt-4o", HARD)
    assert d.saved_usd == 0


def test_the_classifier_judges_the_newest_user_message_and_the_window_counts_them_all() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": HARD},
        {"role": "assistant", "content": "Here is a design..."},
        {"role": "user", "content": "Thanks! What is a token bucket?"},
    ]
    d = TierRouter(TIERS).route(messages)
    assert d.tier == "small"
    assert d.input_tokens == TokenCounter.for_model("gpt-4o-mini").count_messages(messages)


def test_max_output_tokens_and_tools_change_the_estimate() -> None:
    router = TierRouter(TIERS, max_output_tokens=200)
    d = router.route(EASY)
    assert d.max_output_tokens == 200
    assert d.estimated_cost_usd == price("gpt-4o-mini", EASY, 200)
    assert router.route(EASY, max_output_tokens=10).estimated_cost_usd == price("gpt-4o-mini", EASY, 10)
    tool = {
        "type": "function",
        "function": {"name": "lookup", "description": "Find a city", "parameters": {}},
    }
    assert router.route(EASY, tools=[tool]).input_tokens > d.input_tokens


def test_claude_tiers_are_counted_offline_and_flagged_as_estimates() -> None:
    d = TierRouter({"small": "claude-haiku-4-5", "large": "claude-opus-4-1"}).route(EASY)
    assert d.model == "claude-haiku-4-5"
    assert d.exact is False
    assert d.saved_usd is not None
    assert d.saved_usd > 0


def test_force_tier_skips_the_classifier() -> None:
    d = TierRouter(TIERS).route(EASY, force_tier="large")
    assert (d.tier, d.model, d.reason, d.rule) == ("large", "gpt-4o", "forced: tier large", "forced")
    assert d.score is None
    assert d.classified_tier is None
    assert d.saved_usd == 0


def test_as_metadata_is_json_safe() -> None:
    meta = TierRouter(TIERS, fallbacks={"small": ["gpt-4.1-nano"]}).route(EASY).as_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["fallbacks"] == ["gpt-4.1-nano"]
    assert Decimal(meta["premium_cost_usd"]) - Decimal(meta["estimated_cost_usd"]) == Decimal(
        meta["saved_usd"]
    )


def test_a_custom_classifier_plugs_in() -> None:
    class Always:
        tiers = ("small", "large")

        def classify(self, text: str) -> Classification:
            return Classification(tier="large", score=0.9, reason="always large", rules=("always",))

        async def aclassify(self, text: str) -> Classification:
            return self.classify(text)

    d = TierRouter(TIERS, classifier=Always()).route(EASY)
    assert (d.tier, d.rule, d.reason) == ("large", "always", "classifier: always large")


async def test_aroute_matches_route() -> None:
    router = TierRouter(TIERS)
    for prompt in (EASY, HARD):
        assert await router.aroute(prompt) == router.route(prompt)
    assert (await router.aroute(EASY, force_tier="medium")).tier == "medium"


# -- context windows ---------------------------------------------------------------------------------


@pytest.fixture
def small_windows() -> ModelRegistry:
    reg = ModelRegistry()
    reg.register(
        "mini-2k", provider="openai", context_window=2_000, max_output_tokens=1_000, canonical="gpt-4o-mini"
    )
    reg.register(
        "big-8k", provider="openai", context_window=8_000, max_output_tokens=1_000, canonical="gpt-4o"
    )
    return reg


def long_easy_prompt(words: int) -> str:
    return "Translate this into French: " + "the cat sat on the mat " * (words // 6)


def test_a_prompt_too_long_for_the_cheap_window_escalates(small_windows: ModelRegistry) -> None:
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"}, registry=small_windows, max_output_tokens=500
    )
    prompt = long_easy_prompt(3_000)
    d = router.route(prompt)
    n = TokenCounter.for_model("gpt-4o").count_messages([{"role": "user", "content": prompt}])
    assert d.classified_tier == "small"
    assert (d.tier, d.model, d.adjustments) == ("large", "big-8k", ("context",))
    assert f"escalated: {n:,} tokens + 500 output exceed mini-2k's 2,000 window" in d.reason
    assert d.saved_usd == 0


def test_output_counts_against_the_window(small_windows: ModelRegistry) -> None:
    router = TierRouter({"small": "mini-2k", "large": "big-8k"}, registry=small_windows)
    prompt = long_easy_prompt(1_500)  # about 1,500 tokens: fits 2,000 with 300 output, not with 1,000
    assert router.route(prompt, max_output_tokens=300).tier == "small"
    assert router.route(prompt, max_output_tokens=900).tier == "large"


def test_a_prompt_that_fits_no_tier_is_refused(small_windows: ModelRegistry) -> None:
    router = TierRouter({"small": "mini-2k", "large": "big-8k"}, registry=small_windows)
    with pytest.raises(ContextOverflowError) as err:
        router.route(long_easy_prompt(12_000))
    assert err.value.required > 8_000
    assert "larger window" in str(err.value)


def test_a_forced_tier_that_cannot_hold_the_prompt_is_an_error_not_an_escalation(
    small_windows: ModelRegistry,
) -> None:
    router = TierRouter({"small": "mini-2k", "large": "big-8k"}, registry=small_windows)
    with pytest.raises(ContextOverflowError, match="drop force_tier"):
        router.route(long_easy_prompt(3_000), force_tier="small")


def test_when_only_a_cheaper_tier_holds_the_prompt_it_steps_down(small_windows: ModelRegistry) -> None:
    router = TierRouter({"small": "big-8k", "large": "mini-2k"}, registry=small_windows)
    prompt = "Analyze and design a migration plan for this:\n" + "the cat sat on the mat " * 600
    d = router.route(prompt)
    assert d.classified_tier == "large"
    assert d.tier == "small"
    assert "stepped down" in d.reason
    assert d.premium_cost_usd == d.estimated_cost_usd  # the premium model could not have taken it


async def test_stand_ins_count_their_file_tokens_against_every_window(small_windows: ModelRegistry) -> None:
    # An adapter turns a PDF block it cannot represent into a stand-in (to_core_request).
    router = TierRouter(
        {"small": "mini-2k", "large": "big-8k"}, registry=small_windows, max_output_tokens=500
    )

    def pdf(pages_tokens: int) -> list[Message]:
        return [Message(role="user", content=EASY, file_tokens=pages_tokens)]

    plain = router.route(EASY)
    with_file = router.route(pdf(1_000))
    assert plain.exact
    assert (with_file.tier, with_file.input_tokens, with_file.exact) == (
        "small",
        plain.input_tokens + 1_000,
        False,
    )
    assert with_file.estimated_cost_usd is not None
    assert plain.estimated_cost_usd is not None
    assert with_file.estimated_cost_usd > plain.estimated_cost_usd
    big = router.route(pdf(1_600))  # + 500 output: past mini-2k's 2,000 window
    assert (big.tier, big.adjustments) == ("large", ("context",))
    assert await router.aroute(pdf(1_600)) == big
    assert not router.route(pdf(0)).exact  # stand-in text: an estimate even with no file
    with pytest.raises(ContextOverflowError):
        router.route(pdf(8_000))


# -- budgets ---------------------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(
        "memory://",
        policy=BudgetPolicy(default_feature=FeatureBudget(user_daily_usd=Decimal("1.00"))),
        spool_path=tmp_path / "spool.jsonl",
    )
    yield led
    led.close()


def spend(ledger: Ledger, usd: str, user: str = "u1") -> None:
    """Charge ``usd`` of gpt-4o input ($2.50 per million tokens) to ``user``."""
    tokens = int(Decimal(usd) / Decimal("2.5") * 1_000_000)
    ledger.record(Usage(input_tokens=tokens, output_tokens=0), model="gpt-4o", user=user)


def test_without_spend_the_budget_changes_nothing(ledger: Ledger) -> None:
    d = TierRouter(TIERS, ledger=ledger).route(HARD, user="u1")
    assert (d.tier, d.budget_step, d.adjustments) == ("large", "normal", ())
    assert d.budget_shares == {"user_daily_usd": 0.0}


def test_past_the_first_threshold_routing_steps_down_one_tier(ledger: Ledger) -> None:
    spend(ledger, "0.65")
    d = TierRouter(TIERS, ledger=ledger).route(HARD, user="u1")
    assert (d.classified_tier, d.tier, d.model) == ("large", "medium", "gpt-4.1-mini")
    assert d.budget_step == "cheaper_tier"
    assert d.budget_shares["user_daily_usd"] == pytest.approx(0.65)
    assert "budget: user_daily_usd at 65% -> one tier down" in d.reason
    assert d.adjustments == ("budget",)
    assert d.saved_usd == price("gpt-4o", HARD) - price("gpt-4.1-mini", HARD)


def test_the_payer_comes_from_the_attribution_block(ledger: Ledger) -> None:
    spend(ledger, "0.65")
    router = TierRouter(TIERS, ledger=ledger)
    with attribute(user="u1"):
        assert router.route(HARD).tier == "medium"
    with attribute(user="u1", feature="support"):  # another feature: another per-user budget
        assert router.route(HARD).tier == "large"
    assert router.route(HARD, user="u2").tier == "large"


def test_past_cache_only_the_default_stays_one_tier_down_where_the_cache_is_asked(ledger: Ledger) -> None:
    """From ``cache_only`` up the ledger sends no call (a cache answers or the call is refused):
    stepping down further would only ask a cache that answered fewer of the payer's questions."""
    spend(ledger, "0.92")
    d = TierRouter(TIERS, ledger=ledger).route(HARD, user="u1")
    assert (d.tier, d.budget_step) == ("medium", "cache_only")
    assert "one tier down" in d.reason


def test_past_a_second_threshold_passed_in_two_tiers_down(ledger: Ledger) -> None:
    spend(ledger, "0.92")
    d = TierRouter(TIERS, ledger=ledger, budget_thresholds=[0.6, 0.9]).route(HARD, user="u1")
    assert d.tier == "small"
    assert "2 tiers down" in d.reason


def test_step_down_never_goes_below_the_cheapest_tier(ledger: Ledger) -> None:
    spend(ledger, "0.92")
    assert TierRouter(TIERS, ledger=ledger).route(EASY, user="u1").tier == "small"


def test_thresholds_are_configurable(ledger: Ledger) -> None:
    spend(ledger, "0.35")
    assert TierRouter(TIERS, ledger=ledger).route(HARD, user="u1").tier == "large"
    assert TierRouter(TIERS, ledger=ledger, budget_thresholds=[0.3]).route(HARD, user="u1").tier == "medium"


def test_a_forced_tier_is_not_stepped_down(ledger: Ledger) -> None:
    spend(ledger, "0.92")
    d = TierRouter(TIERS, ledger=ledger).route(EASY, user="u1", force_tier="large")
    assert d.tier == "large"
    assert d.budget_step == "cache_only"


def test_a_spent_budget_is_refused(ledger: Ledger) -> None:
    spend(ledger, "1.00")
    router = TierRouter(TIERS, ledger=ledger)
    for kwargs in ({}, {"force_tier": "small"}):
        with pytest.raises(BudgetExceededError) as err:
            router.route(EASY, user="u1", **kwargs)  # type: ignore[arg-type]
        assert (err.value.budget, err.value.step, err.value.limit) == (
            "user_daily_usd",
            "hard_refusal",
            Decimal("1.00"),
        )
        assert "user=u1" in err.value.scope


def test_soft_refusal_refuses_only_when_asked(ledger: Ledger) -> None:
    spend(ledger, "0.98")
    assert TierRouter(TIERS, ledger=ledger).route(HARD, user="u1").tier == "medium"
    with pytest.raises(BudgetExceededError) as err:
        TierRouter(TIERS, ledger=ledger, refuse_at_soft_refusal=True).route(HARD, user="u1")
    assert err.value.step == "soft_refusal"


async def test_aroute_reads_the_budget_too(ledger: Ledger) -> None:
    spend(ledger, "0.65")
    router = TierRouter(TIERS, ledger=ledger)
    assert (await router.aroute(HARD, user="u1")).tier == "medium"
    spend(ledger, "0.40")
    with pytest.raises(BudgetExceededError):
        await router.aroute(HARD, user="u1")


# -- fallbacks on provider errors ------------------------------------------------------------------------


def _response(status: int, url: str) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", url))


OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"


def retryable_errors() -> list[BaseException]:
    return [
        openai.RateLimitError("slow down", response=_response(429, OPENAI), body=None),
        openai.InternalServerError("boom", response=_response(500, OPENAI), body=None),
        openai.APITimeoutError(request=httpx.Request("POST", OPENAI)),
        anthropic.RateLimitError("slow down", response=_response(429, ANTHROPIC), body=None),
        anthropic.InternalServerError("overloaded", response=_response(529, ANTHROPIC), body=None),
        anthropic.APIConnectionError(request=httpx.Request("POST", ANTHROPIC)),
        TimeoutError("read timed out"),
        httpx.ReadTimeout("timed out"),
    ]


@pytest.mark.parametrize("error", retryable_errors(), ids=lambda e: type(e).__name__)
def test_rate_limits_overload_and_timeouts_are_retryable(error: BaseException) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        openai.BadRequestError("bad", response=_response(400, OPENAI), body=None),
        openai.AuthenticationError("key", response=_response(401, OPENAI), body=None),
        anthropic.NotFoundError("no model", response=_response(404, ANTHROPIC), body=None),
        BudgetExceededError(budget="daily_usd", scope="-", limit=1, used=1, requested=1),
        ValueError("bug in the caller"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_caller_mistakes_and_refusals_are_not(error: BaseException) -> None:
    assert not is_retryable(error)


def test_call_walks_the_fallback_chain_on_retryable_errors() -> None:
    router = TierRouter(TIERS, fallbacks={"small": ["gpt-4.1-nano", "gpt-4.1-mini"]})
    d = router.route(EASY)
    assert d.fallbacks == ("gpt-4.1-nano", "gpt-4.1-mini")
    tried: list[str] = []

    def fn(model: str) -> str:
        tried.append(model)
        if model == "gpt-4o-mini":
            raise openai.RateLimitError("slow down", response=_response(429, OPENAI), body=None)
        if model == "gpt-4.1-nano":
            raise TimeoutError
        return f"answer from {model}"

    assert router.call(d, fn) == "answer from gpt-4.1-mini"
    assert tried == ["gpt-4o-mini", "gpt-4.1-nano", "gpt-4.1-mini"]


def test_a_non_retryable_error_stops_the_chain() -> None:
    router = TierRouter(TIERS, fallbacks={"small": ["gpt-4.1-nano"]})
    tried: list[str] = []

    def fn(model: str) -> str:
        tried.append(model)
        raise openai.BadRequestError("bad", response=_response(400, OPENAI), body=None)

    with pytest.raises(openai.BadRequestError):
        router.call(router.route(EASY), fn)
    assert tried == ["gpt-4o-mini"]


def test_when_every_model_fails_the_last_error_is_raised() -> None:
    router = TierRouter(TIERS, fallbacks={"small": ["gpt-4.1-nano"]})

    def fn(model: str) -> str:
        raise anthropic.InternalServerError(model, response=_response(529, ANTHROPIC), body=None)

    with pytest.raises(anthropic.InternalServerError, match=r"gpt-4\.1-nano"):
        router.call(router.route(EASY), fn)


async def test_acall_walks_the_chain_too() -> None:
    router = TierRouter(TIERS, fallbacks={"large": ["claude-sonnet-4-5"]})
    tried: list[str] = []

    async def fn(model: str) -> str:
        tried.append(model)
        if model == "gpt-4o":
            raise openai.APITimeoutError(request=httpx.Request("POST", OPENAI))
        return model

    assert await router.acall(router.route(HARD), fn) == "claude-sonnet-4-5"
    assert tried == ["gpt-4o", "claude-sonnet-4-5"]


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "kwargs", "field"),
    [
        ({}, {}, "tiers"),
        (["gpt-4o"], {}, "tiers"),
        ({"": "gpt-4o"}, {}, "tiers"),
        ({"small": 4}, {}, "tiers['small']"),
        (TIERS, {"classifier": HeuristicClassifier(tiers=("small", "huge"))}, "classifier"),
        (TIERS, {"classifier": object()}, "classifier"),
        (TIERS, {"fallbacks": {"tiny": ["gpt-4o"]}}, "fallbacks['tiny']"),
        (TIERS, {"fallbacks": {"small": "gpt-4o"}}, "fallbacks['small']"),
        (TIERS, {"max_output_tokens": 0}, "max_output_tokens"),
        (TIERS, {"budget_thresholds": [0.8, 0.6]}, "budget_thresholds"),
        (TIERS, {"budget_thresholds": [1.5]}, "budget_thresholds[0]"),
        (TIERS, {"counters": {"gpt-4o": "tiktoken"}}, "counters['gpt-4o']"),
        (TIERS, {"ledger": "memory://"}, "ledger"),
    ],
)
def test_bad_construction_is_named(tiers: object, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        TierRouter(tiers, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_tier_naming_an_unknown_model_fails_at_construction() -> None:
    with pytest.raises(UnknownModelError, match="gpt-4o-mni"):
        TierRouter({"small": "gpt-4o-mni", "large": "gpt-4o"})
    with pytest.raises(UnknownModelError):
        TierRouter(TIERS, fallbacks={"small": ["no-such-model"]})


@pytest.mark.parametrize(
    ("messages", "kwargs", "field"),
    [
        (EASY, {"force_tier": "huge"}, "force_tier"),
        (EASY, {"max_output_tokens": -1}, "max_output_tokens"),
        (EASY, {"max_output_tokens": True}, "max_output_tokens"),
        ([], {}, "messages"),
        (EASY, {"tools": "search"}, "tools"),
        (EASY, {"feature": 5}, "feature"),
        (EASY, {"user": ["u"]}, "user"),
    ],
)
def test_bad_requests_are_named(messages: object, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        TierRouter(TIERS).route(messages, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_malformed_messages_are_named() -> None:
    with pytest.raises(InvalidMessageError, match=r"messages\[0\]"):
        TierRouter(TIERS).route([{"content": "no role"}])


def test_a_classifier_returning_a_foreign_tier_is_an_error() -> None:
    class Rogue:
        tiers = ("small",)

        def classify(self, text: str) -> Classification:
            return Classification(tier="platinum", score=1.0, reason="?")

        async def aclassify(self, text: str) -> Classification:
            return self.classify(text)

    with pytest.raises(InvalidInputError, match="platinum"):
        TierRouter(TIERS, classifier=Rogue()).route(EASY)


def test_call_needs_a_decision() -> None:
    with pytest.raises(InvalidInputError, match="decision"):
        TierRouter(TIERS).call("gpt-4o", lambda m: m)  # type: ignore[arg-type]
    assert isinstance(TierRouter(TIERS).route(EASY), RouteDecision)


@pytest.mark.parametrize("force_tier", [["large"], {"large": 1}, {"large"}, 3, b"large"])
async def test_a_force_tier_that_is_not_a_tier_name_is_named(force_tier: object) -> None:
    router = TierRouter(TIERS)
    with pytest.raises(InvalidInputError) as err:
        router.route(EASY, force_tier=force_tier)  # type: ignore[arg-type]
    assert err.value.field == "force_tier"
    with pytest.raises(InvalidInputError, match="force_tier"):
        await router.aroute(EASY, force_tier=force_tier)  # type: ignore[arg-type]


class SyncOnly:
    """A classifier written before the async twin: classify() only."""

    tiers = ("small", "large")

    def classify(self, text: str) -> Classification:
        return Classification(tier="large" if len(text) > 40 else "small", score=0.5, reason="length")


async def test_a_classifier_without_aclassify_also_routes_async() -> None:
    router = TierRouter(TIERS, classifier=SyncOnly())
    assert (await router.aroute(EASY)).tier == router.route(EASY).tier == "small"
    assert (await router.aroute(EASY * 3)).tier == "large"


@pytest.mark.parametrize(
    "returned",
    [
        "large",
        None,
        {"tier": "large"},
        Classification(tier=["large"], score=0.5, reason="?"),  # type: ignore[arg-type]
        Classification(tier="large", score="high", reason="?"),  # type: ignore[arg-type]
        Classification(tier="large", score=float("nan"), reason="?"),
    ],
    ids=["str", "None", "dict", "unhashable-tier", "str-score", "nan-score"],
)
async def test_a_classifier_returning_something_else_is_named(returned: object) -> None:
    class Bad:
        tiers = ("small", "large")

        def classify(self, text: str) -> object:
            return returned

        async def aclassify(self, text: str) -> object:
            return returned

    router = TierRouter(TIERS, classifier=Bad())
    with pytest.raises(InvalidInputError, match="returned") as err:
        router.route(EASY)
    assert err.value.field == "classifier"
    with pytest.raises(InvalidInputError, match="returned"):
        await router.aroute(EASY)


def test_a_classifier_with_unreadable_tiers_is_named() -> None:
    class Odd:
        tiers = (["small"], "large")

        def classify(self, text: str) -> Classification:
            return Classification(tier="large", score=1.0, reason="?")

    with pytest.raises(InvalidInputError) as err:
        TierRouter(TIERS, classifier=Odd())
    assert err.value.field.startswith("classifier")


def test_a_router_follows_a_policy_assigned_to_its_ledger_later() -> None:
    """The ladder thresholds a router steps down at are the ledger policy's current ones."""
    import dataclasses

    from tokenbudget_core.budgets import Ladder

    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000), alerts=[])
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, ledger=ledger)
    ledger.record(Usage(input_tokens=300, output_tokens=100), model="gpt-4o-mini", user="u")  # 40% used
    assert router.route(HARD, user="u").model == "gpt-4o"
    ledger.policy = dataclasses.replace(
        ledger.policy, ladder=Ladder(cheaper_tier=0.3, smaller_context=0.5, cache_only=0.6)
    )
    assert router.budget_thresholds == (0.3,)
    assert router.route(HARD, user="u").model == "gpt-4o-mini"
    assert TierRouter({"small": "gpt-4o-mini"}, budget_thresholds=[0.5]).budget_thresholds == (0.5,)
