"""The router's own classifier calls (a learned classifier's paid embeddings, overhead ``router``)
are charged to the payer the route was given, whichever documented way it was given:
``TierRouter.route(..., feature=, user=)``, a ``RouterChatModel`` run's metadata, or an enclosing
``attribute()`` block (whose ids win, as everywhere)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import BudgetCallbackHandler, RouterChatModel
from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, TierRouter, attribute
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.learned_classifier import NearestNeighbourClassifier

EMBED_MODEL = "text-embedding-3-small"
EXAMPLES = [("what is a token", "small"), ("design a sharded database", "large")]


def ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="1")}))


def classifier(book: Ledger) -> NearestNeighbourClassifier:
    """A classifier on a paid embedding model recorded in ``book`` (fitting it is the app's own call)."""
    embedder = as_embedder(
        lambda texts: [[1.0, float(len(t)), 0.5] for t in texts], ledger=book, model=EMBED_MODEL
    )
    return NearestNeighbourClassifier.fit(EXAMPLES, embedder=embedder, k=1)


def embedding_rows(book: Ledger) -> dict[str, tuple[int, bool]]:
    """Requests and whether any is overhead, per ``feature/user`` of the embedding model's rows."""
    out: dict[str, tuple[int, bool]] = {}
    for row in book.store.rollup([book.day()]):
        feature, user, model = row.rollup_key.split("/", 2)
        if model == EMBED_MODEL:
            out[f"{feature}/{user}"] = (row.values["requests"], row.values["overhead_nanos"] > 0)
    return out


def test_route_charges_the_classifier_embedding_to_the_payer_arguments() -> None:
    book = ledger()
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, classifier=classifier(book), ledger=book)
    decision = router.route("what is a token?", feature="chat", user="u-7")
    assert decision.tier == "small"
    # the fit's call has no payer (the app's own); the route's classifier call is u-7's overhead
    assert embedding_rows(book) == {"/": (1, False), "chat/u-7": (1, True)}
    assert book.state(feature="chat", user="u-7").shares["user_daily_usd"] > 0


def test_aroute_charges_the_classifier_embedding_to_the_payer_arguments() -> None:
    book = ledger()
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, classifier=classifier(book), ledger=book)
    decision = asyncio.run(router.aroute("design a sharded database", feature="chat", user="u-8"))
    assert decision.tier == "large"
    assert embedding_rows(book) == {"/": (1, False), "chat/u-8": (1, True)}
    assert book.state(feature="chat", user="u-8").shares["user_daily_usd"] > 0


def test_an_enclosing_attribute_block_still_wins_over_the_payer_arguments() -> None:
    book = ledger()
    router = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, classifier=classifier(book), ledger=book)
    with attribute(feature="chat", user="outer"):
        router.route("what is a token?", feature="other", user="inner")
        asyncio.run(router.aroute("what is a token?", feature="other", user="inner"))
    assert embedding_rows(book) == {"/": (1, False), "chat/outer": (2, True)}


def tier(name: str) -> GenericFakeChatModel:
    reply = AIMessage(
        f"answered by {name}",
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        response_metadata={"model_name": name},
    )
    return GenericFakeChatModel(messages=iter([reply] * 4))


def test_router_chat_model_charges_the_classifier_embedding_to_the_metadata_payer() -> None:
    book = ledger()
    chat = RouterChatModel(
        {"small": tier("gpt-4o-mini"), "large": tier("gpt-4o")},
        models={"small": "gpt-4o-mini", "large": "gpt-4o"},
        classifier=classifier(book),
        ledger=book,
    )
    config: Any = {
        "callbacks": [BudgetCallbackHandler(book, model="gpt-4o-mini")],
        "metadata": {"feature": "chat", "user": "u-7"},
    }
    assert chat.invoke("what is a token?", config=config).content == "answered by gpt-4o-mini"
    asyncio.run(chat.ainvoke("what is a token?", config=config))
    assert embedding_rows(book) == {"/": (1, False), "chat/u-7": (2, True)}
