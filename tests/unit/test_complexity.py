"""The default complexity classifier: rules, length, thresholds and bad input."""

from __future__ import annotations

import pytest

from tokenbudget_core import (
    Classification,
    ComplexityClassifier,
    HeuristicClassifier,
    InvalidInputError,
    Rule,
)
from tokenbudget_core.complexity import DEFAULT_RULES

PARAGRAPH = (
    "I have used this blender every morning for eight months. It crushes ice easily and the smoothies come "
    "out smooth. The jug is heavy though, and the lid started to crack near the hinge after half a year. "
) * 12


@pytest.mark.parametrize(
    "prompt",
    [
        "What is the capital of Australia?",
        "How do I reset my password?",
        "Define 'opportunity cost'.",
        "How many ounces are in a pound?",
    ],
)
def test_lookups_go_to_the_cheapest_tier(prompt: str) -> None:
    result = HeuristicClassifier().classify(prompt)
    assert result.tier == "small"
    assert "lookup" in result.rules


@pytest.mark.parametrize(
    "prompt",
    [
        "Design a multi-tenant booking system with recurring slots; analyze how it prevents double booking.",
        "Our Kafka consumers process messages twice after a rebalance. How would you debug it and make it "
        "exactly-once?",
        "Evaluate whether we should migrate from REST to GraphQL for our mobile API: 40 endpoints, 3 teams.",
    ],
)
def test_analysis_design_and_debugging_go_to_premium(prompt: str) -> None:
    assert HeuristicClassifier().classify(prompt).tier == "large"


def test_writing_tasks_land_in_the_middle() -> None:
    assert (
        HeuristicClassifier().classify("Write a Python script that prints monthly totals.").tier == "medium"
    )


def test_a_long_paste_to_translate_stays_cheap_but_the_same_paste_to_analyze_does_not() -> None:
    clf = HeuristicClassifier()
    easy = clf.classify(f"Translate this into French:\n\n{PARAGRAPH}")
    hard = clf.classify(f"{PARAGRAPH}\n\nAnalyze the risks this raises for us and propose a mitigation plan.")
    assert easy.tier == "small"
    assert "long prompt" in easy.reason
    assert hard.tier == "large"
    assert hard.score > easy.score


def test_length_alone_raises_the_score() -> None:
    clf = HeuristicClassifier()
    short = clf.classify("Tell me about the pilot.")
    long = clf.classify("Tell me about the pilot. " + PARAGRAPH)
    assert long.score == pytest.approx(short.score + clf.length_weight, abs=0.01)


def test_score_is_base_plus_rule_weights_and_the_reason_names_the_rules() -> None:
    rules = [
        Rule(name="legal", pattern=r"\bindemnif", weight=0.5),
        Rule(name="hello", pattern="^hi", weight=-0.1),
    ]
    clf = HeuristicClassifier(rules=rules, base=0.2, length_weight=0.0)
    result = clf.classify("Hi, does the indemnification clause cover us?")
    assert result.score == pytest.approx(0.2 + 0.5 - 0.1)
    assert result.rules == ("legal", "hello")
    assert result.reason == "score 0.60 (legal, hello)"
    assert result.tier == "large"
    assert clf.classify("nothing here").reason == "score 0.20 (no signals)"


def test_rules_match_case_insensitively() -> None:
    clf = HeuristicClassifier(rules=[Rule(name="x", pattern="deadlock", weight=0.5)], length_weight=0.0)
    assert clf.classify("DEADLOCK in prod").rules == ("x",)


def test_thresholds_cut_the_score_into_tiers() -> None:
    rules = [Rule(name="up", pattern="up", weight=0.3)]
    clf = HeuristicClassifier(
        tiers=("a", "b", "c", "d"), rules=rules, thresholds=(0.1, 0.5, 0.9), base=0.3, length_weight=0.0
    )
    assert clf.classify("flat").tier == "b"
    assert clf.classify("up").tier == "c"
    assert (
        HeuristicClassifier(tiers=("a", "b"), rules=[], base=0.0, length_weight=0.0).classify("x").tier == "a"
    )


def test_score_is_clamped_to_the_unit_interval() -> None:
    rules = [Rule(name=f"r{i}", pattern="x", weight=1.0) for i in range(3)]
    assert HeuristicClassifier(rules=rules).classify("x").score == 1.0
    down = [Rule(name=f"d{i}", pattern="x", weight=-1.0) for i in range(3)]
    assert HeuristicClassifier(rules=down, length_weight=0.0).classify("x").score == 0.0


def test_default_thresholds_for_other_tier_counts_are_even() -> None:
    assert HeuristicClassifier(tiers=("a", "b")).thresholds == (0.5,)
    assert HeuristicClassifier(tiers=("a", "b", "c", "d")).thresholds == (0.25, 0.5, 0.75)
    assert HeuristicClassifier(tiers=("only",)).classify("Design and analyze").tier == "only"


def test_it_is_a_complexity_classifier_with_an_async_twin() -> None:
    clf = HeuristicClassifier()
    assert isinstance(clf, ComplexityClassifier)
    assert isinstance(clf.classify("hi"), Classification)


async def test_aclassify_matches_classify() -> None:
    clf = HeuristicClassifier()
    prompt = "Why does this deadlock sometimes?"
    assert await clf.aclassify(prompt) == clf.classify(prompt)


def test_adding_to_the_default_rules() -> None:
    clf = HeuristicClassifier(rules=[*DEFAULT_RULES, Rule(name="legal", pattern="liability", weight=0.6)])
    assert clf.classify("What is our liability?").tier == "large"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tiers": ()}, "tiers"),
        ({"tiers": "small"}, "tiers"),
        ({"tiers": ("a", "a")}, "tiers"),
        ({"tiers": ("a", "")}, "tiers[1]"),
        ({"thresholds": (0.5,)}, "thresholds"),
        ({"thresholds": (0.6, 0.4)}, "thresholds"),
        ({"thresholds": (0.0, 0.5)}, "thresholds[0]"),
        ({"thresholds": (0.5, 1.0)}, "thresholds[1]"),
        ({"rules": [("x", "y", 1)]}, "rules[0]"),
        ({"rules": "analyze"}, "rules"),
        ({"long_prompt_tokens": 0}, "long_prompt_tokens"),
        ({"base": 1.5}, "base"),
        ({"length_weight": -0.1}, "length_weight"),
    ],
)
def test_bad_configuration_is_named(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        HeuristicClassifier(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "pattern": "x", "weight": 0.1}, "rule.name"),
        ({"name": "r", "pattern": "(", "weight": 0.1}, "rules['r'].pattern"),
        ({"name": "r", "pattern": "", "weight": 0.1}, "rules['r'].pattern"),
        ({"name": "r", "pattern": "x", "weight": 2}, "rules['r'].weight"),
        ({"name": "r", "pattern": "x", "weight": float("nan")}, "rules['r'].weight"),
        ({"name": "r", "pattern": "x", "weight": True}, "rules['r'].weight"),
    ],
)
def test_bad_rules_are_named(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        Rule(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_non_string_prompt_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="text: must be a string"):
        HeuristicClassifier().classify(["hi"])  # type: ignore[arg-type]
