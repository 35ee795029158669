"""Response caches, review s27 (findings 3, 6, 7, 9, 10 of /tmp/rv_d/REPORT.md).

- 3: the LangChain adapter records a hit in the ledger only for an entry it could serve: an entry
  whose generations cannot be rebuilt is a miss everywhere (the model is called, no hit, no saving).
- 6: a semantic cache on a memory store searches (and inserts) in a worker thread in its async
  twins: a matrix scan never runs on the event loop.
- 7: malformed guard features in a stored entry are no guard features (``InvalidInputError``):
  the semantic match is refused, never a bare ``TypeError`` out of ``lookup``.
- 9/10: a ``ttl`` / ``max_ttl`` over ``MAX_TTL`` (what every store can hold) is refused at
  construction with ``InvalidInputError`` naming the option, never a bare ``OverflowError``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from cache_contract import A, answer, ask
from langchain_tokenbudget.llm_cache import TokenBudgetLLMCache
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.cache_stores.base import Vector, VectorMatch
from tokenbudget_core.cache_stores.memory import MemoryCacheStore
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.semantic_guard import GuardFeatures, guard_features

# -- finding 3: LangChain adapter, an unservable entry is no hit --------------------------------


class _OldFormatStore(MemoryCacheStore):
    """Serves every entry as an older/foreign writer left it: the first generation's message
    content is not text, so LangChain cannot rebuild the message."""

    corrupt = True

    @staticmethod
    def _spoil(payload: str) -> str:
        data = json.loads(payload)
        data["response"]["extra"]["generations"][0]["message"]["content"] = {"old": "format"}
        return json.dumps(data)

    def get(self, scope: CacheScope, key: str) -> str | None:
        payload = super().get(scope, key)
        return self._spoil(payload) if payload is not None and self.corrupt else payload

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        found = super().search(scope, partition, vector, k)
        if not self.corrupt:
            return found
        return [VectorMatch(m.score, m.key, self._spoil(m.payload)) for m in found]


def _reply(text: str) -> AIMessage:
    return AIMessage(
        text,
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        response_metadata={"model_name": "gpt-4o", "finish_reason": "stop"},
    )


class _Chat(GenericFakeChatModel):
    model_name: str = "gpt-4o"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": 0}

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        return {"model_name": self.model_name, "model": self.model_name, "temperature": 0}


def _cache(kind: str, store: MemoryCacheStore, ledger: Ledger) -> ExactCache | SemanticCache:
    return ExactCache(store, ledger=ledger) if kind == "exact" else SemanticCache(store, ledger=ledger)


def _hits(ledger: Ledger) -> tuple[int, Any]:
    totals = build_report(ledger, last_days=1).totals
    return totals.cache_hits, totals.saved_usd


@pytest.mark.parametrize("kind", ["exact", "semantic"])
def test_langchain_unreadable_entry_is_a_miss_and_no_hit_in_the_ledger(kind: str) -> None:
    ledger = Ledger("memory://")
    store = _OldFormatStore()
    store.corrupt = False
    chat = _Chat(
        messages=iter([_reply("first"), _reply("second")]),
        cache=TokenBudgetLLMCache(_cache(kind, store, ledger), scope=A),
    )
    assert chat.invoke("Capital of France?").content == "first"  # a miss: stored
    store.corrupt = True
    assert chat.invoke("Capital of France?").content == "second"  # unservable: the model is called
    assert _hits(ledger) == (0, 0)


@pytest.mark.parametrize("kind", ["exact", "semantic"])
async def test_langchain_async_unreadable_entry_is_a_miss_and_no_hit_in_the_ledger(kind: str) -> None:
    ledger = Ledger("memory://")
    store = _OldFormatStore()
    store.corrupt = False
    chat = _Chat(
        messages=iter([_reply("first"), _reply("second")]),
        cache=TokenBudgetLLMCache(_cache(kind, store, ledger), scope=A),
    )
    assert (await chat.ainvoke("Capital of France?")).content == "first"
    store.corrupt = True
    assert (await chat.ainvoke("Capital of France?")).content == "second"
    assert _hits(ledger) == (0, 0)


@pytest.mark.parametrize("kind", ["exact", "semantic"])
async def test_langchain_served_hits_are_still_recorded_once(kind: str) -> None:
    ledger = Ledger("memory://")
    store = _OldFormatStore()
    store.corrupt = False
    chat = _Chat(
        messages=iter([_reply("first"), _reply("second")]),
        cache=TokenBudgetLLMCache(_cache(kind, store, ledger), scope=A),
    )
    assert chat.invoke("Capital of France?").content == "first"
    assert chat.invoke("Capital of France?").content == "first"  # served
    assert (await chat.ainvoke("Capital of France?")).content == "first"  # served
    hits, saved = _hits(ledger)
    assert hits == 2
    assert saved > 0


def test_hits_not_recorded_defers_recording_to_record_hit() -> None:
    from tokenbudget_core.response_cache import hits_not_recorded

    ledger = Ledger("memory://")
    cache = ExactCache(ledger=ledger)
    assert cache.store(ask("hi"), answer("hello"), scope=A)
    with hits_not_recorded():
        hit = cache.lookup(ask("hi"), scope=A)
    assert hit is not None
    assert hit.served
    assert _hits(ledger)[0] == 0
    cache.record_hit(ask("hi"), hit)
    assert _hits(ledger)[0] == 1
    assert cache.lookup(ask("hi"), scope=A) is not None  # outside the block: recorded by lookup
    assert _hits(ledger)[0] == 2
    with pytest.raises(InvalidInputError):
        cache.record_hit(ask("hi"), "not a hit")  # type: ignore[arg-type]


# -- finding 6: semantic searches of a memory store run off the event loop ---------------------------


class _ThreadRecordingStore(MemoryCacheStore):
    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[str, set[int]] = {"search": set(), "add_vector": set()}

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        self.threads["search"].add(threading.get_ident())
        return super().search(scope, partition, vector, k)

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        self.threads["add_vector"].add(threading.get_ident())
        super().add_vector(scope, partition, key, vector, payload, ttl)


@pytest.mark.parametrize("with_ledger", [False, True])
async def test_semantic_async_twins_search_a_memory_store_off_the_event_loop(with_ledger: bool) -> None:
    store = _ThreadRecordingStore()
    cache = SemanticCache(store, ledger=Ledger("memory://") if with_ledger else None)
    loop_thread = threading.get_ident()
    assert await cache.alookup(ask("Capital of France?"), scope=A) is None
    assert await cache.astore(ask("Capital of France?"), answer("Paris."), scope=A)
    hit = await cache.alookup(ask("Capital of France?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Paris."
    assert store.threads["search"]
    assert loop_thread not in store.threads["search"]
    assert store.threads["add_vector"]
    assert loop_thread not in store.threads["add_vector"]


# -- finding 7: malformed guard features are refused, never a TypeError -------------------------------


def _guard(**changes: Any) -> dict[str, Any]:
    return {**guard_features("Capital of France?").to_json(), **changes}


MALFORMED = [
    _guard(neg=None),
    _guard(neg=0),
    _guard(neg=1.5),
    _guard(neg="ab"),
    _guard(neg=[None]),
    _guard(neg=[[1]]),
    _guard(neg={"a": 1}),
    _guard(roles=None),
    _guard(roles=7),
    _guard(roles=[None]),
    _guard(roles=[[1, 2]]),
    _guard(roles=[["src"]]),
    _guard(num=None),
    _guard(ent=3),
    _guard(words=[["nested"]]),
    _guard(content=[None]),
    _guard(sym={"x": "y"}),
    _guard(dir=False),
    None,
    0,
    [1, 2],
    "guard",
    {"v": 3},
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_guard_features_from_json_refuses_every_malformed_shape(data: Any) -> None:
    with pytest.raises(InvalidInputError):
        GuardFeatures.from_json(data)


def test_guard_features_from_json_still_reads_its_own_json() -> None:
    features = guard_features("Refund order 1234 from Paris to Rome, not London")
    assert GuardFeatures.from_json(features.to_json()) == features


class _GuardSpoilingStore(MemoryCacheStore):
    guard: Any = None

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        out = []
        for m in super().search(scope, partition, vector, k):
            data = json.loads(m.payload)
            data["guard"] = self.guard
            out.append(VectorMatch(m.score, m.key, json.dumps(data)))
        return out


@pytest.mark.parametrize("guard", [g for g in MALFORMED if g], ids=range(len([g for g in MALFORMED if g])))
def test_semantic_lookup_refuses_a_match_with_malformed_guard_features(guard: Any) -> None:
    store = _GuardSpoilingStore()
    cache = SemanticCache(store)
    assert cache.store(ask("Capital of France?"), answer("Paris."), scope=A)
    store.guard = guard
    assert cache.lookup(ask("Capital of France?"), scope=A) is None


# -- findings 9 and 10: TTLs over MAX_TTL are refused at construction ---------------------------------


@pytest.mark.parametrize("cls", [ExactCache, SemanticCache])
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ttl": 10**400, "max_ttl": 10**400}, "max_ttl"),
        ({"ttl": 10**400}, "ttl"),
        ({"ttl": 1e16, "max_ttl": 1e16}, "max_ttl"),
        ({"ttl": 60, "max_ttl": 2**31}, "max_ttl"),
    ],
)
def test_a_ttl_no_store_can_hold_is_refused_at_construction(cls: Any, options: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        cls(**options)
    assert e.value.field == field


@pytest.mark.parametrize("cls", [ExactCache, SemanticCache])
def test_the_longest_ttl_is_stored_and_served_on_memory(cls: Any) -> None:
    from tokenbudget_core.response_cache import MAX_TTL

    assert MAX_TTL == 2**31 - 1
    cache = cls(ttl=MAX_TTL, max_ttl=MAX_TTL)
    assert cache.store(ask("Capital of France?"), answer("Paris."), scope=A)
    hit = cache.lookup(ask("Capital of France?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Paris."


@pytest.mark.parametrize("cache", ["ExactCache", "SemanticCache"])
def test_an_unknown_keyword_is_named_with_the_closest_one_and_a_store_option_too(cache: str) -> None:
    """A store option (timeout_s) or a typo given to the cache was a bare TypeError."""
    from tokenbudget_core import response_cache, semantic_cache

    cls = getattr(response_cache, cache, None) or getattr(semantic_cache, cache)
    with pytest.raises(InvalidInputError, match=rf"ttll: is not an? {cache} argument; did you mean 'ttl'"):
        cls(ttll=5)
    with pytest.raises(InvalidInputError, match=rf"timeout_s: is not an? {cache} argument"):
        cls("sqlite:///never-created.db", timeout_s=5)
