"""Prompts that differ only in a symbol ask different questions (review s26, finding 1).

Before: the default embedder drops symbols and the guard read only words, so with default settings
"What is 12 + 7?" was served the cached answer to "What is 12 * 7?" with score 1.0 (also ``$`` /
``€``, ``>`` / ``<``, ``C++`` / ``C#``, ``^`` / ``*``, ``+`` / ``-``, ``%``, ``~/`` / ``./``).
"""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import TokenBudgetLLMCache
from tokenbudget_core import Usage, attribute
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import compare, guard_features

T = CacheScope(tenant="t")


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


def answer(text: str) -> CachedResponse:
    return CachedResponse(content=text, model="gpt-4o-mini", usage=Usage(input_tokens=10, output_tokens=5))


SYMBOL_SWAPS = [
    ("What is 12 * 7?", "What is 12 + 7?"),
    ("Convert $100 to yen", "Convert €100 to yen"),
    ("Is x > 5 true when x = 3?", "Is x < 5 true when x = 3?"),
    ("What does C++ mean?", "What does C# mean?"),
    ("Is 2^10 bigger than 1000?", "Is 2*10 bigger than 1000?"),
    ("Simplify (a+b)^2", "Simplify (a-b)^2"),
    ("Raise every price by 10%", "Raise every price by 10"),
    ("Is the file at ~/data or /data?", "Is the file at ./data or /data?"),
]


@pytest.mark.parametrize(("stored", "asked"), SYMBOL_SWAPS)
def test_a_prompt_differing_in_a_symbol_is_not_served_with_default_settings(stored: str, asked: str) -> None:
    cache = SemanticCache()
    assert cache.store(ask(stored), answer(f"answer to {stored}"), scope=T)
    assert cache.lookup(ask(asked), scope=T) is None
    assert compare(guard_features(stored), guard_features(asked)) == "symbols differ"
    assert compare(guard_features(asked), guard_features(stored)) == "symbols differ"
    hit = cache.lookup(ask(stored.lower()), scope=T)  # the same question is still served
    assert hit is not None
    assert hit.response.content == f"answer to {stored}"


SAME_QUESTIONS = [  # sentence punctuation, quotes and hyphens inside words are not symbols
    ("Is 12 * 7 = 84?", "is 12 * 7 = 84"),
    ("How do I reset my e-mail password?", "how do I reset my e-mail password!"),
    ("What is GPT-4o?", "what is GPT-4o..."),
    ("Copy the file to ~/data/ (not /tmp)!", "copy the file to ~/data/ (not /tmp)"),
    ("¿Cómo puedo cancelar mi suscripción?", "cómo puedo cancelar mi suscripción"),
    ("« Comment annuler mon abonnement ? »", "“Comment annuler mon abonnement”"),
    ("Hi! How do I reset my password, please?", "How do I reset my password; please"),
]


def test_punctuation_variants_are_still_served_but_not_another_operator() -> None:
    for stored, asked in SAME_QUESTIONS:
        assert compare(guard_features(stored), guard_features(asked)) is None
        cache = SemanticCache(threshold=0.9)
        assert cache.store(ask(stored), answer("ANSWER"), scope=T)
        hit = cache.lookup(ask(asked), scope=T)
        assert hit is not None, (stored, asked)
        assert hit.response.content == "ANSWER"
    cache = SemanticCache(threshold=0.9)
    assert cache.store(ask("Is 12 * 7 = 84?"), answer("Yes."), scope=T)
    assert cache.lookup(ask("is 12 + 7 = 84"), scope=T) is None


def test_langchain_cache_does_not_serve_the_answer_to_another_operator() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("12 * 7 = 84"), AIMessage("12 + 7 = 19")]))
    model.cache = TokenBudgetLLMCache(SemanticCache(threshold=0.9))
    with attribute(tenant="acme", feature="calc", user="u-1"):
        assert model.invoke("What is 12 * 7?").content == "12 * 7 = 84"
        assert model.invoke("What is 12 + 7?").content == "12 + 7 = 19"
