"""The semantic cache's guard, review s29: near-duplicates that differ where the guard used to look
away are not served by the default :class:`SemanticCache` (hashing embedder, threshold 0.92).

* reversed ``from`` / ``to`` where what differs is a number or a one-letter name, and the same
  numbers in another order ("from 5 pm to 3 pm", ``2025-04-03`` / ``2025-03-04``);
* a number glued to letters (``v2.1`` / ``v2.2``, ``python3.10`` / ``python3.12``);
* a content word swapped one for one with a function word (``7 am`` / ``7 pm``, ``plan a`` /
  ``plan b``, ``to us`` / ``to uk``);
* code differing in indentation, case or a slice's colon.

Each pair is first served with the guard off (the embedding alone cannot tell them apart), then
refused with the defaults, both ways; near-duplicates of the same kind are still served.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenbudget_core import InvalidInputError, Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import GuardFeatures, compare, guard_features

S = CacheScope(tenant="bank", user="u-1", feature="assistant")


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


def served(stored: str, asked: str, *, guard: bool = True, threshold: float | None = None) -> str | None:
    """What a fresh cache holding ``stored``'s answer serves for ``asked`` (``None``: a miss)."""
    cache = (
        SemanticCache(guard=guard) if threshold is None else SemanticCache(guard=guard, threshold=threshold)
    )
    answer = CachedResponse(
        content=f"answer to: {stored}", model="gpt-4o-mini", usage=Usage(input_tokens=20, output_tokens=10)
    )
    cache.store(ask(stored), answer, scope=S)
    hit = cache.lookup(ask(asked), scope=S)
    return None if hit is None else hit.response.content


def assert_refused(stored: str, asked: str, reason: str) -> None:
    # The embedding alone serves it (at 0.8; at the default 0.92 for the reviewer's own pairs).
    assert served(stored, asked, guard=False, threshold=0.8) is not None
    assert served(stored, asked, threshold=0.8) is None
    assert served(asked, stored, threshold=0.8) is None
    assert served(stored, asked) is None  # and with the defaults
    assert compare(guard_features(stored), guard_features(asked)) == reason
    assert compare(guard_features(asked), guard_features(stored)) == reason


# -- 1. reversed from / to, numbers in another order ------------------------------------------

REVERSED = [
    pytest.param(
        "Please transfer 500 dollars from account 1234 to account 5678 today",
        "Please transfer 500 dollars from account 5678 to account 1234 today",
        "numbers differ",
        id="accounts-reversed",
    ),
    pytest.param(  # the same numbers in the same order: only the roles tell them apart
        "Please transfer 500 dollars from account 1234 to account 5678 today",
        "Please transfer 500 dollars to account 1234 from account 5678 today",
        "word roles differ",
        id="accounts-roles-swapped",
    ),
    pytest.param(
        "move the meeting from 3 pm to 5 pm on friday for the whole marketing team please",
        "move the meeting from 5 pm to 3 pm on friday for the whole marketing team please",
        "numbers differ",
        id="times-reversed",
    ),
    pytest.param(
        "move the files from folder A to folder B",
        "move the files from folder B to folder A",
        "word roles differ",
        id="letters-reversed",
    ),
    pytest.param(
        "Please book the large meeting room for our quarterly planning session on 2025-03-04 for the "
        "whole day",
        "Please book the large meeting room for our quarterly planning session on 2025-04-03 for the "
        "whole day",
        "numbers differ",
        id="date-day-month-swapped",
    ),
]


@pytest.mark.parametrize(("stored", "asked", "reason"), REVERSED)
def test_a_reversed_transfer_move_or_date_is_not_served(stored: str, asked: str, reason: str) -> None:
    assert_refused(stored, asked, reason)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("move the files from folder A to folder B", "Move the files from folder A to folder B, please!"),
        ("move the files from folder A to folder B", "move the files to folder B from folder A"),
        ("Move my flight from Paris to London tomorrow", "Move my flight tomorrow from Paris to London"),
        ("convert 100 usd to eur", "convert 100 USD into EUR"),
    ],
)
def test_the_same_from_and_to_in_other_words_still_match(stored: str, asked: str) -> None:
    assert compare(guard_features(stored), guard_features(asked)) is None
    assert compare(guard_features(asked), guard_features(stored)) is None


def test_the_same_numbers_reordered_are_a_miss_the_documented_cost_of_ordered_numbers() -> None:
    stored = "Transfer 500 dollars from account 1234 to account 5678"
    asked = "Transfer 500 dollars to account 5678 from account 1234"
    assert compare(guard_features(stored), guard_features(asked)) == "numbers differ"


# -- 2. numbers glued to letters -----------------------------------------------------------------

GLUED = [
    pytest.param(
        "What are the breaking changes I need to handle when I upgrade our backend service to the Python "
        "client library v2.1 from the previous release",
        "What are the breaking changes I need to handle when I upgrade our backend service to the Python "
        "client library v2.2 from the previous release",
        id="v2.1-v2.2",
    ),
    pytest.param(
        "How do I install numpy and pandas on python3.10 inside a fresh virtual environment on my "
        "ubuntu laptop",
        "How do I install numpy and pandas on python3.12 inside a fresh virtual environment on my "
        "ubuntu laptop",
        id="python3.10-python3.12",
    ),
    pytest.param(
        "What changed in the privacy settings of iOS17.4 for the photos app on an iphone",
        "What changed in the privacy settings of iOS17.5 for the photos app on an iphone",
        id="ios17.4-ios17.5",
    ),
]


@pytest.mark.parametrize(("stored", "asked"), GLUED)
def test_a_version_glued_to_its_name_is_compared_as_written(stored: str, asked: str) -> None:
    assert_refused(stored, asked, "numbers differ")


def test_the_same_glued_version_still_matches() -> None:
    stored = "How do I install numpy on python3.10 inside a fresh virtual environment?"
    assert served(stored, stored.lower().rstrip("?")) == f"answer to: {stored}"
    assert compare(guard_features("upgrade to v2.10"), guard_features("upgrade to v2.1")) == "numbers differ"


# -- 3. a content word for a function word -------------------------------------------------------

SWAPPED_IN_PLACE = [
    pytest.param(
        "Please schedule the weekly team sync meeting for tomorrow at 7 pm in the main conference room",
        "Please schedule the weekly team sync meeting for tomorrow at 7 am in the main conference room",
        id="pm-am",
    ),
    pytest.param(
        "which features and usage limits are included in plan b for small teams on the monthly billing cycle",
        "which features and usage limits are included in plan a for small teams on the monthly billing cycle",
        id="plan-b-plan-a",
    ),
    pytest.param(
        "how long does standard shipping to us take for a large parcel",
        "how long does standard shipping to uk take for a large parcel",
        id="us-uk",
    ),
]


@pytest.mark.parametrize(("stored", "asked"), SWAPPED_IN_PLACE)
def test_a_word_swapped_for_a_function_word_is_a_substitution(stored: str, asked: str) -> None:
    assert_refused(stored, asked, "content words differ")


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How do I reset my password?", "How do I reset the password?"),
        ("How do I track my order?", "Where can I track my order?"),
        ("Can you tell me the price of the pro plan?", "What is the price of the pro plan?"),
        ("How do I add a user to my team?", "How can I add a new user to my team?"),
        ("Explain tokens to me", "Explain tokens simply"),
    ],
)
def test_function_words_reworded_or_added_still_match(stored: str, asked: str) -> None:
    assert compare(guard_features(stored), guard_features(asked)) is None
    assert compare(guard_features(asked), guard_features(stored)) is None


# -- 6. code -------------------------------------------------------------------------------------

CODE = [
    pytest.param(
        "What does this Python print?\nfor i in range(3):\n    print(i)\nprint('done')",
        "What does this Python print?\nfor i in range(3):\n    print(i)\n    print('done')",
        id="indentation",
    ),
    pytest.param(
        "In Python, with x = [1, 2, 3, 4, 5], what is x[:2]?",
        "In Python, with x = [1, 2, 3, 4, 5], what is x[::2]?",
        id="slice-colon",
    ),
    pytest.param(
        "In Python, after Total = 1 and total = 2, what does print(Total) show?",
        "In Python, after Total = 1 and total = 2, what does print(total) show?",
        id="case",
    ),
    pytest.param(
        "What does ```\nif a == b:\n    return X\n``` return when a is 1 and b is 1?",
        "What does ```\nif a == b:\n    return x\n``` return when a is 1 and b is 1?",
        id="fenced-case",
    ),
    pytest.param(
        "In a shell, what does `ls -la` show in my home directory on a linux machine?",
        "In a shell, what does `ls -LA` show in my home directory on a linux machine?",
        id="backticks-case",
    ),
]


@pytest.mark.parametrize(("stored", "asked"), CODE)
def test_code_differing_in_indentation_case_or_a_colon_is_not_served(stored: str, asked: str) -> None:
    assert_refused(stored, asked, "code differs")


def test_the_same_code_is_still_served_and_its_prose_may_be_reworded() -> None:
    code = "```python\nfor i in range(3):\n    print(i)\n```"
    assert (
        compare(
            guard_features(f"What does this print? {code}"), guard_features(f"what does this print {code}")
        )
        is None
    )
    # Only the fenced block is code: the prose around it is compared as prose.
    assert compare(guard_features(f"Explain {code}"), guard_features(f"Please explain {code}")) is None
    assert (
        compare(guard_features(f"Explain {code}"), guard_features(f"Explain {code.replace('3', '4')}"))
        == "numbers differ"
    )
    # Trailing whitespace is no code; the same prompt is served.
    stored = "In Python, with x = [1, 2, 3, 4, 5], what is x[::2]?"
    assert served(stored, stored + "  ") == f"answer to: {stored}"
    # Prose alone is no code: its case is still folded ("file(s)" is no call).
    assert (
        compare(guard_features("Which file(s) do I need?"), guard_features("which file(s) do i need")) is None
    )


# -- the stored features -------------------------------------------------------------------------


def test_the_new_features_survive_the_json_of_a_cache_entry_without_plaintext() -> None:
    text = "Transfer 500 dollars from account 1234 to account 5678 at 7 pm: run `pay(x[::2])` on v2.1"
    features = guard_features(text)
    data = json.loads(json.dumps(features.to_json()))
    assert GuardFeatures.from_json(data) == features
    assert features.code is not None
    assert len(features.sequence) > 10
    dumped = json.dumps(data)
    for word in ("transfer", "account", "1234", "pay", "v2.1", "pm"):
        assert word not in dumped.casefold()


def _stored(**changes: Any) -> dict[str, Any]:
    data = guard_features("move the files from folder A to folder B").to_json()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        _stored(seq=[999]),
        _stored(seq=[-1]),
        _stored(seq=[True]),
        _stored(seq="0 1"),
        _stored(seq=None),
        _stored(forms=[1, 2]),
        _stored(code=5),
        {k: v for k, v in _stored().items() if k != "seq"},
        {**_stored(), "v": 3},  # stored by the guard before this review: not trusted
    ],
    ids=["index-out-of-range", "negative", "bool", "string", "null", "int-forms", "int-code", "no-seq", "v3"],
)
def test_malformed_or_older_features_are_refused_with_a_named_error(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="guard"):
        GuardFeatures.from_json(data)
