"""Redis response cache store, review s27 (findings 4 and 9 of /tmp/rv_d/REPORT.md).

- 4: a value that is not valid UTF-8 (truncated inside a multi-byte character, foreign) is an
  unreadable entry: a logged miss, never a bare ``UnicodeDecodeError`` out of a lookup.
- 9: a TTL no store can hold is refused before anything is written (``InvalidInputError``), the
  longest one accepted (``MAX_TTL``) is stored with an expiry on every key, and the insert script
  checks the TTL before ``VADD``: it never leaves a vector set that does not expire.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from cache_contract import A, answer, ask
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cache_stores.redis import RedisCacheStore
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

pytestmark = pytest.mark.integration

NON_ASCII = "Ça coûte 12 € : réponse complète, déjà vérifiée."


def _truncate_inside_a_character(value: bytes) -> bytes:
    """``value`` cut just after the first byte of its last multi-byte character."""
    cut = max(i for i, b in enumerate(value) if b >= 0xC0) + 1
    truncated = value[:cut]
    with pytest.raises(UnicodeDecodeError):
        truncated.decode("utf-8")
    return truncated


def _exact_keys(redis_client: Any) -> list[bytes]:
    keys: list[bytes] = redis_client.keys("*:e:*")
    return keys


def test_exact_lookup_of_a_truncated_non_utf8_value_is_a_miss(
    clean_redis_url: str, redis_client: Any
) -> None:
    cache = ExactCache(clean_redis_url)
    assert cache.store(ask("How much?"), answer(NON_ASCII), scope=A)
    hit = cache.lookup(ask("How much?"), scope=A)
    assert hit is not None
    assert hit.response.content == NON_ASCII
    (key,) = _exact_keys(redis_client)
    redis_client.set(key, _truncate_inside_a_character(redis_client.get(key)), px=60_000)
    assert cache.lookup(ask("How much?"), scope=A) is None


async def test_async_and_opaque_lookups_of_a_non_utf8_value_are_misses(
    clean_redis_url: str, redis_client: Any
) -> None:
    request = CacheRequest(model="gpt-4o", messages=[{"role": "user", "content": "How much?"}], opaque=True)
    exact, semantic = ExactCache(clean_redis_url), SemanticCache(clean_redis_url)
    assert semantic.store(request, answer(NON_ASCII), scope=A)  # opaque: stored by its digest
    (key,) = _exact_keys(redis_client)
    redis_client.set(key, b"\xff\xfe" + redis_client.get(key), px=60_000)  # foreign bytes
    assert semantic.lookup(request, scope=A) is None
    assert await semantic.alookup(request, scope=A) is None
    assert exact.lookup(request, scope=A) is None
    assert await exact.alookup(request, scope=A) is None


def test_store_get_of_a_non_utf8_value_is_none(clean_redis_url: str, redis_client: Any) -> None:
    store = RedisCacheStore(clean_redis_url)
    store.put(A, "k", json.dumps({"answer": NON_ASCII}, ensure_ascii=False), 60)
    (key,) = _exact_keys(redis_client)
    redis_client.set(key, _truncate_inside_a_character(redis_client.get(key)), px=60_000)
    assert store.get(A, "k") is None


def test_search_skips_an_element_that_is_not_utf8(clean_redis_url: str, redis_client: Any) -> None:
    store = RedisCacheStore(clean_redis_url)
    vector = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    store.add_vector(A, "p", "good", vector, "the payload", 60)
    (vkey,) = redis_client.keys("*:v:*")
    attrs = json.dumps({"exp": 4e9, "p": "foreign"})
    redis_client.execute_command("VADD", vkey, "FP32", vector.tobytes(), b"\xc3", "NOQUANT", "SETATTR", attrs)
    matches = store.search(A, "p", vector, 5)
    assert [(m.key, m.payload) for m in matches] == [("good", "the payload")]


# -- finding 9: TTLs -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ExactCache, SemanticCache])
def test_a_ttl_redis_cannot_hold_is_refused_at_construction(cls: Any, clean_redis_url: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        cls(clean_redis_url, ttl=1e16, max_ttl=1e16)
    assert e.value.field == "max_ttl"


@pytest.mark.parametrize("cls", [ExactCache, SemanticCache])
def test_the_longest_ttl_is_stored_served_and_expires_on_redis(
    cls: Any, clean_redis_url: str, redis_client: Any
) -> None:
    from tokenbudget_core.response_cache import MAX_TTL

    cache = cls(clean_redis_url, ttl=MAX_TTL, max_ttl=MAX_TTL)
    assert cache.store(ask("Capital of France?"), answer("Paris."), scope=A) is True
    hit = cache.lookup(ask("Capital of France?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Paris."
    keys = redis_client.keys("*")
    assert keys
    assert all(redis_client.ttl(k) > 0 for k in keys)  # every key expires


def test_store_level_ttls_over_max_ttl_are_refused_before_any_write(
    clean_redis_url: str, redis_client: Any
) -> None:
    store = RedisCacheStore(clean_redis_url)
    with pytest.raises(InvalidInputError) as e:
        store.put(A, "k", "payload", 1e16)
    assert e.value.field == "ttl"
    with pytest.raises(InvalidInputError) as e:
        store.add_vector(A, "p", "k", np.ones(3, dtype=np.float32), "payload", 1e16)
    assert e.value.field == "ttl"
    assert redis_client.keys("*") == []


@pytest.mark.parametrize("seconds", [10**16, "1e+16", 0, -5, "soon"])
def test_the_insert_script_checks_the_ttl_before_vadd(
    seconds: object, clean_redis_url: str, redis_client: Any
) -> None:
    """Called with a TTL Redis cannot set as an expiry, the script writes nothing (it used to
    ``VADD`` first, then fail on ``EXPIRE``: a vector set that never expires, served forever)."""
    import redis

    store = RedisCacheStore(clean_redis_url)
    keys = [store._key(A, "v", "p"), store._key(A, "x", "p")]
    now = 1_000.0
    attrs = json.dumps({"exp": 4e9, "p": "payload"})
    vector = np.ones(3, dtype=np.float32).tobytes()
    with pytest.raises(redis.exceptions.ResponseError):
        store._add(
            keys=keys,
            args=[now, "k", 4e9, vector, attrs, seconds, "NOQUANT"],
            client=redis.Redis.from_url(clean_redis_url),
        )
    assert redis_client.keys("*") == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("clock", None), ("clock", 5), ("socket_timeout", float("nan")), ("socket_timeout", float("inf"))],
)
def test_a_redis_cache_store_refuses_a_bad_clock_or_timeout_by_name(
    redis_url: str, option: str, value: object
) -> None:
    """clock=None was accepted and failed on the first call; a NaN timeout passed the check."""
    from tokenbudget_core.cache_stores.redis import RedisCacheStore

    with pytest.raises(InvalidInputError, match=rf"^{option}: "):
        RedisCacheStore(redis_url, **{option: value})  # type: ignore[arg-type]
