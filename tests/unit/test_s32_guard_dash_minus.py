"""A dash standing for a minus sign is a minus sign (review s32, finding 4).

Word processors turn "-5" into an en dash and "5". The guard read only ``-`` and ``+`` as a sign
and left the en dash out of the symbols (as sentence punctuation), so "Is \u20135 degrees cold?"
was served for "Is 5 degrees cold?" (score 1.0). Every dash read as a minus before a number
(figure, en and em dash, the minus sign, the small and the wide hyphen-minus) now is one; a dash
between two numbers ("10\u201320") is still a range, not a negative number.
"""

from __future__ import annotations

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import compare, guard_features

DASHES = ["\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"]
S = CacheScope(tenant="acme", user="u-1")


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


@pytest.mark.parametrize("dash", DASHES)
@pytest.mark.parametrize(
    ("signed", "unsigned"),
    [
        ("Is {}5 degrees cold?", "Is 5 degrees cold?"),
        ("Set the offset to {}3 hours", "Set the offset to 3 hours"),
        ("What is the square root of {}1?", "What is the square root of 1?"),
    ],
)
def test_a_number_after_a_dash_for_a_minus_is_not_the_positive_number(
    dash: str, signed: str, unsigned: str
) -> None:
    a, b = guard_features(signed.format(dash)), guard_features(unsigned)
    assert compare(a, b) is not None
    assert compare(b, a) is not None


@pytest.mark.parametrize("dash", DASHES)
def test_a_dash_for_a_minus_reads_as_the_same_negative_number(dash: str) -> None:
    minus = guard_features("Is -5 degrees cold?").numbers
    assert guard_features(f"Is {dash}5 degrees cold?").numbers == minus
    assert guard_features(f"{dash}1,000 dollars").numbers == guard_features("-1000 dollars").numbers


@pytest.mark.parametrize("dash", DASHES)
def test_a_dash_between_two_numbers_or_inside_a_word_is_no_sign(dash: str) -> None:
    assert guard_features(f"pages 10{dash}20").numbers == guard_features("pages 10 20").numbers
    assert guard_features(f"GPT{dash}4 or v2{dash}3").numbers == guard_features("GPT 4 or v2 3").numbers


def test_the_semantic_cache_does_not_serve_the_unsigned_question_for_the_en_dash_one() -> None:
    cache = SemanticCache(threshold=0.9)
    answer = CachedResponse(content="yes", model="gpt-4o-mini", usage=Usage(output_tokens=1))
    assert cache.store(ask("Is \u20135 degrees cold?"), answer, scope=S)
    assert cache.lookup(ask("Is \u20135 degrees cold?"), scope=S) is not None  # (the same question)
    assert cache.lookup(ask("Is 5 degrees cold?"), scope=S) is None


def test_a_dash_for_a_minus_reads_as_the_minus_it_stands_for() -> None:
    """(regression review s32) The numbers matched, but the symbols did not: the dash was left out
    of them as prose punctuation while the hyphen-minus was counted."""
    for dash in ("\u2013", "\u2212", "\u2014"):
        assert (
            compare(guard_features(f"Is {dash}5 degrees cold?"), guard_features("Is -5 degrees cold?"))
            is None
        )
