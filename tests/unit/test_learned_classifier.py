"""The nearest-neighbour classifier and evaluate(): fitted from labels, judged in accuracy and money."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pytest

from tokenbudget_core import (
    Classification,
    ComplexityClassifier,
    Evaluation,
    HeuristicClassifier,
    InvalidInputError,
    NearestNeighbourClassifier,
    TierRouter,
    TokenCounter,
    UnknownModelError,
    Usage,
    cost_of,
    current_attribution,
    evaluate,
)

EXAMPLES = [
    ("what is the capital of france", "small"),
    ("what is the capital of spain", "small"),
    ("how do i reset my password", "small"),
    ("write a python function that parses dates", "medium"),
    ("write a sql query for monthly revenue", "medium"),
    ("write an email to my landlord about the heating", "medium"),
    ("design a sharded database for payments and analyze failure modes", "large"),
    ("design a distributed rate limiter and analyze its trade-offs", "large"),
    ("debug a deadlock in our go service under load and propose a fix", "large"),
]
MODELS = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}


def test_a_prompt_takes_the_label_of_its_neighbours() -> None:
    clf = NearestNeighbourClassifier.fit(EXAMPLES, k=3)
    assert clf.tiers == ("small", "medium", "large")
    assert clf.classify("What is the capital of Italy?").tier == "small"
    assert clf.classify("Write a SQL query for weekly revenue").tier == "medium"
    result = clf.classify("Design a sharded rate limiter and analyze failure modes")
    assert result.tier == "large"
    assert result.rules == ("knn",)
    assert result.reason.startswith("3 of 3 nearest examples labelled 'large'")
    assert result.score == 1.0
    assert isinstance(clf, ComplexityClassifier)


def test_the_score_is_the_similarity_weighted_mean_tier() -> None:
    clf = NearestNeighbourClassifier.fit([("alpha beta", "small"), ("alpha beta gamma", "large")], k=2)
    result = clf.classify("alpha beta")
    vecs = clf.embedder.embed(["alpha beta", "alpha beta gamma", "alpha beta"])
    w_small, w_large = float(vecs[2] @ vecs[0]) + 1e-6, float(vecs[2] @ vecs[1]) + 1e-6
    assert result.score == pytest.approx(w_large / (w_small + w_large), abs=1e-4)
    assert result.tier == "small"  # the nearer neighbour has the heavier vote


def test_ties_go_to_the_pricier_tier() -> None:
    clf = NearestNeighbourClassifier.fit([("same text", "small"), ("same text", "large")], k=2)
    assert clf.classify("same text").tier == "large"


def test_k_larger_than_the_examples_uses_them_all() -> None:
    clf = NearestNeighbourClassifier.fit(EXAMPLES[:2], k=50)
    assert clf.classify("anything").reason.startswith("2 of 2 nearest")


def test_explicit_tiers_order_and_unseen_tiers() -> None:
    clf = NearestNeighbourClassifier.fit(
        [("a b", "cheap"), ("c d", "pricey")], tiers=("cheap", "mid", "pricey")
    )
    assert clf.tiers == ("cheap", "mid", "pricey")
    assert NearestNeighbourClassifier.fit([("x", "pro"), ("y", "lite")]).tiers == ("pro", "lite")


def test_a_custom_embedder_is_used_and_its_calls_are_overhead() -> None:
    seen: list[tuple[list[str], str | None]] = []

    def embed(texts: Sequence[str]) -> list[list[float]]:
        seen.append((list(texts), current_attribution().overhead))
        return [[1.0, 0.0] if "easy" in t else [0.0, 1.0] for t in texts]

    clf = NearestNeighbourClassifier.fit([("easy one", "small"), ("hard one", "large")], embedder=embed, k=1)
    assert clf.classify("an easy question").tier == "small"
    assert seen[0] == (["easy one", "hard one"], None)  # fitting is the app's own work
    assert seen[1] == (["an easy question"], "router")  # classifying is the router's overhead


class TwoWayEmbeddings:
    """Shaped like a LangChain ``Embeddings``: a sync and an async path."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    @staticmethod
    def _vectors(texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "easy" in t else [0.0, 1.0] for t in texts]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(("sync", current_attribution().overhead))
        return self._vectors(texts)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(("async", current_attribution().overhead))
        return self._vectors(texts)


async def test_aclassify_uses_the_async_embedder() -> None:
    emb = TwoWayEmbeddings()
    clf = NearestNeighbourClassifier.fit([("easy", "small"), ("hard", "large")], embedder=emb, k=1)
    assert (await clf.aclassify("hard problem")).tier == "large"
    assert emb.calls == [("sync", None), ("async", "router")]
    default = NearestNeighbourClassifier.fit(EXAMPLES, k=3)
    assert await default.aclassify("what is the capital of peru") == default.classify(
        "what is the capital of peru"
    )


def test_it_routes_inside_a_tier_router() -> None:
    router = TierRouter(MODELS, classifier=NearestNeighbourClassifier.fit(EXAMPLES, k=3))
    d = router.route("Design a sharded ledger and analyze failure modes")
    assert (d.tier, d.rule) == ("large", "knn")
    assert d.reason.startswith("classifier: ")


# -- evaluate ------------------------------------------------------------------------------------------


def priced(model: str, text: str, out: int) -> Decimal:
    n = TokenCounter.for_model(model).count_messages([{"role": "user", "content": text}])
    return cost_of(Usage(input_tokens=int(n), output_tokens=out), model)


def test_evaluate_reports_accuracy_routing_errors_and_money() -> None:
    labelled = [
        ("What is the capital of Peru?", "small"),  # right
        ("Design a sharded database and analyze its failure modes under partitions.", "large"),  # right
        ("Design a sharded database and analyze its failure modes.", "small"),  # over-routed
        ("What is a token?", "large"),  # under-routed, and a complex one
    ]
    clf = HeuristicClassifier()
    got = [clf.classify(t).tier for t, _ in labelled]
    assert got == ["small", "large", "large", "small"]
    ev = evaluate(clf, labelled, models=MODELS, output_tokens=100)
    assert isinstance(ev, Evaluation)
    assert (ev.n, ev.accuracy, ev.under_routed, ev.over_routed) == (4, 0.5, 0.25, 0.25)
    assert ev.complex_under_routed == 0.5
    assert ev.confusion == {
        ("small", "small"): 1,
        ("large", "large"): 1,
        ("small", "large"): 1,
        ("large", "small"): 1,
    }
    expected = sum(priced(MODELS[g], t, 100) for (t, _), g in zip(labelled, got, strict=True))
    premium = sum(priced("gpt-4o", t, 100) for t, _ in labelled)
    assert ev.cost_usd == expected
    assert ev.premium_cost_usd == premium
    assert ev.saved_share == pytest.approx(float(1 - expected / premium))
    d = ev.as_dict()
    assert d["confusion"]["large->small"] == 1
    assert Decimal(d["cost_usd"]) == expected


def test_always_premium_saves_nothing() -> None:
    class Premium:
        tiers = ("small", "large")

        def classify(self, text: str) -> Classification:
            return Classification(tier="large", score=1.0, reason="premium")

        async def aclassify(self, text: str) -> Classification:
            return self.classify(text)

    ev = evaluate(Premium(), [("hi", "small"), ("design", "large")], models=MODELS)
    assert ev.saved_share == 0.0
    assert ev.cost_usd == ev.premium_cost_usd
    assert (ev.over_routed, ev.under_routed, ev.complex_under_routed) == (0.5, 0.0, 0.0)


def test_fitted_on_its_own_examples_it_scores_perfectly() -> None:
    clf = NearestNeighbourClassifier.fit(EXAMPLES, k=1)
    ev = evaluate(clf, EXAMPLES, models=MODELS)
    assert ev.accuracy == 1.0
    assert 0 < ev.saved_share < 1


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("examples", "kwargs", "field"),
    [
        ([], {}, "examples"),
        ("what is a token", {}, "examples"),
        ([("a", "small", "x")], {}, "examples[0]"),
        ([(1, "small")], {}, "examples[0][0]"),
        ([("a", "")], {}, "examples[0][1]"),
        ([("a", "huge")], {"tiers": ("small", "large")}, "examples[0][1]"),
        ([("a", "small")], {"k": 0}, "k"),
        ([("a", "small")], {"tiers": ()}, "tiers"),
        ([("a", "small")], {"embedder": 42}, "embedder"),
    ],
)
def test_bad_fits_are_named(examples: object, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        NearestNeighbourClassifier.fit(examples, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_non_string_prompt_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="text"):
        NearestNeighbourClassifier.fit(EXAMPLES).classify(None)  # type: ignore[arg-type]


def test_an_embedder_returning_garbage_is_named() -> None:
    with pytest.raises(InvalidInputError, match="one non-empty vector per text"):
        NearestNeighbourClassifier.fit(EXAMPLES, embedder=lambda texts: np.zeros((1, 3)))


@pytest.mark.parametrize(
    ("labelled", "kwargs", "field"),
    [
        ([], {"models": MODELS}, "labelled"),
        ([("hi", "gold")], {"models": MODELS}, "labelled[0][1]"),
        ([("hi", "small")], {"models": {"small": "gpt-4o-mini"}}, "models"),
        ([("hi", "small")], {"models": ["gpt-4o"]}, "models"),
        ([("hi", "small")], {"models": MODELS, "output_tokens": -1}, "output_tokens"),
    ],
)
def test_bad_evaluations_are_named(labelled: object, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        evaluate(HeuristicClassifier(), labelled, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_evaluate_with_an_unknown_model_says_so() -> None:
    with pytest.raises(UnknownModelError):
        evaluate(HeuristicClassifier(), [("hi", "small")], models={**MODELS, "large": "gpt-9-ultra"})
