"""The exact response cache: what is stored, what is served, to whom, and what a hit saved."""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal

import pytest

from tokenbudget_core import InvalidInputError, Usage, attribute, cost_of
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cache_stores.memory import MemoryCacheStore
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.response_cache import ExactCache


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


USAGE = Usage(input_tokens=1000, output_tokens=200)


def answer(content: str = "Paris.", **kw: object) -> CachedResponse:
    return CachedResponse(content=content, model="gpt-4o", usage=USAGE, **kw)  # type: ignore[arg-type]


def req(prompt: str = "Capital of France?", **params: object) -> CacheRequest:
    return CacheRequest(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        params={"temperature": 0, **params},
    )


def test_requests_hash_pickle_and_copy_by_their_content() -> None:
    a = req(seed=7)
    for other in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), req(seed=7)):
        assert other == a
        assert hash(other) == hash(a)
        assert other.digest() == a.digest()
    assert len({a, req(seed=7), req(seed=8)}) == 2  # usable as set members and dict keys


def test_identical_request_hits_with_saved_tokens_and_dollars() -> None:
    cache = ExactCache()
    t1 = CacheScope(tenant="t1")
    assert cache.lookup(req(), scope=t1) is None
    assert cache.store(req(), answer(), scope=t1)
    hit = cache.lookup(req(), scope=t1)
    assert hit is not None
    assert (hit.response.content, hit.kind, hit.score, hit.served) == ("Paris.", "exact", 1.0, True)
    assert hit.saved_tokens == 1200
    assert hit.saved_usd == cost_of(USAGE, "gpt-4o")
    assert hit.key == req().digest()


def test_every_output_changing_part_is_in_the_key() -> None:
    cache = ExactCache()
    cache.store(req(), answer())
    assert cache.lookup(req(max_tokens=10)) is None
    assert cache.lookup(req("Capital of Spain?")) is None
    other_model = CacheRequest(model="gpt-4o-mini", messages=req().messages, params={"temperature": 0})
    assert cache.lookup(other_model) is None
    tools = CacheRequest(
        model="gpt-4o", messages=req().messages, params={"temperature": 0}, tools=[{"name": "search"}]
    )
    assert cache.lookup(tools) is None
    assert cache.lookup(req(seed=None)) is not None  # a None parameter is the provider default


def test_tenants_and_scope_fields_separate_entries() -> None:
    cache = ExactCache(scope_fields=("tenant", "feature"))
    cache.store(req(), answer(), scope=CacheScope(tenant="a", user="u1", feature="f"))
    assert cache.lookup(req(), scope=CacheScope(tenant="a", user="u2", feature="f")) is not None
    assert cache.lookup(req(), scope=CacheScope(tenant="b", user="u1", feature="f")) is None
    assert cache.lookup(req(), scope=CacheScope(tenant=None, user="u1", feature="f")) is None
    assert cache.lookup(req(), scope=CacheScope(tenant="a", user="u1", feature="g")) is None


def test_default_scope_comes_from_the_attribution() -> None:
    cache = ExactCache()
    with attribute(feature="support", user="u-1"):
        cache.store(req(), answer())
        assert cache.lookup(req()) is not None
    with attribute(feature="support", user="u-2"):
        assert cache.lookup(req()) is None
    assert cache.lookup(req(), scope=CacheScope(user="u-1", feature="support")) is not None


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (answer(finish_reason="length"), "cut off"),
        (answer(finish_reason="max_tokens"), "cut off"),
        (answer(finish_reason="error"), "cut off or failed"),
        (answer(finish_reason="content_filter"), "cut off"),
        (answer(tool_calls=({"name": "search"},), finish_reason="tool_calls"), "tool-call"),
    ],
)
def test_incomplete_failed_and_tool_call_answers_are_never_stored(response: CachedResponse, why: str) -> None:
    cache = ExactCache()
    assert why in (cache.refusal(req(), response) or "")
    assert cache.store(req(), response) is False
    assert cache.lookup(req()) is None


def test_tool_calls_and_sampled_requests_only_when_opted_in() -> None:
    call = answer("", tool_calls=({"name": "search", "arguments": "{}"},), finish_reason="tool_calls")
    assert ExactCache(cache_tool_calls=True).store(req(), call)
    sampled = req(temperature=0.7)
    assert sampled.sampled()
    plain = ExactCache()
    assert plain.store(sampled, answer()) is False
    assert plain.lookup(sampled) is None
    opted = ExactCache(cache_sampled=True)
    assert opted.store(sampled, answer())
    assert opted.lookup(sampled) is not None


def test_ttl_is_mandatory_and_capped_at_a_day_unless_raised() -> None:
    clock = Clock()
    cache = ExactCache(ttl=60, clock=clock, store=MemoryCacheStore(clock=clock))
    cache.store(req(), answer())
    clock.now += 59
    assert cache.lookup(req()) is not None
    clock.now += 2
    assert cache.lookup(req()) is None
    with pytest.raises(InvalidInputError, match="max_ttl"):
        ExactCache(ttl=2 * 86_400)
    assert ExactCache(ttl=2 * 86_400, max_ttl=3 * 86_400).ttl == 2 * 86_400
    for bad in (0, -1, float("inf"), None, "60"):
        with pytest.raises(InvalidInputError, match="ttl"):
            ExactCache(ttl=bad)  # type: ignore[arg-type]


def test_entries_over_the_size_limit_are_not_stored() -> None:
    cache = ExactCache(max_entry_bytes=2_000)
    assert cache.store(req(), answer("x" * 100))
    assert cache.store(req("other"), answer("x" * 5_000)) is False
    assert cache.lookup(req("other")) is None


def test_hashed_prompts_leave_no_plaintext_in_the_store() -> None:
    store = MemoryCacheStore()
    cache = ExactCache(store, hash_prompts=True)
    cache.store(req("my secret question"), answer())
    payloads = [p for _, p in store._exact.values()]
    assert payloads
    assert all("secret" not in p for p in payloads)
    hit = cache.lookup(req("my secret question"))
    assert hit is not None
    assert hit.matched_prompt is None


def test_invalidate_by_scope() -> None:
    cache = ExactCache()
    for tenant in ("a", "b"):
        for user in ("u1", "u2"):
            cache.store(req(), answer(), scope=CacheScope(tenant=tenant, user=user))
    assert cache.invalidate(CacheScope(tenant="a", user="u1")) == 1
    assert cache.lookup(req(), scope=CacheScope(tenant="a", user="u1")) is None
    assert cache.lookup(req(), scope=CacheScope(tenant="a", user="u2")) is not None
    assert cache.invalidate(CacheScope(tenant="a")) == 1
    assert cache.lookup(req(), scope=CacheScope(tenant="b", user="u2")) is not None
    cache.clear()
    assert cache.lookup(req(), scope=CacheScope(tenant="b", user="u2")) is None


async def test_async_twins() -> None:
    cache = ExactCache()
    scope = CacheScope(tenant="t")
    assert await cache.astore(req(), answer(), scope=scope)
    hit = await cache.alookup(req(), scope=scope)
    assert hit is not None
    assert hit.saved_usd is not None
    assert hit.saved_usd > Decimal(0)
    assert await cache.ainvalidate(scope) == 1
    await cache.aclear()


def test_bad_input_names_the_field() -> None:
    cache = ExactCache()
    with pytest.raises(InvalidInputError, match="request"):
        cache.lookup("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="scope"):
        cache.lookup(req(), scope={"tenant": "a"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="response"):
        cache.store(req(), "Paris")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="scope_fields"):
        ExactCache(scope_fields=("user",))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="store"):
        ExactCache("ftp://x")
    with pytest.raises(InvalidInputError, match=r"params\.when"):
        CacheRequest.from_text(model="gpt-4o", prompt="x", params={"when": object()})
    with pytest.raises(InvalidInputError, match=r"scope\.tenant"):
        CacheScope(tenant="")
    with pytest.raises(InvalidInputError, match="messages"):
        CacheRequest(model="gpt-4o", messages=[])
