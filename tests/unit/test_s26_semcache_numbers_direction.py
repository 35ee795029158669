"""Version numbers and direction words are part of the question (review s26, finding 3).

Before: the guard dropped trailing zeros of dotted numbers ("Python 3.10" matched "Python 3.1",
"1.000 EUR" matched "1 EUR") and let a flipped direction through ("migrate to Postgres" /
"migrate from Postgres", "before" / "after meals"): with an embedder rating such pairs above the
threshold, the cached answer to the other question was served.
"""

from __future__ import annotations

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import compare, guard_features

T = CacheScope(tenant="t")


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


def served(stored: str, asked: str, *, guard: bool = True) -> bool:
    # 0.7: what a sentence-embedding model gives such pairs (the hashing embedder scores each >= 0.7)
    cache = SemanticCache(threshold=0.7, guard=guard)
    answer = CachedResponse(
        content="ANSWER", model="gpt-4o-mini", usage=Usage(input_tokens=9, output_tokens=5)
    )
    assert cache.store(ask(stored), answer, scope=T)
    return cache.lookup(ask(asked), scope=T) is not None


NUMBERS = [
    ("What is new in Python 3.10?", "What is new in Python 3.1?"),
    ("Send 1.000 EUR to Bob", "Send 1 EUR to Bob"),
    ("Upgrade guide from Django 2.0 to 3.0", "Upgrade guide from Django 2 to 3"),
    ("Is version 1.20 compatible?", "Is version 1.2 compatible?"),
]


@pytest.mark.parametrize(("stored", "asked"), NUMBERS)
def test_numbers_written_differently_are_different_questions(stored: str, asked: str) -> None:
    assert served(stored, asked, guard=False)  # the embedding alone serves it
    assert not served(stored, asked)
    assert compare(guard_features(stored), guard_features(asked)) == "numbers differ"


def test_thousands_separators_are_the_same_number_but_trailing_zeros_are_not() -> None:
    assert compare(guard_features("Send 1,000 EUR to Bob"), guard_features("send 1000 EUR to Bob")) is None
    assert compare(guard_features("Pay 1,250.50 USD"), guard_features("pay 1250.50 usd")) is None
    assert compare(guard_features("Pay 1,250.50 USD"), guard_features("pay 1250.5 usd")) == "numbers differ"


DIRECTIONS = [
    ("Cheapest flights to Paris tomorrow", "Cheapest flights from Paris tomorrow"),
    ("Transfer 50 dollars to my savings account", "Transfer 50 dollars from my savings account"),
    ("How do I migrate to Postgres?", "How do I migrate from Postgres?"),
    ("Should I take the tablets before meals?", "Should I take the tablets after meals?"),
    ("Can I fly with a battery over 100Wh?", "Can I fly with a battery under 100Wh?"),
    ("How do I turn on dark mode in the app?", "How do I turn off dark mode in the app?"),
    ("Why can I not log in to my account?", "Why can I not log out of my account?"),
]


@pytest.mark.parametrize(("stored", "asked"), DIRECTIONS)
def test_a_flipped_direction_is_not_served(stored: str, asked: str) -> None:
    assert served(stored, asked, guard=False)
    assert not served(stored, asked)
    assert not served(asked, stored)
    assert compare(guard_features(stored), guard_features(asked)) == "direction differs"


def test_adding_or_rewording_a_direction_word_is_the_same_question_flipping_it_is_not() -> None:
    same = [
        ("How do I reset my password?", "What is the way to reset my password?"),  # "to" added
        ("Transfer 50 dollars from checking to savings", "Transfer 50 dollars to savings from checking"),
        ("How do I sign in?", "How do I sign in to the app?"),
        ("Flights to Paris", "Flights into Paris"),
    ]
    for stored, asked in same:
        assert compare(guard_features(stored), guard_features(asked)) is None
        assert compare(guard_features(asked), guard_features(stored)) is None
    flipped = guard_features("Flights out of Paris")
    assert compare(guard_features("Flights into Paris"), flipped) == "direction differs"


PARTICLES = [
    ("How do I sign up?", "How do I sign in?"),
    ("How do I sign up for the newsletter?", "How do I sign in for the newsletter?"),
    ("Where can I drop off my bag?", "Where can I drop in my bag?"),
]


@pytest.mark.parametrize(("stored", "asked"), PARTICLES)
def test_a_different_verb_particle_is_a_different_question(stored: str, asked: str) -> None:
    assert served(stored, asked, guard=False)  # the embedding alone serves it
    assert not served(stored, asked)
    assert not served(asked, stored)
    assert compare(guard_features(stored), guard_features(asked)) == "direction differs"
    # a particle added or kept, with the rest reworded, is still the same question
    assert compare(guard_features(stored), guard_features(stored.replace("How do I", "How can I"))) is None
