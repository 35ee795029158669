"""``redis://``, ``rediss://``, ``redis+cluster://``: the ledger shared by every process and host.

Each of :meth:`RedisStore.reserve`, :meth:`~RedisStore.commit`, :meth:`~RedisStore.release`
and :meth:`~RedisStore.totals` is one ``EVALSHA`` of a Lua script (see
:mod:`.redis_scripts`): one round trip, atomic on the server. ``NOSCRIPT`` (a restarted or
flushed server) is answered by loading the script and running it again (a few times; then the
operation fails as :class:`~tokenbudget_core.errors.BudgetUnavailableError`, which the ledger
spools when it fails open).

Key layout, all keys of one day under one hash tag (one cluster slot)::

    {tb:<day>}:bal              hash  <scope>|<metric>|spent, <scope>|<metric>|reserved
    {tb:<day>}:req              hash  <request id> -> state
    {tb:<day>}:held             hash  <request id> -> the amounts a live reservation holds
    {tb:<day>}:leases           zset  <request id> by lease expiry (epoch ms)
    {tb:<day>}:rollup           hash  <rollup key>|<counter> -> int
    {tb:<day>}:marks            hash  <conversation mark> -> 1 (counted once, by a commit)
    {tb:<day>}:costs:<feature>  list  one call's cost in nano-USD per entry
    tb:mark:<key>               string, SET NX EX (once-per-day alerts; a conversation's mark as
                                earlier releases set it, apart from the commit: on a single
                                server the commit reads and sets it too, so versions side by side
                                count a conversation once; a cluster keeps it in another slot)

Concurrent callers share round trips: while one thread waits for Redis, the operations other
threads (or ``asyncio.to_thread`` workers) start are queued, and the next round trip carries
them all as one pipeline of ``EVALSHA`` calls (see :class:`_Batcher`). Each script still runs
atomically on its own, so every reserve stays all-or-nothing and every commit idempotent; an
operation that fails in a batch fails alone. A lone caller sends its operation as before.
On a single server the scripts run on one connection the store keeps for them, outside
redis-py's pool (used for everything else, and the only one ``?max_connections=`` bounds),
packed by hiredis when it is installed (the ``redis`` extra brings it). A round trip that fails
mid-way (a timeout, a reset) closes that connection and the next one opens a new one; an error
reply (``OOM``, ``READONLY``, ``LOADING``) keeps it. redis-py opens that connection
(authentication, database); on a plain socket the
store then writes and reads it directly, its replies parsed by a hiredis reader of its own
(see :class:`_RawWire`), without redis-py's per-command checks.

Leases are stamped with the calling host's clock (``now_ms``, from the ledger's clock) and
expired against the clock of whichever host calls next: hosts sharing one Redis ledger need
clocks in step, well within a lease (a host 11 minutes behind, with a 10-minute lease, holds
nothing; one ahead expires the others' live reservations).

Every id that comes from a user (day, scope, request id, rollup key, counter, feature, mark
key, and the namespace) is percent-encoded: only ``[A-Za-z0-9._-]`` stay as they are, so
``:``, ``*``, ``{``, ``}``, ``|``, spaces, newlines or non-ASCII text can never forge another
scope's field or another day's hash tag. Every key expires ``retention_days`` after its last
write.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tokenbudget_core._frozen import positional_maker
from tokenbudget_core.errors import (
    BudgetUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    StoreRefusedError,
    own_copy,
)

from . import redis_scripts
from ._fork import reset_after_fork
from .base import (
    CONVERSATION_MARK_TTL_S,
    Check,
    CommitOutcome,
    CommitRequest,
    CostPair,
    Keys,
    Metric,
    RequestState,
    ReserveOutcome,
    ReserveRequest,
    RollupRow,
    check_cost_pairs,
    check_days,
    redact_url,
)

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["RedisRefusedError", "RedisStore"]

_MAX_AMOUNT = 2**53 - 1
"""Largest amount or limit: the scripts compare in doubles, exact up to here (~$9M in nano-USD)."""

MAX_RETENTION_DAYS = 36_500
"""Longest retention (100 years): a key's expiry must stay within what Redis can represent."""

_READ_CHUNK = 1_000
"""Most keys one pipeline of reads carries (:meth:`RedisStore.rollup`,
:meth:`RedisStore.call_costs_many`): a report over years of days and hundreds of features is a few
round trips, never one giant pipeline whose commands and replies are all held at once."""

_log = logging.getLogger("tokenbudget.stores.redis")

_NOSCRIPT_TRIES = 3
"""Times a round trip's missing scripts (``NOSCRIPT``: they did not run) are loaded and sent
again before their operations fail as unavailable (a server flushed or restarted again and again)."""

_WRITE_CHUNK = 500
"""Most script calls one round trip of :meth:`RedisStore.reserve_many` / :meth:`RedisStore.commit_many`
carries: Redis reads a pipeline only as fast as it runs the scripts, and ``socket_timeout`` bounds
each round trip (its sending included), so a batch of any size is a series of short round trips."""

_TRANSIENT_CODES = (
    "MISCONF",
    "NOREPLICAS",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "LOADING",
    "OOM",
    "READONLY",
)
"""Error replies of a server that is up but takes no writes *for now*: its RDB save failing
(``MISCONF``), too few replicas in reach (``NOREPLICAS``), another client's slow script
(``BUSY``), a replica cut off from its primary (``MASTERDOWN``), a resharding or failover
(``TRYAGAIN``, ``CLUSTERDOWN``), its data loading, ``maxmemory`` reached, a replica written to.
Nothing was written (Redis refuses the script at its first write), and it passes by itself: the
store is unavailable (a fail-open ledger lets calls through; spooled usage waits in the spool),
never refused for good."""

_TRANSIENT_REPLY = re.compile(
    r"(?:|(?:ERR )?Error running script \(call to f_[0-9a-f]+\): @user_script:\d+: @user_script: \d+: -)"
    rf"(?:{'|'.join(_TRANSIENT_CODES)})(?![A-Z_])"
).match
"""An error reply of :data:`_TRANSIENT_CODES`: its code first (Redis 7 and later, scripts'
errors included), or inside a script's error (Redis 6)."""


def _transient(error: BaseException) -> bool:
    """Whether ``error`` (an error reply redis-py raised or returned) is one of a server taking no
    writes for now (:data:`_TRANSIENT_CODES`), not a refusal that lasts."""
    return _TRANSIENT_REPLY(str(error)) is not None


_INHERITED: list[object] = []
"""Clients and connections a forked process inherited: kept, so that they are never finalised
there (closing one could shut down the parent's socket or wait on a lock held at the fork)."""

_STATES: dict[str, RequestState] = {
    "reserved": "reserved",
    "committed": "committed",
    "released": "released",
    "expired": "expired",
}


@functools.lru_cache(maxsize=65_536)
def _enc(text: str) -> str:
    """Percent-encode everything outside ``[A-Za-z0-9._-]`` (so never ``:``, ``{``, ``}``, ``|``, space)."""
    return quote(text, safe="", errors="surrogatepass").replace("~", "%7E")


_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]+").fullmatch


def _enc_id(text: str) -> str:
    """:func:`_enc` of a request id: most (uuids) need no encoding, and each is seen once or twice,
    so they are checked rather than cached."""
    return text if _PLAIN_ID(text) else _enc(text)


def _enc_literal(text: str) -> str:
    """:func:`_enc` of ``text`` as a literal in a ``%``-format (its ``%`` doubled)."""
    return _enc(text).replace("%", "%%")


@functools.lru_cache(maxsize=65_536)
def _dec(text: str) -> str:
    """:func:`_enc` undone (cached: a report decodes the same rollup keys and counters every day)."""
    return unquote(text, errors="surrogatepass") if "%" in text else text


def _amount(value: object, field: str, key: object = None) -> str:
    """``value`` as a decimal string; ``field`` names it in the error (a template filled with ``key``)."""
    if type(value) is int and -_MAX_AMOUNT <= value <= _MAX_AMOUNT:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_AMOUNT:
        raise InvalidInputError(
            field if key is None else field.format(key),
            "must be an integer between -(2**53 - 1) and 2**53 - 1",
            value=value,
            fix="pass tokens or nano-USD",
        )
    return str(value)


def _bad_url(url: str, problem: str) -> InvalidInputError:
    return InvalidInputError(
        "store",
        f"bad Redis URL {redact_url(url)!r}: {problem}",
        value=redact_url(url),
        fix="use redis://[user:password@]host:port/db (db a number), rediss://... or "
        "redis+cluster://host:port, with options as query parameters",
    )


URL_OPTIONS = ("namespace", "retention_days", "request_retention_days")
"""Query options of a ledger's Redis URL that are the store's own, not redis-py's
(``redis://host:6379/0?namespace=prod``): the URL alone names the data of
``RedisStore(url, namespace="prod")``, for ``$TOKENBUDGET_STORE`` and ``--store``."""

_REDIS_PY_EXAMPLES = "socket_timeout, socket_connect_timeout, health_check_interval, client_name"


def check_redis_url(url: str, *, also_accepted: Sequence[str] = ()) -> None:
    """What can be told wrong about a Redis URL before connecting: its port, database and options.

    Args:
        url: ``redis://``, ``rediss://`` or ``redis+cluster://`` URL.
        also_accepted: Query options the caller reads itself (a ledger store: :data:`URL_OPTIONS`);
            any other option must be one of redis-py's.

    Raises:
        InvalidInputError: A port that is not a number in 0-65535, a database that is not a
            non-negative number, an option neither redis-py nor the caller knows, one whose
            value redis-py cannot read or refuses (``ssl_cert_reqs=bogus``), or a socket timeout
            that is not a positive, finite number of seconds.
    """
    import inspect

    from redis import connection

    cluster = url.lower().startswith("redis+cluster://")
    parsed = "redis://" + url.split("://", 1)[1] if cluster else url
    try:
        parts = urlsplit(parsed)  # (a malformed IPv6 host, "[::1:6379", raises here)
        parts.port  # noqa: B018 - reading it checks it
        options: dict[str, Any] = connection.parse_url(parsed)  # type: ignore[no-untyped-call]
    except ValueError as e:
        raise _bad_url(url, str(e)) from e
    known = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    for cls in (connection.AbstractConnection, connection.Connection, connection.SSLConnection):
        known.update(inspect.signature(cls.__init__).parameters)
    unknown = sorted(set(parse_qs(parts.query, keep_blank_values=True)) - known - set(also_accepted))
    if unknown:
        accepted = f"a redis-py connection option ({_REDIS_PY_EXAMPLES}...)"
        if also_accepted:
            accepted = f"use {', '.join(also_accepted)} or {accepted}"
        else:
            accepted = f"use {accepted}"
            if unknown[0] == "namespace":
                accepted += "; this store's namespace is its namespace= argument, not a URL option"
        raise _bad_url(url, f"unknown option {unknown[0]!r}: {accepted}")
    db = options.get("db")
    path = unquote(parts.path).replace("/", "")
    if db is None and path and not (path.isascii() and path.isdigit()):
        raise _bad_url(url, f"database {path!r} is not a number")
    if isinstance(db, int) and db < 0:  # (?db= is read as an int, or refused, by parse_url)
        raise _bad_url(url, f"database {db!r} is not a non-negative number")
    if cluster and (db or path not in ("", "0")):
        raise _bad_url(url, "a cluster has only database 0")
    for name in ("socket_timeout", "socket_connect_timeout"):
        seconds = options.get(name)
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise _bad_url(url, f"{name}={seconds!r} is not a positive, finite number of seconds")
    _check_connection_options(url, options)


def _check_connection_options(url: str, options: dict[str, Any]) -> None:
    """Build (not connect) the connection the URL's options describe: redis-py checks some values
    (``ssl_cert_reqs``...) only there, which a client does lazily, at its first command."""
    import inspect

    from redis import connection
    from redis.exceptions import RedisError

    cls = options.get("connection_class", connection.Connection)
    accepted: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            accepted.update(inspect.signature(init).parameters)
    kwargs = {k: v for k, v in options.items() if k in accepted and k not in ("self", "connection_class")}
    # what neither the connection nor the pool takes (ssl_* on a plain redis:// URL, timeout=)
    # would make every command raise a bare TypeError, for a fail-open ledger's usage too
    known = {
        "connection_class",
        "max_connections",
        "host",
        "port",
        "db",
        *URL_OPTIONS,
    }  # the pool's, the store's
    foreign = sorted(set(options) - accepted - known)
    if foreign:
        tls = " (TLS options need a rediss:// URL)" if any(k.startswith("ssl") for k in foreign) else ""
        raise _bad_url(url, f"{', '.join(foreign)}: not an option of this connection{tls}")
    name = options.get("client_name")
    if isinstance(name, str) and (not name.isprintable() or not name.isascii() or " " in name):
        raise _bad_url(url, f"client_name {name!r}: Redis takes a name without spaces (CLIENT SETNAME)")
    try:
        cls(**kwargs)
    except (RedisError, ValueError, TypeError) as e:
        raise _bad_url(url, f"{type(e).__name__}: {e}") from e


def _own_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the :data:`URL_OPTIONS` in its query (unchanged when it has none), and
    their values (percent-decoded).

    Raises:
        InvalidInputError: One is given twice, or with an empty value.
    """
    base, question, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    if not question or not any(unquote(p.partition("=")[0]) in URL_OPTIONS for p in query.split("&")):
        return url, {}
    kept: list[str] = []
    found: dict[str, str] = {}
    for piece in query.split("&"):
        raw_name, _, raw_value = piece.partition("=")
        name = unquote(raw_name)
        if name not in URL_OPTIONS:
            kept.append(piece)
            continue
        if name in found:
            raise _bad_url(url, f"option {name!r} is given twice")
        try:
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise _bad_url(url, f"option {name!r} is not percent-encoded UTF-8") from None
        if not value:
            raise _bad_url(url, f"option {name!r} has no value")
        found[name] = value
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment, found


def _url_days(url: str, name: str, found: dict[str, str]) -> int | None:
    """The number of days option ``name`` of the URL gives (``None`` when absent)."""
    text = found.get(name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 0 < int(text) <= MAX_RETENTION_DAYS):
        raise _bad_url(
            url, f"{name}={text!r} is not a positive number of days (at most {MAX_RETENTION_DAYS})"
        )
    return int(text)


def _one_value(name: str, given: object, in_url: object) -> Any:
    """The option given as an argument or in the URL: both only when they agree."""
    if in_url is None:
        return given
    if given is not None and given != in_url:
        raise InvalidInputError(
            name,
            f"is {given!r} here but {in_url!r} in the store URL",
            value=given,
            fix=f"give {name} in one place (the URL's ?{name}= or the argument)",
        )
    return in_url


def _refused_connection(url: str, error: BaseException) -> InvalidInputError | None:
    """The error of a server refusing the connection's setup for good (a database it does not have)."""
    if "DB index is out of range" in str(error):
        return _bad_url(
            url, "the server has no such database (16 by default: 0-15, see its 'databases' setting)"
        )
    return None


class RedisStore:
    """The ledger on Redis or Redis Cluster: one atomic Lua script per operation.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``redis+cluster://host:port`` (any node of a cluster; the client finds the rest).
            Query options are redis-py's, and the three below (:data:`URL_OPTIONS`):
            ``redis://host:6379/0?namespace=prod&retention_days=90`` is the same store as
            ``RedisStore("redis://host:6379/0", namespace="prod", retention_days=90)``; an
            option given both ways must agree.
        retention_days: Balances, rollups and call costs expire this many days after their last
            write (default 400, at most :data:`MAX_RETENTION_DAYS`).
        request_retention_days: Request ids, leases and the day's conversation marks expire
            sooner (one field per call adds up; default 7 days): a commit replayed after that
            would be charged again.
        namespace: Prefix of every key, to share one Redis between ledgers (default ``tb``).
        socket_timeout: Seconds to wait for a connection or an answer; operations are not
            retried, so no call blocks much longer than this.

    Raises:
        MissingDependencyError: The ``redis`` package is not installed.
        InvalidInputError: ``retention_days`` is not a number of days in 1..36500,
            ``socket_timeout`` is not a positive, finite number,
            ``namespace`` is not a non-empty string, an option is given in the URL and
            differently as an argument, or the URL is malformed (``store``: its port, database,
            an unknown option, an option of the store's own without a valid value, a connection
            option redis-py refuses such as ``ssl_cert_reqs=bogus``, a ``socket_timeout`` or
            ``socket_connect_timeout`` that is not a positive, finite number of seconds).

    Every operation raises :class:`~tokenbudget_core.errors.BudgetUnavailableError` when
    Redis cannot be reached or does not answer in time (or redis-py fails otherwise); the
    ledger then fails open or closed by its policy. An error reply of the server (it is up, and
    refuses the operation) is a :class:`RedisRefusedError`. Amounts and limits must be integers
    of at most 2**53 - 1.

    The ledger requires ``maxmemory-policy noeviction``: every ledger key carries a TTL, so any
    ``volatile-*`` or ``allkeys-*`` policy lets Redis evict balances, holds and request ids under
    memory pressure (spend forgotten, holds that lock users out, a retried commit counted
    twice). The store reads the policy after its first call that reaches Redis (``CONFIG GET
    maxmemory-policy``, or ``INFO memory`` when an ACL refuses ``CONFIG``) and logs a WARNING
    once if it is another; it does not refuse to run, as managed Redis defaults differ (often
    ``volatile-lru``): set ``noeviction`` on such a server (its parameter group).

    Example:
        >>> store = RedisStore("redis://localhost:6379/0")  # doctest: +SKIP
        >>> store.totals("2026-11-23", [("g", "nanos")], now_ms=0)  # doctest: +SKIP
        {('g', 'nanos'): (0, 0)}
        >>> store.close()  # doctest: +SKIP
    """

    commits_conversation_marks = True
    """A commit's ``conversation_mark`` is set by the commit's own script (see :mod:`.base`)."""

    def __init__(
        self,
        url: str,
        *,
        retention_days: int | None = None,
        request_retention_days: int | None = None,
        namespace: str | None = None,
        socket_timeout: float = 2.0,
    ) -> None:
        try:
            import redis
            import redis.cluster
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as e:
            raise MissingDependencyError("redis", "redis") from e
        if not isinstance(url, str):
            raise InvalidInputError("store", "must be a redis:// URL string", value=url)
        check_redis_url(url, also_accepted=URL_OPTIONS)
        conn_url, in_url = _own_options(url)
        namespace = _one_value("namespace", namespace, in_url.get("namespace"))
        days = {name: _url_days(url, name, in_url) for name in URL_OPTIONS[1:]}
        retention_days = _one_value("retention_days", retention_days, days["retention_days"])
        request_retention_days = _one_value(
            "request_retention_days", request_retention_days, days["request_retention_days"]
        )
        if namespace is None:
            namespace = "tb"
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError(
                "namespace", "must be a non-empty string", value=namespace, fix="e.g. namespace='prod'"
            )
        if retention_days is None:
            retention_days = 400
        if (
            isinstance(retention_days, bool)
            or not isinstance(retention_days, int)
            or not 0 < retention_days <= MAX_RETENTION_DAYS
        ):
            raise InvalidInputError(
                "retention_days",
                f"must be a positive number of days, at most {MAX_RETENTION_DAYS} (100 years)",
                value=retention_days,
            )
        if (
            isinstance(socket_timeout, bool)
            or not isinstance(socket_timeout, (int, float))
            or not (math.isfinite(socket_timeout) and socket_timeout > 0)
        ):
            raise InvalidInputError(
                "socket_timeout",
                "must be a positive, finite number of seconds",
                value=socket_timeout,
                fix="e.g. socket_timeout=2.0 (no timeout is not an option: a call would wait for ever)",
            )
        self.url = url
        """The URL as given (the store's own options included)."""
        self._conn_url = conn_url  # what redis-py connects to
        self._identity = _identity(conn_url, _enc(namespace))
        self._shown_url = redact_url(url)
        if request_retention_days is None:
            request_retention_days = min(7, retention_days)
        if (
            isinstance(request_retention_days, bool)
            or not isinstance(request_retention_days, int)
            or not 0 < request_retention_days <= retention_days
        ):
            raise InvalidInputError(
                "request_retention_days",
                f"must be a number of days in 1..{retention_days}",
                value=request_retention_days,
            )
        self._ttl = f"{retention_days * 86_400}:{request_retention_days * 86_400}"
        self._cost_ttl = str(retention_days * 86_400)
        self._ns = _enc(namespace)
        self._unavailable: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,  # also BusyLoadingError: a restarted server loading its data
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN
            redis.exceptions.RedisClusterException,  # no reachable node, slot not covered
            redis.exceptions.TryAgainError,
            redis.exceptions.ReadOnlyError,  # writing to a replica during a failover
            redis.exceptions.OutOfMemoryError,  # maxmemory reached: no write goes through
            redis.exceptions.InvalidResponse,  # the server at the URL does not speak Redis (HTTP, ...)
            OSError,
        )
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "decode_responses": True,
            # No retries: a retried script may have run once already, and waiting stays bounded.
            "retry": Retry(NoBackoff(), 0),
        }
        self._lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        self._client: Any = None
        self._connect: Callable[[], Any]
        self._no_script: type[BaseException] = redis.exceptions.NoScriptError
        self._script_error: type[BaseException] = redis.exceptions.ResponseError
        self._redis_error: type[BaseException] = redis.exceptions.RedisError
        self._auth_error: tuple[type[BaseException], ...] = (
            redis.exceptions.AuthenticationError,  # WRONGPASS, NOAUTH
            redis.exceptions.AuthenticationWrongNumberOfArgsError,  # a password for a server without one
        )
        self._auth_logged = False
        # Error replies redis-py raises from a read (the connection stays in step): the scripts'
        # own errors, NOSCRIPT, OOM, READONLY, and LOADING (a ConnectionError in redis-py).
        self._reply_error: tuple[type[BaseException], ...] = (
            redis.exceptions.ResponseError,
            redis.exceptions.BusyLoadingError,
        )
        self._wire: _Wire | _RawWire | None = None  # the connection scripts run on (see _round_trip)
        # hiredis packs a command in C (redis-py encodes each argument in Python first); the
        # arguments are str and int only, which both encode alike (UTF-8, decimal).
        self._pack: Callable[[tuple[Any, ...]], bytes] | None = _hiredis_pack()
        self._conn_lock = threading.Lock()
        self._batcher: _Batcher | None = None
        self._day_key_cache: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self._formats: dict[tuple[Any, ...], str] = {}  # see _format
        self._cluster = url.lower().startswith("redis+cluster://")
        if self._cluster:
            cluster_url = "redis://" + conn_url.split("://", 1)[1]
            self._connect = lambda: redis.cluster.RedisCluster.from_url(cluster_url, **options)
            # A cluster client connects when it is built: on first use, not here.
        else:
            self._connect = lambda: redis.Redis.from_url(conn_url, **options)
            try:
                self._use(self._connect())  # connects lazily; building it now checks the URL
            except (ValueError, TypeError, redis.exceptions.RedisError) as e:  # an option redis-py refuses
                raise _bad_url(url, str(e)) from e
            # Batching on one server; a cluster client runs each script on its own slot's node.
            self._batcher = _Batcher(self._send)
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        """Right after a fork, before any other thread exists: what other threads of the parent
        held (locks, a batch being sent, the client's pool and the scripts' connection, mid-reply
        perhaps) is left behind, never used nor closed here (its sockets are the parent's); the
        next call connects afresh."""
        self._lock = threading.Lock()
        self._conn_lock = threading.Lock()
        _INHERITED.append((self._client, self._wire))
        self._client, self._wire = None, None
        if self._batcher is not None:
            self._batcher = _Batcher(self._send)

    # -- connection ---------------------------------------------------------------------------

    def _use(self, client: Any) -> None:
        self._client = client
        for name in ("RESERVE", "COMMIT", "RELEASE", "TOTALS", "RECORD_COST"):
            self._scripts[name] = client.register_script(getattr(redis_scripts, name))

    @contextmanager
    def _available(self) -> Iterator[Any]:
        """Yield the client; turn "cannot reach Redis" into BudgetUnavailableError."""
        try:
            yield self._client or self._connected()
        except BudgetUnavailableError:  # (an OSError too) raised by the store itself
            raise
        except self._auth_error as e:  # (a ConnectionError in redis-py) not an outage
            raise self._refused_credentials(e) from e
        except self._unavailable as e:
            raise BudgetUnavailableError(self._shown_url, f"{type(e).__name__}: {e}") from e
        except self._script_error as e:
            raise _refused_connection(self.url, e) or self._refused(e) from e
        except self._redis_error as e:  # anything else of redis-py's: the call's outcome is unknown
            raise BudgetUnavailableError(self._shown_url, f"{type(e).__name__}: {e}") from e
        except _HANDSHAKE_ERRORS as e:
            raise self._not_redis(e) from e

    def _not_redis(self, error: Exception) -> Exception:
        """A connection's handshake that redis-py could not read (something else on the port, a
        proxy speaking only an older protocol): the store is unreachable, so the ledger fails open
        or closed as chosen (a commit is spooled), rather than a bare ``AttributeError`` losing
        the usage. Any other such error is a bug, raised as it is."""
        if not _in_handshake(error):
            return error
        return BudgetUnavailableError(
            self._shown_url,
            f"the server did not answer Redis's connection handshake ({type(error).__name__}: {error}); "
            "is a Redis server (6 or later) listening at that address?",
        )

    def _refused(self, error: BaseException) -> RedisRefusedError | BudgetUnavailableError:
        """An error reply as what it means: the server taking no writes for now (``MISCONF``,
        ``NOREPLICAS``, ``BUSY``...: :data:`_TRANSIENT_CODES`) is unavailable, as an outage is;
        any other is a refusal (``retry_later`` for the ACL's ``NOPERM``)."""
        if _transient(error):
            return BudgetUnavailableError(
                self._shown_url, f"the server takes no writes for now: {type(error).__name__}: {error}"
            )
        refused = RedisRefusedError(self._shown_url, f"{type(error).__name__}: {error}")
        # the ACL's (NOPERM), fixed without touching the data: spooled usage waits for it
        refused.retry_later = type(error).__name__ == "NoPermissionError" or "NOPERM" in str(error)
        return refused

    def _refused_credentials(self, error: BaseException) -> RedisRefusedError:
        """The server refused the URL's credentials (``WRONGPASS``, ``NOAUTH``): logged once as an
        ERROR, and raised as a refusal (never an outage that a fail-open ledger lets through)."""
        if not self._auth_logged:
            self._auth_logged = True
            _log.error("Redis at %s refused the store's credentials: %s", self._shown_url, error)
        refused = RedisRefusedError(
            self._shown_url,
            f"{type(error).__name__}: {error}",
            fix="The URL's user or password is wrong or missing: give them as "
            "redis://user:password@host:port/db (or ?username=...&password=...), and check the "
            "user is enabled in the server's ACL",
        )
        refused.retry_later = True  # spooled usage waits for the right credentials
        return refused

    def _run(self, op: _Op) -> Any:
        if self._batcher is None:
            with self._available() as client:
                result = self._call_script(client, op)
            if not self._policy_checked:
                self._check_policy()
            return result
        return self._batcher.run(op)

    _policy_checked = False
    """Whether :meth:`_check_policy` ran (once per store)."""

    def _check_policy(self) -> None:
        """Once per store, after its first call that reached Redis: a WARNING when the server may
        evict the ledger's keys (a ``maxmemory-policy`` other than ``noeviction``; every ledger
        key has a TTL, so ``volatile-*`` policies evict them too). Not refused: managed Redis
        defaults differ. Read with ``CONFIG GET``, else (an ACL refusing ``CONFIG``) from
        ``INFO memory``; a server answering neither is not checked (logged at INFO)."""
        with self._lock:
            if self._policy_checked:  # another thread's call got here first
                return
            self._policy_checked = True
        client = self._client
        try:
            try:
                found = _named(client.config_get("maxmemory-policy"), "maxmemory-policy")
            except self._redis_error:  # CONFIG refused (NOPERM, renamed away): INFO tells it too
                found = _named(client.info("memory"), "maxmemory_policy")
        except Exception as e:  # noqa: BLE001 - a check: never a failure of the store's calls
            _log.info("%s: could not read maxmemory-policy (%s: %s)", self._shown_url, type(e).__name__, e)
            return
        evicting = sorted(p for p in found if p != "noeviction")
        if evicting:
            _log.warning(
                "%s: Redis maxmemory-policy is %s, not noeviction: under memory pressure Redis may "
                "evict the ledger's keys (spend forgotten, budgets bypassed, holds that lock users "
                "out, commits counted twice). The ledger requires maxmemory-policy noeviction "
                "(CONFIG SET maxmemory-policy noeviction, or the managed service's parameter group)",
                self._shown_url,
                " and ".join(evicting),
            )

    def _send(self, ops: Sequence[_Op]) -> list[Any]:
        """Run ``ops`` in one round trip (``EVALSHA`` each); a result per op, or its exception.

        A script the server does not have (``NOSCRIPT``: it did not run) is loaded and its
        operations are sent again; any other error belongs to its operation alone.
        """
        try:  # what _available() does, without a generator per round trip
            results = self._send_on(self._client or self._connected(), ops)
        except BudgetUnavailableError:  # (an OSError too) raised by the store itself
            raise
        except self._auth_error as e:  # (a ConnectionError in redis-py) not an outage
            raise self._refused_credentials(e) from e
        except self._unavailable as e:
            raise BudgetUnavailableError(self._shown_url, f"{type(e).__name__}: {e}") from e
        except self._script_error as e:  # raised while connecting: replies are returned, not raised
            raise _refused_connection(self.url, e) or self._refused(e) from e
        except self._redis_error as e:  # anything else of redis-py's: the call's outcome is unknown
            raise BudgetUnavailableError(self._shown_url, f"{type(e).__name__}: {e}") from e
        except _HANDSHAKE_ERRORS as e:
            raise self._not_redis(e) from e
        for i, result in enumerate(results):
            if isinstance(result, self._script_error):  # the server refused that operation
                refused = results[i] = self._refused(result)
                refused.__cause__ = result
        if not self._policy_checked:
            self._check_policy()
        return results

    def _connected(self) -> Any:
        with self._lock:
            if self._client is None:
                self._use(self._connect())
            return self._client

    def _send_on(self, client: Any, ops: Sequence[_Op]) -> list[Any]:
        """:meth:`_send` on a connected client (errors not yet turned into BudgetUnavailableError)."""
        if self._batcher is None:  # a cluster: each script on its own slot's node
            results: list[Any] = []
            for op in ops:
                try:
                    results.append(self._call_script(client, op))
                except self._unavailable:  # (BudgetUnavailableError too: an OSError)
                    raise
                except Exception as e:  # noqa: BLE001 - that operation's own error
                    results.append(e)
            return results
        with self._conn_lock:  # the batcher sends one round trip at a time; *_many calls too
            results = self._round_trip(client, ops)
            for _ in range(_NOSCRIPT_TRIES):
                missing = [i for i, r in enumerate(results) if isinstance(r, self._no_script)]
                if not missing:
                    return results
                for name in {ops[i].script for i in missing}:
                    client.script_load(self._scripts[name].script)
                for i, r in zip(missing, self._round_trip(client, [ops[i] for i in missing]), strict=True):
                    results[i] = r
            return [self._no_script_left(r) if isinstance(r, self._no_script) else r for r in results]

    def _call_script(self, client: Any, op: _Op) -> Any:
        """One script call through redis-py (a cluster: on its slot's node), ``NOSCRIPT`` answered
        like :meth:`_send_on` does (redis-py's script object loads and retries once itself)."""
        script = self._scripts[op.script]
        for _ in range(_NOSCRIPT_TRIES):
            try:
                return script(keys=op.keys, args=op.args, client=client)
            except self._no_script:
                continue
        try:
            return script(keys=op.keys, args=op.args, client=client)
        except self._no_script as e:
            raise self._no_script_left(e) from e

    def _no_script_left(self, error: BaseException) -> BudgetUnavailableError:
        """A script still missing after :data:`_NOSCRIPT_TRIES` loads: it did not run, and the server
        keeps losing it (flushed or restarted over and over, or loads landing on another server
        behind a proxy): unavailable, so the ledger fails open or closed (a commit is spooled)."""
        error_text = f"{type(error).__name__}: {error}"
        return BudgetUnavailableError(
            self._shown_url, f"{error_text}, still after loading the script {_NOSCRIPT_TRIES} times"
        )

    def _round_trip(self, client: Any, ops: Sequence[_Op]) -> list[Any]:
        """Send ``ops`` as one pipeline on the store's own connection and read every reply.

        The store keeps one connection for its scripts instead of borrowing one from the pool
        per call (about half of a lone call's time in redis-py); a reply that is an error of its
        operation alone (the script's own failure, ``NOSCRIPT``) is returned in its place. On any
        other failure (the connection, or a server refusing writes) the connection is dropped
        (its stream may be out of step) and the error raised for the whole round trip.
        """
        wire, scripts, pack = self._wire, self._scripts, self._pack
        commands = [("EVALSHA", scripts[op.script].sha, len(op.keys), *op.keys, *op.args) for op in ops]
        try:
            if wire is None or wire.pid != os.getpid():  # none yet, or the parent's (forked)
                wire = self._wire = _open_wire(_own_connection(client), raw=pack is not None)
            elif wire.closed():
                wire.reconnect()
            wire.send(commands if pack is None else b"".join([pack(c) for c in commands]))
            results: list[Any] = []
            for _ in ops:
                try:
                    reply = wire.read()
                except self._reply_error as e:  # redis-py raises an error reply
                    reply = e
                results.append(reply)
        except BaseException:
            self._drop_connection()
            raise
        for reply in results:  # every reply read: the connection is in step, and kept
            # OOM, READONLY, LOADING, MISCONF, NOREPLICAS, BUSY...: no write goes through
            if isinstance(reply, self._unavailable) or (
                isinstance(reply, self._script_error) and _transient(reply)
            ):
                raise reply
        return results

    def _send_all(self, ops: Sequence[_Op]) -> list[Any]:
        """:meth:`_send` in round trips of at most :data:`_WRITE_CHUNK` operations, with a lone
        operation's script error returned like a batch's.

        When a round trip after the first fails, the operations sent before keep their results;
        those of the failed round trip (their answers lost: they may have run) and the ones after
        it (not sent) each get a :class:`~tokenbudget_core.errors.BudgetUnavailableError`.
        """
        results: list[Any] = []
        for start in range(0, len(ops), _WRITE_CHUNK):
            chunk = ops[start : start + _WRITE_CHUNK]
            try:
                results += self._send(chunk)
            except BudgetUnavailableError as e:
                if start == 0:
                    raise
                for i in range(len(ops) - start):
                    lost = BudgetUnavailableError(
                        self._shown_url,
                        e.detail,
                        consequence=(
                            "the answer to this part of the batch was lost (it may have run)"
                            if i < len(chunk)
                            else "this part of the batch was not sent"
                        ),
                    )
                    lost.__cause__ = e
                    if i >= len(chunk):
                        lost.sent = False  # nothing of it ran: nothing to release later
                    results.append(lost)
                return results
            except Exception as e:
                if len(ops) == 1:
                    return [e]
                raise
        return results

    def _drop_connection(self) -> None:
        """Close the scripts' connection (its stream may be out of step); the next round trip
        opens a new one. It is the store's own, never the pool's: nothing to give back."""
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.conn.disconnect()

    def _keys(self, day: str, *names: str) -> list[str]:
        tag = f"{{{self._ns}:{_enc(day)}}}"
        return [f"{tag}:{name}" for name in names]

    def _day_keys(self, day: str, call_cost_key: str | None = None) -> tuple[str, ...]:
        """``bal req held leases rollup marks`` of ``day``: the keys of every reserve (the first
        four) and commit, and with ``call_cost_key`` the cost samples' key of a commit recording
        one (cached)."""
        found = self._day_key_cache.get((day, call_cost_key))
        if found is None:
            if len(self._day_key_cache) > 4_096:
                self._day_key_cache.clear()
            names = ["bal", "req", "held", "leases", "rollup", "marks"]
            if call_cost_key is not None:
                names.append(f"costs:{_enc(call_cost_key)}")
            found = tuple(self._keys(day, *names))
            self._day_key_cache[(day, call_cost_key)] = found
        return found

    # -- the contract (see .base) --------------------------------------------------------------

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        """Expire stale leases, then check every limit and reserve every amount, atomically."""
        op = self._reserve_op(req)
        return self._reserve_outcome(req, self._run(op))

    def reserve_many(self, reqs: Sequence[ReserveRequest]) -> list[ReserveOutcome | Exception]:
        """:meth:`reserve` each request (in order, each atomic on its own) in one round trip per
        :data:`_WRITE_CHUNK` requests.

        Returns each request's outcome, or the error of a request that failed on the server, or
        a :class:`~tokenbudget_core.errors.BudgetUnavailableError` for each request of a round
        trip after the first that failed (its answer lost) and of the ones after it (not sent).

        Raises:
            BudgetUnavailableError: The first round trip failed (no outcome is known for any request).
        """
        ops = [self._reserve_op(req) for req in reqs]
        return [
            r if isinstance(r, Exception) else self._reserve_outcome(req, r)
            for req, r in zip(reqs, self._send_all(ops), strict=True)
        ]

    def commit_many(self, reqs: Sequence[CommitRequest]) -> list[CommitOutcome | Exception]:
        """:meth:`commit` each request (in order, each atomic and idempotent) in one round trip per
        :data:`_WRITE_CHUNK` requests.

        Returns each request's outcome, or the error of a request that failed on the server, or
        a :class:`~tokenbudget_core.errors.BudgetUnavailableError` for each request of a round
        trip after the first that failed (its answer lost) and of the ones after it (not sent).

        Raises:
            BudgetUnavailableError: The first round trip failed (no outcome is known for any request).
        """
        ops = [self._commit_op(req) for req in reqs]
        return [
            r if isinstance(r, Exception) else self._commit_outcome(req, r)
            for req, r in zip(reqs, self._send_all(ops), strict=True)
        ]

    def reserve_keyed(
        self,
        day: str,
        request_id: str,
        keys: Keys,
        amounts: Sequence[int],
        limits: Sequence[int | None],
        now_ms: int,
        lease_ms: int,
    ) -> tuple[int, ...] | ReserveOutcome:
        """:meth:`reserve` of ``amounts`` on the budgets ``keys`` limited by ``limits``, for the
        ledger's lane (no request or outcome objects): ``spent + reserved`` per budget after
        reserving, or the outcome of a refusal or a duplicate. The values are trusted (the
        ledger checked them): plain ints within the stores' range, ids of encodable text."""
        op = self._keyed_reserve_op(day, request_id, keys, amounts, limits, now_ms, lease_ms)
        return self._reserve_answer(
            self._run(op),
            lambda i: Check(scope=keys[i][0], metric=keys[i][1], amount=amounts[i], limit=limits[i]),
        )

    @staticmethod
    def _reserve_answer(result: Any, check: Callable[[int], Check]) -> tuple[int, ...] | ReserveOutcome:
        """The reserve script's reply: ``spent + reserved`` per budget, or the outcome of a
        refusal (``check(i)``: the check at index ``i``) or a duplicate."""
        kind = result[0]
        if kind == "refused":
            _, index, spent, reserved = result
            return ReserveOutcome(ok=False, failed=check(int(index) - 1), used=int(spent) + int(reserved))
        if kind == "duplicate":
            return ReserveOutcome(ok=True, state=_STATES[result[1]], duplicate=True)
        return tuple([int(result[i]) + int(result[i + 1]) for i in range(1, len(result), 2)])

    def _format(self, kind: str, keys: tuple[Any, ...], limits: tuple[int | None, ...] = ()) -> str:
        """The ``%``-format of a script argument naming budgets or counters, encoded, with a
        ``%d`` per amount (cached: one payer's budgets recur call after call). ``kind``:

        * ``"checks"``: ``<scope>|<metric> %d <limit or ->`` per budget of ``keys`` and ``limits``;
        * ``"charges"``: ``<scope>|<metric> %d`` per budget of ``keys``;
        * ``"counters"``: ``<name> %d`` per counter name in ``keys``.
        """
        found = self._formats.get((kind, keys, limits))
        if found is None:
            if kind == "counters":
                parts = [f"{_enc_literal(name)} %d" for name in keys]
            elif kind == "charges":
                parts = [f"{_enc_literal(scope)}|{_enc_literal(metric)} %d" for scope, metric in keys]
            else:
                parts = [
                    f"{_enc_literal(scope)}|{_enc_literal(metric)} %d {'-' if limit is None else limit}"
                    for (scope, metric), limit in zip(keys, limits, strict=True)
                ]
            found = " ".join(parts)
            if len(self._formats) >= 4_096:
                self._formats.clear()
            self._formats[(kind, keys, limits)] = found
        return found

    def _keyed_reserve_op(
        self,
        day: str,
        request_id: str,
        keys: Keys,
        amounts: Sequence[int],
        limits: Sequence[int | None],
        now_ms: int,
        lease_ms: int,
    ) -> _Op:
        checks = self._format("checks", keys, tuple(limits)) % tuple(amounts)
        args: list[str | int] = [self._ttl, _enc_id(request_id), str(now_ms), str(now_ms + lease_ms), checks]
        return _Op("RESERVE", self._day_keys(day)[:4], args)

    def _reserve_op(self, req: ReserveRequest) -> _Op:
        """The script call of ``req``, its numbers checked (a store can be driven by hand)."""
        for i, c in enumerate(req.checks):
            if c.limit is not None:
                _amount(c.limit, "checks[{}].limit", i)
            _amount(c.amount, "checks[{}].amount", i)
        _amount(req.now_ms, "now_ms")
        _amount(req.lease_ms, "lease_ms")
        return self._keyed_reserve_op(
            req.day,
            req.request_id,
            tuple([(c.scope, c.metric) for c in req.checks]),
            [int(c.amount) for c in req.checks],
            [None if c.limit is None else int(c.limit) for c in req.checks],
            int(req.now_ms),
            int(req.lease_ms),
        )

    @classmethod
    def _reserve_outcome(cls, req: ReserveRequest, result: Any) -> ReserveOutcome:
        found = cls._reserve_answer(result, req.checks.__getitem__)
        if isinstance(found, ReserveOutcome):
            return found
        return _new_reserve_outcome(True, "reserved", None, 0, False, found)

    def commit(self, req: CommitRequest) -> CommitOutcome:
        """Charge the actual usage once per request id, settling its reservation if live.

        With ``req.call_cost_key`` the same script also records ``rollup["cost_nanos"]`` as one
        call's cost (see :meth:`call_costs`).
        """
        op = self._commit_op(req)
        return self._commit_outcome(req, self._run(op))

    def commit_keyed(
        self,
        day: str,
        request_id: str,
        keys: Keys,
        amounts: Sequence[int],
        rollup_key: str,
        rollup: Mapping[str, int],
        call_cost_key: str | None,
    ) -> tuple[bool, RequestState | None, tuple[int, ...]]:
        """:meth:`commit` of ``amounts`` to the budgets ``keys`` (as in :meth:`reserve_keyed`, values
        trusted): ``(applied, previous, spent per budget)``. With ``call_cost_key`` the script
        records the call's cost sample too."""
        result = self._run(
            self._keyed_commit_op(day, request_id, keys, amounts, rollup_key, rollup, call_cost_key)
        )
        applied, previous, *spent = result
        return bool(applied), _STATES.get(previous), tuple([int(v) for v in spent])

    def _keyed_commit_op(
        self,
        day: str,
        request_id: str,
        keys: Keys,
        amounts: Sequence[int],
        rollup_key: str,
        rollup: Mapping[str, int],
        call_cost_key: str | None,
        conversation_mark: str | None = None,
    ) -> _Op:
        charges = self._format("charges", keys) % tuple(amounts)
        counters = self._format("counters", tuple(rollup)) % tuple(rollup.values())
        cost = "" if call_cost_key is None else str(rollup.get("cost_nanos", 0))
        script_keys = self._day_keys(day, call_cost_key)
        mark = legacy_ttl = ""
        if conversation_mark is not None:
            mark = _enc(conversation_mark)
            if not self._cluster:  # the mark as older releases set it (another slot on a cluster)
                script_keys = (*script_keys, f"{self._ns}:mark:{mark}")
                legacy_ttl = str(CONVERSATION_MARK_TTL_S)
        args: list[str | int] = [
            self._ttl, _enc_id(request_id), _enc(rollup_key), cost, charges, counters, mark, legacy_ttl
        ]  # fmt: skip
        return _Op("COMMIT", script_keys, args)

    def _commit_op(self, req: CommitRequest) -> _Op:
        """The script call of ``req``, its numbers checked (a store can be driven by hand)."""
        if req.call_cost_key is not None:
            _amount(req.rollup.get("cost_nanos", 0), "rollup['cost_nanos']")
        for i, c in enumerate(req.charges):
            _amount(c.amount, "charges[{}].amount", i)
        for name, value in req.rollup.items():
            _amount(value, "rollup[{!r}]", name)
        return self._keyed_commit_op(
            req.day,
            req.request_id,
            tuple([(c.scope, c.metric) for c in req.charges]),
            [int(c.amount) for c in req.charges],
            req.rollup_key,
            {name: int(value) for name, value in req.rollup.items()},
            req.call_cost_key,
            req.conversation_mark,
        )

    @staticmethod
    def _commit_outcome(req: CommitRequest, result: Any) -> CommitOutcome:
        applied, previous, *spent = result
        if not applied:
            return CommitOutcome(applied=False, previous=_STATES.get(previous))
        return _new_commit_outcome(
            True, _STATES.get(previous), tuple([int(v) for v in spent]), req.call_cost_key is not None
        )

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        """Give back a live reservation; False for settled, expired or unknown requests
        (``forget``: see :meth:`LedgerStore.release <tokenbudget_core.stores.base.LedgerStore.release>`)."""
        keys = self._keys(day, "bal", "req", "held", "leases")
        args: list[str | int] = [self._ttl, _enc_id(request_id), int(forget)]
        return bool(self._run(_Op("RELEASE", keys, args)))

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        """``(spent, reserved)`` per scope and metric, after expiring stale leases."""
        args: list[str | int] = [_amount(now_ms, "now_ms")]
        args += [f"{_enc(scope)}|{_enc(metric)}" for scope, metric in scopes]
        values = self._run(_Op("TOTALS", self._keys(day, "bal", "req", "held", "leases"), args))
        return {
            (scope, metric): (int(values[2 * i]), int(values[2 * i + 1]))
            for i, (scope, metric) in enumerate(scopes)
        }

    def _read(self, keys: Sequence[str], queue: Callable[[Any, str], object]) -> list[Any]:
        """The replies of one read per key (``queue(pipe, key)`` adds it), in pipelines of
        :data:`_READ_CHUNK` keys.

        A pipeline is one round trip on a single server; on a cluster, one per node holding
        some of its keys (the keys may live in any slot: the client groups them by node).
        """
        replies: list[Any] = []
        with self._available() as client:
            for start in range(0, len(keys), _READ_CHUNK):
                with client.pipeline(transaction=False) as pipe:
                    for key in keys[start : start + _READ_CHUNK]:
                        queue(pipe, key)
                    replies += pipe.execute()
        return replies

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        """Attribution rows of these days, sorted by day (as given) and rollup key.

        One ``HGETALL`` per day, :data:`_READ_CHUNK` days per round trip.
        """
        wanted = list(dict.fromkeys(check_days(days)))
        hashes = self._read([self._keys(day, "rollup")[0] for day in wanted], _hgetall)
        rows: list[RollupRow] = []
        for day, fields in zip(wanted, hashes, strict=True):
            values: dict[str, dict[str, int]] = {}
            for field, value in fields.items():
                key, sep, counter = field.partition("|")
                row = values.setdefault(_dec(key), {})
                if sep:
                    row[_dec(counter)] = int(value)
            rows += [RollupRow(day=day, rollup_key=k, values=values[k]) for k in sorted(values)]
        return rows

    def mark_once(self, key: str, ttl_s: int) -> bool:
        """``SET NX EX``: True when this call set the mark (a TTL of 0 or less never holds)."""
        if ttl_s <= 0:
            return True
        with self._available() as client:
            return bool(client.set(f"{self._ns}:mark:{_enc(key)}", "1", nx=True, ex=int(ttl_s)))

    def mark_once_for(self, key: str, ttl_s: int, holder: str) -> bool:
        """``SET NX EX`` with ``holder`` as the value, then ``GET``: True when this call set the
        mark or ``holder`` had (see :mod:`.base`)."""
        if ttl_s <= 0:
            return True
        name = f"{self._ns}:mark:{_enc(key)}"
        with self._available() as client:
            if client.set(name, holder, nx=True, ex=int(ttl_s)):
                return True
            value = client.get(name)
        return (value.decode() if isinstance(value, bytes) else value) == holder

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        """Append one call's cost to the day's list of the feature."""
        key = self._keys(day, f"costs:{_enc(feature)}")
        self._run(_Op("RECORD_COST", key, [self._cost_ttl, _amount(cost_nanos, "cost_nanos")]))

    def call_costs(self, day: str, feature: str) -> list[int]:
        """Every recorded cost of the feature and day, in the order recorded."""
        with self._available() as client:
            return [int(v) for v in client.lrange(self._cost_key(day, feature), 0, -1)]

    def call_costs_many(self, pairs: Sequence[CostPair]) -> dict[CostPair, list[int]]:
        """:meth:`call_costs` of every ``(day, feature)`` pair: one ``LRANGE`` each, sent in
        pipelines of :data:`_READ_CHUNK` (one round trip each, per node on a cluster).

        Raises:
            InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
            BudgetUnavailableError: Redis cannot be reached (nothing is returned).
        """
        wanted = check_cost_pairs(pairs)
        lists = self._read([self._cost_key(day, feature) for day, feature in wanted], _lrange)
        return {pair: [int(v) for v in costs] for pair, costs in zip(wanted, lists, strict=True)}

    def call_cost_counts(self, pairs: Sequence[CostPair]) -> dict[CostPair, int]:
        """How many costs each pair has now (see :class:`~.base.CallCostSnapshot`): one ``LLEN``
        each, in pipelines of :data:`_READ_CHUNK`.

        Raises:
            InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
            BudgetUnavailableError: Redis cannot be reached.
        """
        wanted = check_cost_pairs(pairs)
        lengths = self._read([self._cost_key(day, feature) for day, feature in wanted], _llen)
        return {pair: int(n) for pair, n in zip(wanted, lengths, strict=True)}

    def scan_call_costs(
        self, counts: Mapping[CostPair, int], size: int
    ) -> Iterator[tuple[CostPair, list[int]]]:
        """The first ``counts[pair]`` costs of each pair (costs are only appended, so these are
        the snapshot's), in chunks of at most ``size``: ``LRANGE`` slices, each pipeline
        carrying at most ``size`` costs and :data:`_READ_CHUNK` slices (one round trip; per node
        on a cluster)."""
        slices = [
            (pair, start, min(start + size, n)) for pair, n in counts.items() for start in range(0, n, size)
        ]
        i = 0
        while i < len(slices):
            batch: list[tuple[CostPair, int, int]] = []
            total = 0
            while (
                i < len(slices)
                and len(batch) < _READ_CHUNK
                and (not batch or total + slices[i][2] - slices[i][1] <= size)
            ):
                batch.append(slices[i])
                total += slices[i][2] - slices[i][1]
                i += 1
            with self._available() as client, client.pipeline(transaction=False) as pipe:
                for (day, feature), start, stop in batch:
                    pipe.lrange(self._cost_key(day, feature), start, stop - 1)
                replies = pipe.execute()
            for (pair, _, _), costs in zip(batch, replies, strict=True):
                if costs:
                    yield pair, [int(v) for v in costs]

    def _cost_key(self, day: str, feature: str) -> str:
        return self._keys(day, f"costs:{_enc(feature)}")[0]

    def ping(self) -> None:
        """Raise :class:`~tokenbudget_core.errors.BudgetUnavailableError` if Redis does not answer."""
        with self._available() as client:
            client.ping()

    def close(self) -> None:
        """Close every connection (a later call connects again)."""
        with self._lock:
            client, self._client = self._client, None
        with self._conn_lock:
            self._drop_connection()
        if client is not None:
            client.close()

    @property
    def identity(self) -> str:
        """Where this store's data lives, whatever the URL's spelling: single server or cluster,
        the host (lower-cased; a name is not resolved, so ``localhost`` and ``127.0.0.1`` differ),
        port, database and namespace, as ``redis://host:port/db?namespace=ns`` (a cluster:
        ``redis+cluster://host:port?namespace=ns``). No credentials and no connection options:
        a rotated password, TLS or an added ``?socket_timeout=`` is the same data. Hashed for
        :func:`~tokenbudget_core.ledger.default_spool_path` and the owner of spooled lines, so
        a restarted ledger replays what it spooled before.

        A cluster is known by the seed node its URL names, not by the cluster itself: a ledger
        whose URL names another node of the same cluster does not replay what was spooled under
        the old seed. Give the seed a stable name (a DNS name for the cluster), and change it only
        once the spool is replayed."""
        return self._identity

    def __repr__(self) -> str:
        return f"RedisStore({self._shown_url!r})"


class RedisRefusedError(StoreRefusedError):
    """Redis is up but answered one of the ledger's operations with an error: a key of the
    namespace holding another type (``WRONGTYPE``: another application writes under it), a user
    the ACL does not allow to run scripts (``NOPERM``), a script that failed on the server, or
    credentials it does not take (``WRONGPASS``, ``NOAUTH``: a wrong or missing password).

    Not an outage (never let through by ``on_unavailable``: a fail-open ledger with a wrong
    password would otherwise enforce no budget, silently, until someone looked; a commit it
    refuses is spooled, see :class:`~tokenbudget_core.errors.StoreRefusedError`), and not
    retried: fix the server, its ACL, the URL's credentials, or pick a namespace of the ledger's
    own. A server that takes no writes *for now* (``MISCONF``, ``NOREPLICAS``, ``BUSY``...:
    :data:`_TRANSIENT_CODES`) is no refusal: it raises
    :class:`~tokenbudget_core.errors.BudgetUnavailableError`, as an outage does.

    Attributes:
        store: The store's URL, credentials redacted.
        reason: Redis's error reply.
        fix: What to check.
    """

    def __init__(self, store: str, reason: str, *, fix: str | None = None) -> None:
        self.store = store
        self.reason = reason
        self.fix = fix or (
            "Check the server's ACL and that no other application writes under the ledger's "
            "namespace (namespace=)"
        )
        said = reason.rstrip().rstrip(".")  # Redis's replies often end with a period already
        super().__init__(f"Redis at {store} refused a ledger operation: {said}. {self.fix}")


def _named(answer: object, name: str) -> set[str]:
    """The string values of ``name`` in a ``CONFIG GET`` or ``INFO`` answer (a cluster client's
    answer may hold one per node, nested)."""
    if not isinstance(answer, Mapping):
        return set()
    found = {answer[name]} if isinstance(answer.get(name), str) else set()
    for value in answer.values():
        found |= _named(value, name)
    return found


def _identity(conn_url: str, namespace: str) -> str:
    """:attr:`RedisStore.identity` of a URL (without the store's own options) and an encoded
    namespace."""
    from redis import connection

    cluster = conn_url.lower().startswith("redis+cluster://")
    options: dict[str, Any] = connection.parse_url(  # type: ignore[no-untyped-call]
        "redis://" + conn_url.split("://", 1)[1] if cluster else conn_url
    )
    db = int(options.get("db") or 0)
    if options.get("path"):  # unix://: the socket's path
        return f"redis+unix://{options['path']}?db={db}&namespace={namespace}"
    host = str(options.get("host") or "localhost").lower()
    port = int(options.get("port") or 6379)
    node = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if cluster:
        return f"redis+cluster://{node}?namespace={namespace}"
    return f"redis://{node}/{db}?namespace={namespace}"


def _hgetall(pipe: Any, key: str) -> object:
    return pipe.hgetall(key)


def _lrange(pipe: Any, key: str) -> object:
    return pipe.lrange(key, 0, -1)


def _llen(pipe: Any, key: str) -> object:
    return pipe.llen(key)


_new_reserve_outcome = positional_maker(ReserveOutcome)
_new_commit_outcome = positional_maker(CommitOutcome)


def _hiredis_pack() -> Callable[[tuple[Any, ...]], bytes] | None:
    try:
        from hiredis import pack_command
    except ImportError:  # redis-py packs, only slower
        return None
    return pack_command


class _Wire:
    """The connection the store's scripts run on, through redis-py's connection methods."""

    def __init__(self, conn: Any) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.conn = conn
        self.pid = os.getpid()  # a forked child never writes on its parent's socket
        self._broken: tuple[type[BaseException], ...] = (RedisConnectionError, OSError)

    def closed(self) -> bool:
        """Something to read before anything was sent: the server closed the connection (a
        restart, an idle timeout). The pool runs the same check on every connection it lends;
        without it the first call after a restart would fail."""
        try:
            return bool(self.conn.can_read())
        except self._broken:
            return True

    def reconnect(self) -> None:
        self.conn.disconnect()
        self.conn.connect()

    def send(self, commands: bytes | list[tuple[Any, ...]]) -> None:
        conn = self.conn
        conn.send_packed_command([commands] if isinstance(commands, bytes) else conn.pack_commands(commands))

    def read(self) -> Any:
        return self.conn.read_response()


class _RawWire(_Wire):
    """:class:`_Wire` on the connection's socket itself, read by a hiredis reader of its own.

    redis-py connects (authentication, database, client name); after that a round trip is a
    ``sendall`` and ``recv_into`` calls, without redis-py's per-command checks. Only for a plain
    TCP or Unix socket (see :func:`_open_wire`); a reply error is returned as the
    exception redis-py would raise (``NoScriptError``, ``ReadOnlyError``...).
    """

    def __init__(self, conn: Any, reader: Callable[[], Any], push: type | None) -> None:
        super().__init__(conn)
        self._new_reader = reader
        self._push = push
        self._attach()

    def _attach(self) -> None:
        self.sock = sock = self.conn._sock
        self.reader = self._new_reader()
        self.buffer = bytearray(65_536)
        self.poll = select.poll()
        self.poll.register(sock, select.POLLIN)

    def closed(self) -> bool:
        # (a socket redis-py replaced or closed: its descriptor may be another socket's by now)
        return self.conn._sock is not self.sock or bool(self.poll.poll(0))

    def reconnect(self) -> None:
        super().reconnect()
        self._attach()

    def send(self, commands: bytes | list[tuple[Any, ...]]) -> None:
        assert isinstance(commands, bytes)  # a raw wire is opened only when hiredis packs
        self.sock.sendall(commands)

    def read(self) -> Any:
        reader = self.reader
        reply = reader.gets()
        while reply is False:
            n = self.sock.recv_into(self.buffer)
            if not n:
                raise ConnectionResetError("Redis closed the connection")
            reader.feed(self.buffer, 0, n)
            reply = reader.gets()
        if self._push is not None and type(reply) is self._push:  # RESP3: not a reply, not ours
            return self.read()
        return reply


_HANDSHAKE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError)
"""What redis-py raises, not as its own errors, reading a handshake reply it did not expect."""


def _in_handshake(error: BaseException) -> bool:
    """Whether ``error`` was raised inside redis-py's connection handshake (``on_connect...``)."""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name.startswith("on_connect") and f"{os.sep}redis{os.sep}" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


_PROTOCOLS = (None, 2, 3, "2", "3")
"""RESP versions a raw wire reads (hiredis parses both; scripts reply alike in both)."""


def _own_connection(client: Any) -> Any:
    """A new connection to the client's server, connected, made like the pool's own but not
    counted among them: the scripts' connection is held for good and dropped on any failure, so
    a pool slot would be lost each time (and ``?max_connections=1`` would leave the pool none)."""
    pool = client.connection_pool
    conn = pool.connection_class(**pool.connection_kwargs)
    try:
        conn.connect()
    except BaseException:
        conn.disconnect()
        raise
    return conn


def _open_wire(conn: Any, *, raw: bool) -> _Wire:
    """The wire for a connected redis-py connection: raw (when ``raw``: hiredis packs the
    commands) if its socket is a plain one and redis-py's error parser is importable, else
    through redis-py."""
    sock = getattr(conn, "_sock", None)
    if not raw or type(sock) is not socket.socket or getattr(conn, "protocol", 2) not in _PROTOCOLS:
        return _Wire(conn)  # TLS (an SSLSocket), or a redis-py without a plain socket
    try:
        import hiredis
        from redis._parsers.base import BaseParser
        from redis.exceptions import ConnectionError as StreamBroken
    except ImportError:
        return _Wire(conn)
    encoder = conn.encoder
    options: dict[str, Any] = {
        "replyError": BaseParser.parse_error,  # NOSCRIPT -> NoScriptError, READONLY -> ReadOnlyError...
        "protocolError": StreamBroken,  # a stream out of step: the connection is dropped
        "errors": encoder.encoding_errors,
    }
    if encoder.decode_responses:
        options["encoding"] = encoder.encoding
    push = getattr(hiredis, "PushNotification", None)  # hiredis >= 3.2
    return _RawWire(conn, functools.partial(hiredis.Reader, **options), push)


class _Op:
    """One script call waiting for a round trip."""

    __slots__ = ("args", "done", "keys", "lead", "result", "script")

    def __init__(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.result: Any = None
        self.done: threading.Event | None = None  # only a caller that has to wait gets one
        self.lead = False  # set when a waiting caller is asked to send the next batch


class _Batcher:
    """Group commit of script calls: one caller at a time talks to Redis, carrying everyone's.

    A caller that finds no round trip in flight sends the queue (its own operation included);
    callers arriving meanwhile queue theirs and wait. When a round trip ends its sender hands the
    results out and, if more operations queued up, asks the first of their callers to send them.
    Nobody waits for a timer: a lone caller's operation leaves at once.
    """

    def __init__(self, send: Callable[[Sequence[_Op]], list[Any]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queue: list[_Op] = []
        self._sending = False

    def run(self, op: _Op) -> Any:
        """The script's reply; raises its error (or the round trip's, for every operation in it)."""
        with self._lock:
            self._queue.append(op)
            if self._sending:
                op.done = threading.Event()
            else:
                self._sending = True
        if op.done is not None:
            op.done.wait()
            if not op.lead:
                return _outcome(op)
        self._flush()
        return _outcome(op)

    def _flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            results = self._send(batch)
        except BaseException as e:  # noqa: BLE001 - handed to every caller in the batch, raised there
            results = [e, *[own_copy(e) for _ in batch[1:]]]
        for op, result in zip(batch, results, strict=True):
            op.result = result
        with self._lock:
            if self._queue:  # the next sender: the first caller still waiting
                following = self._queue[0]
                following.lead = True
                assert following.done is not None
                following.done.set()
            else:
                self._sending = False
        for op in batch:
            if op.done is not None:
                op.done.set()


def _outcome(op: _Op) -> Any:
    if isinstance(op.result, BaseException):
        raise op.result
    return op.result
