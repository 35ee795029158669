"""The learned classifiers (nearest neighbours, linear) and evaluate(): judged in accuracy and money."""

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
    LinearComplexityClassifier,
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
    pairs = [("x", "pro"), ("y", "lite")]
    assert NearestNeighbourClassifier.fit(pairs, tiers=["lite", "pro"]).tiers == ("lite", "pro")
    assert NearestNeighbourClassifier.fit([("x", "pro")]).tiers == ("pro",)  # one label: no order


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


# -- the linear classifier -----------------------------------------------------------------------------

SUBJECTS = ["france", "spain", "peru", "japan", "kenya", "chile", "norway", "egypt", "canada", "india"]
SYSTEMS = [
    "payments",
    "search",
    "billing",
    "chat",
    "inventory",
    "ledger",
    "checkout",
    "auth",
    "feeds",
    "maps",
]


def separable(subjects: Sequence[str], systems: Sequence[str]) -> list[tuple[str, str]]:
    """Three clearly different kinds of prompt, one per tier."""
    out: list[tuple[str, str]] = []
    for s in subjects:
        out.append((f"What is the capital of {s}?", "small"))
        out.append((f"How many people live in {s}?", "small"))
    for s in systems:
        out.append((f"Write a short email to the {s} team about Friday's release.", "medium"))
        out.append((f"Write a python function that formats {s} records as csv.", "medium"))
        out.append(
            (
                f"Design a distributed {s} service for 20 million users, analyze its failure modes and "
                "the trade-offs between consistency and latency, and propose a migration plan.",
                "large",
            )
        )
    return out


TRAIN = separable(SUBJECTS[:7], SYSTEMS[:7])
HELD_OUT = separable(SUBJECTS[7:], SYSTEMS[7:])


def test_linear_classifies_held_out_prompts_of_a_learned_pattern() -> None:
    clf = LinearComplexityClassifier.fit(TRAIN)
    assert clf.tiers == ("small", "medium", "large")
    assert isinstance(clf, ComplexityClassifier)
    for text, label in HELD_OUT:
        assert clf.classify(text).tier == label, text
    ev = evaluate(clf, HELD_OUT, models=MODELS)
    assert (ev.accuracy, ev.under_routed, ev.over_routed) == (1.0, 0.0, 0.0)
    assert ev.saved_share > 0


def test_linear_score_reason_and_probabilities() -> None:
    clf = LinearComplexityClassifier.fit(TRAIN)
    easy, hard = HELD_OUT[0][0], HELD_OUT[-1][0]
    e, h = clf.classify(easy), clf.classify(hard)
    assert 0.0 <= e.score < h.score <= 1.0
    assert e.rules == h.rules == ("linear",)
    probs = clf.probabilities(hard)
    assert list(probs) == list(clf.tiers)
    assert sum(probs.values()) == pytest.approx(1.0)
    assert max(probs, key=lambda t: probs[t]) == h.tier == "large"
    expected = sum(i * p for i, p in enumerate(probs.values())) / 2
    assert h.score == pytest.approx(expected, abs=1e-4)
    assert h.reason.startswith(f"p(large)={probs['large']:.2f} (")


def test_linear_fits_are_deterministic() -> None:
    a, b = LinearComplexityClassifier.fit(TRAIN), LinearComplexityClassifier.fit(list(TRAIN))
    prompts = [t for t, _ in HELD_OUT] + [t for t, _ in EXAMPLES]
    assert [a.classify(t) for t in prompts] == [b.classify(t) for t in prompts]
    assert [a.probabilities(t) for t in prompts] == [b.probabilities(t) for t in prompts]


def test_the_under_routing_penalty_moves_prompts_up_a_tier_never_down() -> None:
    prompts = (
        [t for t, _ in HELD_OUT]
        + [t for t, _ in EXAMPLES]
        + [
            "Write a plan for the chat team.",
            "What should we do about the billing service?",
            "Explain the capital of kenya in a short email.",
        ]
    )
    rank = {"small": 0, "medium": 1, "large": 2}

    def tiers(penalty: float) -> list[int]:
        clf = LinearComplexityClassifier.fit(TRAIN, l2=1.0, under_routing_penalty=penalty)
        return [rank[clf.classify(t).tier] for t in prompts]

    cautious, neutral, thrifty = tiers(20.0), tiers(1.0), tiers(0.05)
    assert all(c >= n >= t for c, n, t in zip(cautious, neutral, thrifty, strict=True))
    assert sum(cautious) > sum(neutral) > sum(thrifty)
    unsure = LinearComplexityClassifier.fit(TRAIN, l2=1.0, under_routing_penalty=20.0)
    mixed = [(t, label) for t, label in [*HELD_OUT, *EXAMPLES]]
    plain = LinearComplexityClassifier.fit(TRAIN, l2=1.0)
    assert (
        evaluate(unsure, mixed, models=MODELS).under_routed
        <= evaluate(plain, mixed, models=MODELS).under_routed
    )


def test_embedding_weight_zero_leaves_the_wording_out() -> None:
    clf = LinearComplexityClassifier.fit(TRAIN, embedding_weight=0.0)
    # same signals (no rule fires, same length and punctuation), different words
    assert clf.probabilities("Tell me about zebras.") == pytest.approx(
        clf.probabilities("Tell me about llamas.")
    )
    assert "wording" not in clf.classify("Tell me about zebras.").reason


def test_linear_uses_a_custom_embedder_and_routes_inside_a_tier_router() -> None:
    seen: list[str | None] = []

    def embed(texts: Sequence[str]) -> list[list[float]]:
        seen.append(current_attribution().overhead)
        return [[1.0, 0.0] if "capital" in t else [0.0, 1.0] for t in texts]

    clf = LinearComplexityClassifier.fit(TRAIN, embedder=embed)
    assert clf.classify(HELD_OUT[0][0]).tier == "small"
    assert seen == [None, "router"]  # fitting is the app's own work, classifying the router's
    d = TierRouter(MODELS, classifier=LinearComplexityClassifier.fit(TRAIN)).route(HELD_OUT[-1][0])
    assert (d.tier, d.rule) == ("large", "linear")


async def test_linear_aclassify_uses_the_async_embedder() -> None:
    emb = TwoWayEmbeddings()
    clf = LinearComplexityClassifier.fit([("easy one", "small"), ("hard one", "large")], embedder=emb)
    assert (await clf.aclassify("hard problem")).tier == "large"
    assert emb.calls == [("sync", None), ("async", "router")]
    default = LinearComplexityClassifier.fit(TRAIN)
    for text, _ in HELD_OUT:
        assert await default.aclassify(text) == default.classify(text)


@pytest.mark.parametrize(
    ("examples", "kwargs", "field"),
    [
        ([], {}, "examples"),
        ([("a", "small"), ("b", "small")], {}, "examples"),  # a single class
        ([("a", "small"), ("b", "huge")], {"tiers": ("small", "large")}, "examples[1][1]"),
        ([("a", "small"), (7, "large")], {}, "examples[1][0]"),
        (TRAIN, {"l2": 0}, "l2"),
        (TRAIN, {"l2": float("nan")}, "l2"),
        (TRAIN, {"iterations": 0}, "iterations"),
        (TRAIN, {"iterations": 2.5}, "iterations"),
        (TRAIN, {"under_routing_penalty": 0}, "under_routing_penalty"),
        (TRAIN, {"under_routing_penalty": -1.0}, "under_routing_penalty"),
        (TRAIN, {"under_routing_penalty": True}, "under_routing_penalty"),
        (TRAIN, {"under_routing_penalty": "high"}, "under_routing_penalty"),
        (TRAIN, {"embedding_weight": -1}, "embedding_weight"),
        (TRAIN, {"balanced": "yes"}, "balanced"),
        (TRAIN, {"rules": [42]}, "rules[0]"),
        (TRAIN, {"rules": "analyze"}, "rules"),
        (TRAIN, {"embedder": 42}, "embedder"),
    ],
)
def test_bad_linear_fits_are_named(examples: object, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        LinearComplexityClassifier.fit(examples, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


async def test_linear_refuses_a_non_string_prompt() -> None:
    clf = LinearComplexityClassifier.fit(TRAIN)
    for call in (clf.classify, clf.probabilities):
        with pytest.raises(InvalidInputError) as err:
            call(b"bytes")  # type: ignore[arg-type]
        assert err.value.field == "text"
    with pytest.raises(InvalidInputError, match="text"):
        await clf.aclassify(None)  # type: ignore[arg-type]


CUSTOM = [
    ("Design a sharded database and debug replication lag across regions", "pro"),
    ("What is the capital of France?", "mini"),
    ("Write a migration plan for a multi-tenant Postgres cluster with zero downtime", "pro"),
    ("How do I reset my password?", "mini"),
]
CUSTOM_MODELS = {"mini": "gpt-4o-mini", "pro": "gpt-4o"}


@pytest.mark.parametrize("fit", [NearestNeighbourClassifier.fit, LinearComplexityClassifier.fit])
def test_custom_labels_need_their_order(fit: object) -> None:
    # "pro" comes first in the examples: taken as the cheapest tier, the hard prompt scored 0.0
    # and evaluate() called a perfect classifier 785% more expensive than always-premium.
    with pytest.raises(InvalidInputError, match="tiers=") as err:
        fit(CUSTOM)  # type: ignore[operator]
    assert err.value.field == "tiers"
    clf = fit(CUSTOM, tiers=("mini", "pro"))  # type: ignore[operator]
    assert clf.tiers == ("mini", "pro")
    router = TierRouter(CUSTOM_MODELS, classifier=clf)
    hard = router.route(CUSTOM[0][0])
    assert hard.tier == "pro"
    assert hard.score is not None
    assert hard.score > 0.5
    ev = evaluate(clf, CUSTOM, models=CUSTOM_MODELS)
    assert ev.under_routed == 0
    assert 0 < ev.saved_share < 1


def test_a_router_refuses_a_classifier_ordering_its_tiers_the_other_way() -> None:
    clf = NearestNeighbourClassifier.fit(CUSTOM, tiers=("pro", "mini"), k=1)
    with pytest.raises(InvalidInputError, match="cheapest first") as err:
        TierRouter(CUSTOM_MODELS, classifier=clf)
    assert err.value.field == "classifier"
    medium_first = HeuristicClassifier(tiers=("medium", "small"))
    with pytest.raises(InvalidInputError, match="cheapest first"):
        TierRouter(MODELS, classifier=medium_first)
    assert TierRouter(MODELS, classifier=HeuristicClassifier(tiers=("small", "large"))).tiers == MODELS


def test_evaluate_refuses_a_premium_tier_cheaper_than_the_first() -> None:
    clf = NearestNeighbourClassifier.fit(CUSTOM, tiers=("pro", "mini"), k=1)
    with pytest.raises(InvalidInputError, match="cheapest first") as err:
        evaluate(clf, CUSTOM, models=CUSTOM_MODELS)
    assert err.value.field == "models"
