"""Redis response-cache store, review s30 (caches findings 4 and 5), on a real Redis 8.

- 4: a URL with ``?decode_responses=true`` (an option redis-py lets win over the client's
  arguments) made every lookup of an entry holding a lone surrogate, or of a value that is not
  UTF-8, raise a bare ``UnicodeDecodeError``. The store now reads bytes whatever the URL says.
- 5: a vector set keeps the quantization it was made with, so a store of another
  ``quantization=`` (a deploy that changes it, or both settings live in a rolling one) failed
  every insert into the partitions the old setting made, reported as "store unavailable". Each
  quantization now has vector sets of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from cache_contract import A, B, answer, ask
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cache_stores import open_cache_store
from tokenbudget_core.cache_stores.redis import RedisCacheStore
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

pytestmark = pytest.mark.integration

SURROGATE = "Echo: \ud83d"  # half an emoji pair, from a broken client: stored on purpose


def _with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


# -- 4. ?decode_responses=true -------------------------------------------------------------------


@pytest.mark.parametrize("query", ["decode_responses=true", "decode_responses=yes&decode_responses=1"])
def test_exact_entries_are_read_as_bytes_whatever_the_url_says(
    clean_redis_url: str, redis_client: Any, query: str
) -> None:
    cache = ExactCache(_with_query(clean_redis_url, query))
    request = ask("Echo this: \ud83d")
    assert cache.store(request, answer(SURROGATE), scope=A)
    hit = cache.lookup(request, scope=A)
    assert hit is not None
    assert hit.response.content == SURROGATE
    (key,) = redis_client.keys("*:e:*")
    redis_client.set(key, b'{"v":1,"x":"\xe4\xb8', px=60_000)  # truncated inside a character
    assert cache.lookup(request, scope=A) is None


async def test_async_exact_lookup_with_decode_responses_in_the_url(clean_redis_url: str) -> None:
    cache = ExactCache(_with_query(clean_redis_url, "decode_responses=True"))
    request = ask("Echo this: \ud83d")
    assert await cache.astore(request, answer(SURROGATE), scope=A)
    hit = await cache.alookup(request, scope=A)
    assert hit is not None
    assert hit.response.content == SURROGATE


def test_opaque_and_semantic_entries_with_decode_responses_in_the_url(clean_redis_url: str) -> None:
    url = _with_query(clean_redis_url, "decode_responses=true")
    semantic = SemanticCache(url)
    request = ask("Echo this: \ud83d")
    assert semantic.store(request, answer(SURROGATE), scope=A)
    hit = semantic.lookup(request, scope=A)
    assert hit is not None
    assert hit.response.content == SURROGATE
    opaque = CacheRequest(model="gpt-4o", messages=[{"role": "user", "content": "Hi \ud83d"}], opaque=True)
    assert semantic.store(opaque, answer(SURROGATE), scope=A)
    hit = semantic.lookup(opaque, scope=A)
    assert hit is not None
    assert hit.response.content == SURROGATE


def test_the_urls_other_options_are_kept(clean_redis_url: str, redis_client: Any) -> None:
    url = _with_query(clean_redis_url, "decode_responses=true&client_name=tbc-s30-cache")
    store = RedisCacheStore(url)
    assert store.url == url  # (what the store reports: the URL as given, password redacted)
    assert store.get(A, "absent") is None  # connects
    names = [c.get("name") for c in redis_client.client_list()]
    assert "tbc-s30-cache" in names
    store.close()


# -- 5. quantization ------------------------------------------------------------------------------


def test_a_changed_quantization_starts_partitions_of_its_own(
    clean_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's case: after a deploy from Q8 to NOQUANT, every store returned False."""
    old = SemanticCache(open_cache_store(clean_redis_url, quantization="Q8"))
    new = SemanticCache(open_cache_store(clean_redis_url, quantization="NOQUANT"))
    assert old.store(ask("How do I export my workspace?"), answer("Settings > Export."), scope=A)
    with caplog.at_level(logging.WARNING, logger="tokenbudget.cache"):
        assert new.store(ask("How do I delete my account?"), answer("Settings > Delete."), scope=A)
    assert "unavailable" not in caplog.text
    hit = new.lookup(ask("How do I delete my account?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Settings > Delete."
    # both settings live at once (a rolling deploy): each keeps storing and serving its own
    assert old.store(ask("How do I rename a project?"), answer("Settings > Rename."), scope=A)
    again = old.lookup(ask("How do I export my workspace?"), scope=A)
    assert again is not None
    assert again.response.content == "Settings > Export."


@pytest.mark.parametrize("quantizations", [("NOQUANT", "Q8"), ("Q8", "BIN"), ("BIN", "NOQUANT")])
def test_every_pair_of_quantizations_shares_a_partition_name_without_failing(
    clean_redis_url: str, quantizations: tuple[str, str]
) -> None:
    v = np.ones(16, dtype=np.float32) / 4.0
    for q in quantizations:
        store = RedisCacheStore(clean_redis_url, quantization=q)
        store.add_vector(A, "p", f"k-{q}", v, f"payload {q}", 60)  # (raised CacheUnavailableError)
        assert [m.key for m in store.search(A, "p", v, 5)] == [f"k-{q}"]
        store.close()


def test_invalidate_and_clear_drop_every_quantizations_entries(
    clean_redis_url: str, redis_client: Any
) -> None:
    v = np.ones(16, dtype=np.float32) / 4.0
    stores = [RedisCacheStore(clean_redis_url, quantization=q) for q in ("NOQUANT", "Q8", "BIN")]
    for store in stores:
        store.add_vector(A, "p", "k", v, "x", 60)
        store.add_vector(B, "p", "k", v, "x", 60)
    # a vector set written by an earlier release (no quantization in its key) is dropped too
    (legacy,) = {k.decode().replace(":v:NOQUANT:", ":v:") for k in redis_client.keys("*{*:a:*:v:NOQUANT:*")}
    redis_client.execute_command(
        "VADD", legacy, "FP32", v.tobytes(), "old", "SETATTR", '{"exp":1e12,"p":"x"}'
    )
    assert stores[0].invalidate(A) == 4
    assert all(s.search(A, "p", v, 5) == [] for s in stores)
    assert all(s.search(B, "p", v, 5) != [] for s in stores)
    stores[1].clear()
    assert redis_client.keys("*") == []
    for store in stores:
        store.close()
