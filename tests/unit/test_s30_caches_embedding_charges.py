"""A paid embedding reply that cannot be used is still recorded (review s30, caches finding 2).

The provider answered and billed (its reply carries ``usage.prompt_tokens``), but the vectors
cannot be used: NaN or infinite values, base64 text (the OpenAI SDK with
``encoding_format="base64"``), one vector short. The named error is raised as before; the
tokens are charged to the payer first, so no usage record is lost. Sync and async alike.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from tokenbudget_core import CacheRequest, SemanticCache, attribute
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

MODEL = "text-embedding-3-small"
BILLED = 1234


def _openai_reply(texts: list[str], rows: list[Any]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "usage": {"prompt_tokens": BILLED, "total_tokens": BILLED},
        "data": [{"index": i, "embedding": row} for i, row in enumerate(rows)],
    }


def nan_reply(texts: list[str]) -> dict[str, Any]:
    return _openai_reply(texts, [[float("nan")] * 8 for _ in texts])


def inf_reply(texts: list[str]) -> dict[str, Any]:
    return _openai_reply(texts, [[float("inf")] + [0.1] * 7 for _ in texts])


def base64_reply(texts: list[str]) -> dict[str, Any]:
    text = base64.b64encode(struct.pack("8f", *[0.1] * 8)).decode()
    return _openai_reply(texts, [text for _ in texts])


def short_reply(texts: list[str]) -> dict[str, Any]:
    return _openai_reply(texts, [[0.1] * 8 for _ in texts[1:]])  # one vector short


UNUSABLE = [nan_reply, inf_reply, base64_reply, short_reply]


def _input_tokens(ledger: Ledger) -> int:
    return sum(int(r.values.get("input_tokens", 0)) for r in ledger.store.rollup([ledger.day()]))


@pytest.mark.parametrize("reply", UNUSABLE, ids=lambda f: f.__name__)
def test_an_unusable_reply_is_charged_before_its_error(reply: Any) -> None:
    ledger = Ledger("memory://")
    embedder = as_embedder(reply, ledger=ledger, model=MODEL)
    with attribute(tenant="acme", feature="faq"), pytest.raises(InvalidInputError) as raised:
        embedder.embed(["What is a token?", "And a second text?"])
    assert raised.value.field == "embedder"
    assert _input_tokens(ledger) == BILLED


@pytest.mark.parametrize("reply", UNUSABLE, ids=lambda f: f.__name__)
async def test_an_unusable_reply_is_charged_before_its_error_async(reply: Any) -> None:
    ledger = Ledger("memory://")

    async def embed(texts: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = reply(texts)
        return result

    embedder = as_embedder(embed, ledger=ledger, model=MODEL)
    with attribute(tenant="acme", feature="faq"), pytest.raises(InvalidInputError):
        await embedder.aembed(["What is a token?", "And a second text?"])
    assert _input_tokens(ledger) == BILLED


async def test_a_sync_callable_through_aembed_is_charged_too() -> None:
    ledger = Ledger("memory://")
    embedder = as_embedder(nan_reply, ledger=ledger, model=MODEL)  # (run in a thread by aembed)
    with pytest.raises(InvalidInputError):
        await embedder.aembed(["What is a token?"])
    assert _input_tokens(ledger) == BILLED


def test_the_semantic_cache_lookup_that_raises_has_its_embedding_recorded() -> None:
    """The reviewer's case: the semantic cache's lookup raises (named), the tokens are recorded."""
    ledger = Ledger("memory://")
    cache = SemanticCache(embedder=as_embedder(nan_reply, ledger=ledger, model=MODEL), ledger=ledger)
    request = CacheRequest.from_text(model="gpt-4o", prompt="What is a token?", params={"temperature": 0})
    with attribute(tenant="acme", feature="faq", user="u1"), pytest.raises(InvalidInputError):
        cache.lookup(request)
    assert _input_tokens(ledger) == BILLED


async def test_the_semantic_cache_alookup_that_raises_has_its_embedding_recorded() -> None:
    ledger = Ledger("memory://")
    cache = SemanticCache(embedder=as_embedder(nan_reply, ledger=ledger, model=MODEL), ledger=ledger)
    request = CacheRequest.from_text(model="gpt-4o", prompt="What is a token?", params={"temperature": 0})
    with attribute(tenant="acme", feature="faq", user="u1"), pytest.raises(InvalidInputError):
        await cache.alookup(request)
    assert _input_tokens(ledger) == BILLED


def test_a_usable_reply_is_still_charged_once() -> None:
    ledger = Ledger("memory://")
    embedder = as_embedder(
        lambda texts: _openai_reply(texts, [[0.1] * 8 for _ in texts]), ledger=ledger, model=MODEL
    )
    assert embedder.embed(["What is a token?"]).shape == (1, 8)
    assert _input_tokens(ledger) == BILLED
