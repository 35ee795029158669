"""The core rule behind asking other tiers' caches (issue 4, section 6): a decision the budget
stepped down carries the same request on each tier it stepped over (``cache_alternates``, the
classifier's own first), and ``TierRouter.answer`` asks them only after the budget refused the
call, each with that refusal (the adapter makes the call cache-only: answered from the cache or
refused, never sent), and raises the first refusal when none answers. Real routers on a real
memory ledger; ``run`` stands for an adapter's call."""

from __future__ import annotations

import asyncio

import pytest

from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, Usage
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.routing import RouteDecision, TierRouter

PAYER = {"feature": "chat", "user": "u1"}
TIERS = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}
HARD = (
    "Analyze in depth the trade-offs of Paxos, Raft and PBFT, step by step, with proofs of safety "
    "and liveness. Compare their message complexity and explain the failure models."
)


def router_at(share: float, thresholds: tuple[float, ...] | None = None) -> TierRouter:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    if share:
        ledger.record(Usage(input_tokens=int(share * 10_000)), model="gpt-4o-mini", **PAYER)
    return TierRouter(TIERS, ledger=ledger, budget_thresholds=thresholds)


def refusal(step: str = "cache_only") -> BudgetExceededError:
    return BudgetExceededError(budget="user_daily_tokens", scope="-", limit=1, used=1, requested=1, step=step)


def test_a_decision_the_budget_stepped_down_names_the_tiers_it_stepped_over_classifier_first() -> None:
    d = router_at(0.95, thresholds=(0.5, 0.8)).route(HARD, **PAYER)
    assert (d.classified_tier, d.tier) == ("large", "small")
    assert [a.tier for a in d.cache_alternates] == ["large", "medium"]
    for alt in d.cache_alternates:
        assert alt.model == TIERS[alt.tier]
        assert alt.fallbacks == ()
        assert alt.cache_alternates == ()
        assert alt.input_tokens > 0
        assert alt.estimated_cost_usd is not None
        assert alt.estimated_cost_usd > d.estimated_cost_usd  # priced on its own model
    assert d.as_metadata()["cache_tiers"] == ["large", "medium"]


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_a_decision_the_budget_did_not_move_has_none(share: float) -> None:
    d = router_at(share).route(HARD, **PAYER)
    assert d.tier == "large"
    assert d.cache_alternates == ()
    forced = router_at(0.95).route(HARD, force_tier="small", **PAYER)
    assert forced.cache_alternates == ()


def test_answer_asks_the_alternates_only_after_a_budget_refusal_each_with_it() -> None:
    router = router_at(0.95, thresholds=(0.5, 0.8))
    d = router.route(HARD, **PAYER)
    asked: list[tuple[str, str | None]] = []
    first = refusal()

    def run(decision: RouteDecision, refused: BudgetExceededError | None) -> str:
        asked.append((decision.tier, None if refused is None else refused.step))
        if decision.tier == "small":
            raise first
        if decision.tier != "medium":
            raise refusal("hard_refusal")  # its cache did not have it
        return f"cached on {decision.tier}"

    assert router.answer(d, run) == (d.cache_alternates[1], "cached on medium")
    assert asked == [("small", None), ("large", "cache_only"), ("medium", "cache_only")]

    def never(decision: RouteDecision, refused: BudgetExceededError | None) -> str:
        raise first if refused is None else refusal("hard_refusal")

    with pytest.raises(BudgetExceededError) as caught:
        router.answer(d, never)
    assert caught.value is first  # the call's own refusal, not an alternate's miss


def test_answer_passes_other_errors_and_first_answers_through() -> None:
    router = router_at(0.95)
    d = router.route(HARD, **PAYER)
    assert router.answer(d, lambda decision, refused: decision.tier) == (d, "medium")

    def broken(decision: RouteDecision, refused: BudgetExceededError | None) -> str:
        raise TimeoutError("provider down")

    with pytest.raises(TimeoutError):
        router.answer(d, broken)
    with pytest.raises(InvalidInputError):
        router.answer("not a decision", broken)  # type: ignore[arg-type]


def test_the_async_twin_asks_alike() -> None:
    router = router_at(0.95)
    d = router.route(HARD, **PAYER)

    async def run(decision: RouteDecision, refused: BudgetExceededError | None) -> str:
        if decision.tier == "medium":  # (one tier down, the default)
            raise refusal("soft_refusal")
        assert refused is not None
        return decision.tier

    assert asyncio.run(router.aanswer(d, run)) == (d.cache_alternates[0], "large")
