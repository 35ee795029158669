"""``redis://``, ``rediss://``, ``redis+cluster://``: cache entries in Redis or Redis Cluster;
semantic entries in Redis 8 vector sets.

Key layout, every key of one scope under one hash tag (one cluster slot)::

    <ns>:{<scope key>}:e:<key>                string  an exact entry (SET ... PX ttl): a hit is one GET
    <ns>:{<scope key>}:v:<quant>:<partition>  vector set (VADD/VSIM); each element's attributes
                                              hold {"exp": <epoch s>, "p": <payload>}
    <ns>:{<scope key>}:x:<quant>:<partition>  zset  element -> expiry, to remove expired elements

``<quant>`` is the store's ``quantization`` (``NOQUANT``, ``Q8``, ``BIN``): a vector set keeps
the quantization it was made with and refuses vectors of another, so a changed setting (a
deploy, or two settings live during a rolling one) starts partitions of its own, as an embedder
of another size does, instead of failing every insert until the old keys expire. (Vector sets
written by a release before this one, ``...:v:<partition>``, are not read: they expire with
their TTL, and invalidation and clearing still drop them.)

The scope key (:meth:`~tokenbudget_core.cache_keys.CacheScope.key`) and the namespace are
percent-encoded, so ids with ``:``, ``*``, ``{``, ``}``, spaces or glob characters can never
forge another scope's key or hash tag, nor widen the ``SCAN`` pattern of an invalidation.
A semantic lookup is one ``VSIM ... WITHSCORES WITHATTRIBS FILTER '.exp > now'``; an insert
is one Lua script (check the TTL, drop expired elements, ``VADD``, refresh the key's
expiry: nothing is written when the expiry could not be set). On a cluster
each operation goes to its scope's slot node (the script's keys share that slot); invalidation
and clearing scan every primary. Vectors are
stored unquantised by default (``quantization="NOQUANT"``) so scores are the cosine itself.

Replies are read as bytes whatever the URL says: a ``decode_responses`` option of the URL is
dropped (the cache decodes itself, with ``surrogatepass``, and treats a value that is not UTF-8
as an unreadable entry, a logged miss; redis-py's strict decoding would raise instead).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import quote, unquote_plus

from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.clocks import check_clock
from tokenbudget_core.errors import CacheUnavailableError, InvalidInputError, MissingDependencyError
from tokenbudget_core.response_cache import MAX_TTL
from tokenbudget_core.stores.base import redact_url
from tokenbudget_core.stores.redis import check_redis_url

from .base import Vector, VectorMatch
from .memory import check_ttl, check_vector

__all__ = ["RedisCacheStore"]

logger = logging.getLogger("tokenbudget.cache")

_ADD = """
local ttl = tonumber(ARGV[6])
local expires = tonumber(ARGV[3])
if not ttl or ttl < 1 or ttl > 2147483648 or ttl ~= math.floor(ttl) or not expires then
  return redis.error_reply('ERR tokenbudget cache: invalid ttl ' .. tostring(ARGV[6]))
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 256)
for _, id in ipairs(expired) do redis.call('VREM', KEYS[1], id) end
if #expired > 0 then redis.call('ZREM', KEYS[2], unpack(expired)) end
redis.call('VADD', KEYS[1], 'FP32', ARGV[4], ARGV[2], ARGV[7], 'SETATTR', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
for _, k in ipairs(KEYS) do
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end
return #expired
"""
_QUANTIZATIONS = ("NOQUANT", "Q8", "BIN")


def _enc(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass").replace("~", "%7E")


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _bytes_replies(url: str) -> str:
    """``url`` without its ``decode_responses`` option (every other part kept as written).

    redis-py lets a URL's query win over the client's arguments, so ``?decode_responses=true``
    would make it decode every reply strictly: a stored lone surrogate, or a truncated value,
    would raise a bare ``UnicodeDecodeError`` out of a lookup. The store reads bytes and decodes
    them itself.
    """
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hashmark, fragment = rest.partition("#")
    kept = [p for p in query.split("&") if unquote_plus(p.split("=", 1)[0]) != "decode_responses"]
    return base + (sep + "&".join(kept) if any(kept) else "") + hashmark + fragment


def _ttl(ttl: float) -> float:
    """A store-level TTL Redis can hold: at most :data:`~tokenbudget_core.response_cache.MAX_TTL`
    seconds (``SET PX`` and ``EXPIRE`` refuse far larger ones, and the insert script would
    otherwise leave a vector set that never expires)."""
    seconds = check_ttl(ttl)
    if seconds > MAX_TTL:
        raise InvalidInputError(
            "ttl",
            f"must be at most {MAX_TTL:.0f} s (MAX_TTL) on Redis",
            value=ttl,
            fix="use a ttl of at most tokenbudget_core.response_cache.MAX_TTL seconds",
        )
    return seconds


class RedisCacheStore:
    """Cache entries on a Redis 8 server (vector sets for semantic entries).

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` or
            ``redis+cluster://host:port`` (any node of a cluster; the client finds the rest).
            Its ``decode_responses`` option is ignored: the store reads bytes.
        namespace: Prefix of every key, to share one Redis between caches.
        quantization: How vector sets store vectors: ``NOQUANT`` (exact scores, default),
            ``Q8`` (a quarter of the memory, approximate scores) or ``BIN``. Each has vector
            sets of its own (see the module doc): changing it starts new partitions.
        socket_timeout: Seconds to wait for a connection or an answer.
        clock: Returns epoch seconds (decides which semantic entries have expired).

    Raises:
        MissingDependencyError: The ``redis`` package is not installed.
        InvalidInputError: A bad option, named.

    Every operation raises :class:`~tokenbudget_core.errors.CacheUnavailableError` when Redis
    cannot be reached (the caches treat it as a miss) or lacks vector sets (Redis < 8).

    Example:
        >>> store = RedisCacheStore("redis://localhost:6379/0")  # doctest: +SKIP
        >>> store.get(CacheScope(tenant="t1"), "k") is None  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "tbc",
        quantization: str = "NOQUANT",
        socket_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            import redis
        except ImportError as e:
            raise MissingDependencyError("redis", "redis") from e
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError("namespace", "must be a non-empty string", value=namespace)
        if quantization not in _QUANTIZATIONS:
            raise InvalidInputError(
                "quantization",
                f"unknown value {quantization!r}",
                fix=f"use one of {', '.join(_QUANTIZATIONS)}",
            )
        if (
            isinstance(socket_timeout, bool)
            or not isinstance(socket_timeout, int | float)
            or not 0 < socket_timeout < math.inf  # (NaN fails this too)
        ):
            raise InvalidInputError(
                "socket_timeout", "must be a positive number of seconds", value=socket_timeout
            )
        check_clock(clock)
        if not isinstance(url, str):
            raise InvalidInputError("store", "must be a redis:// URL string", value=url)
        check_redis_url(url)  # the ledger store's check: port, database, options
        self.url = redact_url(url)
        self.clock = clock
        self.quantization = quantization
        self._ns = _enc(namespace)
        self._unavailable: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ResponseError,
            redis.exceptions.RedisClusterException,  # no reachable node, slot not covered
            OSError,
        )
        options = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "decode_responses": False,  # (and the URL's is dropped: see _bytes_replies)
        }
        self._client: Any = None
        self._connect: Callable[[], Any]
        url = _bytes_replies(url)
        if url.lower().startswith("redis+cluster://"):
            import redis.cluster

            cluster_url = "redis://" + url.split("://", 1)[1]
            # A cluster client finds its nodes when it is built: on first use, not here.
            self._connect = lambda: redis.cluster.RedisCluster.from_url(cluster_url, **options)
        else:
            self._connect = lambda: redis.Redis.from_url(url, **options)
            try:
                self._client = self._connect()  # connects lazily
            except (ValueError, TypeError) as e:  # an option value redis-py refuses
                raise InvalidInputError("store", f"not a Redis URL: {e}", value=self.url) from e
        # Bytes: no client needed to hash it; each call passes the client it runs on.
        self._add = redis.commands.core.Script(cast(Any, None), _ADD.encode())
        self._response_error: type[Exception] = redis.exceptions.ResponseError
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    @contextmanager
    def _redis(self) -> Iterator[Any]:
        try:
            yield self._client or self._connected()
        except self._unavailable as e:
            if "dimension mismatch" in str(e).lower():
                raise InvalidInputError(
                    "vector", f"does not match the partition's size ({str(e).split(' script:')[0]})"
                ) from e
            detail = f"{type(e).__name__}: {e}"
            if "unknown command" in str(e).lower():
                detail += " (semantic entries need Redis 8 vector sets: VADD/VSIM)"
            raise CacheUnavailableError(self.url, detail) from e

    def _key(self, scope: CacheScope, kind: str, name: str) -> str:
        return f"{self._ns}:{{{scope.key()}}}:{kind}:{name}"

    def _partition_keys(self, scope: CacheScope, partition: str) -> tuple[str, str]:
        """The vector set and expiry zset of a partition, under this store's quantization (a
        vector set refuses vectors of another: see the module doc)."""
        name = f"{self.quantization}:{_enc(partition)}"  # (_enc leaves no ":" in the partition)
        return self._key(scope, "v", name), self._key(scope, "x", name)

    # -- exact entries -----------------------------------------------------------------------------

    def get(self, scope: CacheScope, key: str) -> str | None:
        """One round trip: ``GET``."""
        try:
            with self._redis() as r:
                value = r.get(self._key(scope, "e", _enc(key)))
        except UnicodeDecodeError as e:  # a client decoding replies itself: unreadable, a miss
            logger.warning("unreadable cache entry ignored (not UTF-8): %s", e)
            return None
        if value is None:
            return None
        try:
            return _text(value)
        except UnicodeDecodeError as e:  # a truncated or foreign value: an unreadable entry, a miss
            logger.warning("unreadable cache entry ignored (not UTF-8): %s", e)
            return None

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        ms = max(1, int(_ttl(ttl) * 1000))
        with self._redis() as r:
            r.set(self._key(scope, "e", _enc(key)), payload.encode("utf-8", "surrogatepass"), px=ms)

    # -- semantic entries --------------------------------------------------------------------------

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        """One Lua script: drop expired elements, ``VADD`` with attributes, refresh the expiry."""
        seconds = _ttl(ttl)
        vec = check_vector(vector)
        now = self.clock()
        attrs = json.dumps({"exp": now + seconds, "p": payload}, separators=(",", ":"))
        with self._redis() as r:
            self._add(
                keys=list(self._partition_keys(scope, partition)),
                args=[
                    now,
                    _enc(key),
                    now + seconds,
                    vec.tobytes(),
                    attrs,
                    int(seconds) + 1,
                    self.quantization,
                ],
                client=r,
            )

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        """One round trip: ``VSIM ... WITHSCORES WITHATTRIBS COUNT k FILTER '.exp > now'``."""
        vec = check_vector(vector)
        key, _ = self._partition_keys(scope, partition)
        with self._redis() as r:
            try:
                raw = r.execute_command(
                    "VSIM", key, "FP32", vec.tobytes(), "WITHSCORES", "WITHATTRIBS",
                    "COUNT", int(k), "FILTER", f".exp > {self.clock()!r}",
                )  # fmt: skip
            except self._response_error as e:  # a partition of another dimension: nothing comparable
                if "dimension" in str(e).lower():
                    return []
                raise
            except UnicodeDecodeError as e:  # a client decoding replies itself: unreadable, a miss
                logger.warning("unreadable semantic cache entries ignored (not UTF-8): %s", e)
                return []
        if isinstance(raw, dict):  # redis-py parses WITHSCORES WITHATTRIBS into {element: [score, attrs]}
            rows = [(element, *pair) for element, pair in raw.items()]
        else:  # a flat [element, score, attrs, ...] reply
            items = list(raw or [])
            rows = [tuple(items[i : i + 3]) for i in range(0, len(items) - 2, 3)]
        out: list[VectorMatch] = []
        for element, score, attrs in rows:
            try:  # (UnicodeDecodeError is a ValueError: a value that is not UTF-8 is skipped)
                payload = json.loads(_text(attrs))["p"]
                name = _text(element)
            except (ValueError, KeyError, TypeError) as e:
                logger.warning("unreadable semantic cache entry ignored: %s", e)
                continue
            # VSIM's similarity is (1 + cosine) / 2; report the cosine itself.
            out.append(VectorMatch(2.0 * float(score) - 1.0, name, str(payload)))
        out.sort(key=lambda m: -m.score)
        return out

    # -- management --------------------------------------------------------------------------------

    def _scan(self, r: Any, pattern: str) -> Iterator[str]:
        """The keys matching ``pattern``, on every primary of a cluster."""
        for key in r.scan_iter(match=pattern, count=1000):
            yield _text(key)

    def invalidate(self, scope: CacheScope) -> int:
        """``SCAN`` the namespace (or the tenant) and delete the covered keys."""
        prefix = f"{self._ns}:{{{_enc(scope.namespace)}:"
        if scope.tenant is not None:
            prefix += f"{scope.key().split(':')[1]}:"
        dropped = 0
        with self._redis() as r:
            for key in self._scan(r, prefix + "*"):
                inner = key[len(self._ns) + 2 : key.find("}")]
                try:
                    entry_scope = CacheScope.from_key(inner)
                except InvalidInputError:
                    continue
                if not scope.covers(entry_scope):
                    continue
                kind = key[key.find("}") + 2 : key.find("}") + 3]
                if kind == "v":
                    dropped += int(r.execute_command("VCARD", key) or 0)
                elif kind == "e":
                    dropped += 1
                r.unlink(key)
        return dropped

    def clear(self) -> None:
        with self._redis() as r:
            keys = list(self._scan(r, f"{self._ns}:{{*"))
            for i in range(0, len(keys), 500):
                r.unlink(*keys[i : i + 500])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
