"""Budget alerts: thresholds per budget (default 80% and 100%), fired once per budget and day
(and again at its own thresholds for a limit changed during the day, e.g. raised after an alert).

A threshold alert fires on what was spent, after a commit: a refused call spends nothing, so
with the default ladder (calls refused from 90%, ``cache_only``) the 100% alert does not fire while a budget's
calls are being refused. A budget that refuses a call sends an alert of its own instead
(:attr:`Alert.refusing`), once per budget, limit and day (see
:attr:`~tokenbudget_core.budgets.BudgetPolicy.alert_thresholds`).

Usage landing on a day older than the store keeps alert marks
(:data:`~tokenbudget_core.ledger.ALERT_MARK_TTL_S` less a day: recorded late with ``at=``, or
replayed from a spool after a long outage) sends none of that day's alerts, rather than send
them twice.

Sinks: ``"log"`` (a WARNING on the ``tokenbudget.alerts`` logger), any plain callable taking an
:class:`Alert` (an ``async def`` one is refused: hand the alert to your loop with
``asyncio.run_coroutine_threadsafe``), or a webhook URL (``http(s)://...``; a non-ASCII path or
query is sent percent-encoded as UTF-8, a non-ASCII host in its IDNA form) that receives the
alert as JSON (a :class:`Webhook` of that URL; ``Webhook(url, timeout_s=30)`` for one that
answers slowly).

An alert fires once per store (marked in the store, whichever process or ``Ledger`` object
commits), and is sent by the sinks of the ledger whose commit crossed the threshold. Sinks are
per ledger: every ledger of one store (an app's, a batch job's, the one ``tokenbudget serve``
builds: its ``--alert``, ``create_app(alerts=)``) should carry the same sinks, or an alert
another ledger crosses goes only to that ledger's sinks (by default, its log).

An alert is marked sent in the ledger's store before its sinks run (that is what makes it fire
once across processes), so it is offered to the sinks once. A callable sink is called once, in
the thread of the call that crossed the threshold: it handles its own retries (a Slack or pager
SDK call that may fail for a moment retries, or queues the alert, itself); when it raises, the
exception is logged as an ERROR on ``tokenbudget.alerts`` with the alert's content (its text and
:attr:`Alert.id`), never raised into the call, and the other sinks still get the alert.

A webhook is POSTed by a worker thread of its own, so a slow webhook never delays a call:

* each POST has a timeout (:data:`DEFAULT_TIMEOUT_S`, 10 s; ``Webhook(url, timeout_s=...)`` sets
  one per webhook); a failed one (no connection, a timeout, HTTP 5xx, 408, 429) is
  tried again with a growing pause (0.5 s, 1 s, 2 s... at most :data:`MAX_PAUSE_S`), until it is
  delivered: an outage delays alerts, it does not lose them. A POST the webhook did not answer
  within the timeout was sent (the webhook may have taken it): after :data:`ATTEMPTS` of those
  in a row, the alert is logged as an ERROR with its content, its delivery uncertain, and the
  next alert is sent (a webhook that is slow, not down, never holds the later alerts back for
  good; give it a longer ``timeout_s``). After :data:`ATTEMPTS` failed POSTs
  in a row the webhook counts as failing: that is logged once as an ERROR on
  ``tokenbudget.alerts`` (and its return as a WARNING); the alerts that come meanwhile wait in
  order behind the one being retried, at most :data:`MAX_QUEUED` of them (one more is logged as
  an ERROR with its content instead of being queued). HTTP 4xx and 3xx (redirects are never
  followed: give the final URL) are not retried: the alert is logged as an ERROR with its content.
  Nothing is ever raised into the call;
* each alert carries a stable ``id`` (from its day, budget, scope, feature, user, limit and
  threshold: two payers' alerts never share one, whatever their names), in the JSON body
  and as an ``Idempotency-Key`` header: a webhook that took the alert but answered after the
  timeout gets it again, with the same id, and can drop the duplicate;
* when the process exits, it waits up to :data:`EXIT_WAIT_S` seconds in all for the alerts still
  being sent (a batch job or a CLI that exits right after the call that crossed a threshold),
  trying a failing webhook without pauses, and logs each alert it could not send, with its
  content, as an ERROR; also in a ``multiprocessing`` worker started by fork (it ends with
  ``os._exit``, which runs no ``atexit`` handler: the wait is registered with multiprocessing's
  own exit). A process that ends itself with ``os._exit`` calls :func:`flush` first;
* credentials in the URL (``https://user:token@host/...``, percent-encoded) are sent as an
  ``Authorization: Basic`` header, never as part of the host;
* logs and errors name a webhook only as ``scheme://host[:port]``: user info, path (Slack-style
  tokens) and query (``?token=``) are secrets and never shown.
"""

from __future__ import annotations

import atexit
import base64
import encodings.idna  # noqa: F401 - imported here, not lazily by a worker (a fork mid-import breaks it)
import hashlib
import http.client
import inspect
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, TypeAlias

from .errors import InvalidInputError
from .finalizing import EXIT_WAIT_S as DEFERRED_EXIT_WAIT_S
from .finalizing import run_at_worker_exit, wait_deferred
from .visible import visible

__all__ = ["Alert", "AlertSink", "Webhook", "dispatch", "flush", "resolve_sinks"]

logger = logging.getLogger("tokenbudget.alerts")

ATTEMPTS = 3
"""Failed POSTs in a row after which a webhook counts as failing (logged once as an ERROR); its
alerts are kept and tried again. An exiting process tries each alert this many times at most.
An alert this many POSTs of which in a row got no answer within the timeout is logged as
delivery uncertain and the next one is sent."""
MAX_PAUSE_S = 60.0
"""The longest pause between two POSTs of an alert to a failing webhook."""
MAX_QUEUED = 10_000
"""Alerts waiting for one webhook, at most; one more is logged as an ERROR instead."""
EXIT_WAIT_S = 5.0
"""How long an exiting process waits, in all, for webhook alerts still being sent."""
DEFAULT_TIMEOUT_S = 10.0
"""How long a webhook POST waits for the answer, unless ``Webhook(url, timeout_s=...)`` says."""
_TIMEOUT_S = DEFAULT_TIMEOUT_S  # read when a webhook is made without timeout_s
_FIRST_PAUSE_S = 0.5
_RETRY_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True, kw_only=True, slots=True)
class Alert:
    """A budget crossed a threshold, or (:attr:`refusing`) started refusing calls."""

    day: str
    budget: str
    """``user_daily_usd``, ``feature_daily_usd``, ``daily_usd``, ``user_daily_tokens``..."""
    scope: str
    """Whose budget, readable: ``feature=support user=u-42`` (for people: names are not escaped in
    it, so two payers' scopes can read alike; :attr:`feature` and :attr:`user` tell them apart)."""
    threshold: float
    """The share crossed, e.g. 0.8."""
    used: str
    """Spent (tokens, or USD as a decimal string)."""
    limit: str
    """The limit, same unit."""
    feature: str | None = None
    """The feature whose budget this is, as the calls name it (``None``: calls that name no
    feature, or a budget that is not per feature)."""
    user: str | None = None
    """The user whose budget this is, as the calls name it (``None``: calls that name no user,
    or a budget that is not per user)."""
    refusing: bool = False
    """The budget refused a call (a hard refusal, or the ladder's cache-only or soft refusal) that a fresh
    budget would have taken (a call too big for the budget however much is left says nothing of
    it running out), told once per budget, limit and day: spending stops short of the limit while
    calls are refused (the default ladder refuses from 90%), so a 100% alert on spend may never fire.
    ``used`` is what was spent and reserved when the call was refused, ``threshold`` the share it
    stood at."""

    @property
    def id(self) -> str:
        """Names this threshold crossing (day, budget, scope, feature, user, limit, threshold; or
        the budget's refusing), the same in every process and on every retry: a receiver
        de-duplicates by it (webhooks: ``id`` in the body, and the ``Idempotency-Key`` header).
        Two alerts that differ in any of these fields have different ids (a hash of their JSON
        array): a limit raised during the day alerts again under new ids."""
        crossed = "refusing" if self.refusing else repr(float(self.threshold))
        fields = [self.day, self.budget, self.scope, self.feature, self.user, self.limit, crossed]
        key = json.dumps(fields, ensure_ascii=True)
        return "tb-alert-" + hashlib.sha256(key.encode()).hexdigest()[:32]

    @property
    def text(self) -> str:
        """The alert in one line, as logs show it (``budget ... passed 80%: ...``, or ``... is
        refusing calls at 96%: ...``)."""
        return _text(self)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


AlertSink: TypeAlias = Callable[[Alert], None]
"""A callable sink: called once per alert; it handles its own retries (one that raises is logged
with the alert's content, see the module docstring)."""


def _text(alert: Alert) -> str:
    scope = visible(alert.scope)  # ids come from end users: no forged log lines
    if alert.refusing:
        return (
            f"budget {alert.budget} for {scope} is refusing calls at {round(alert.threshold * 100)}%: "
            f"{alert.used} of {alert.limit} spent or reserved ({alert.day})"
        )
    return (
        f"budget {alert.budget} for {scope} passed {round(alert.threshold * 100)}%: "
        f"{alert.used} of {alert.limit} ({alert.day})"
    )


def _log(alert: Alert) -> None:
    logger.warning("%s", _text(alert))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed (they would turn the POST into a GET, or carry the
    credentials to another host): a 3xx is a failure, logged."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
_EXITING = threading.Event()  # the process is exiting: retries go on without pausing
_WEBHOOKS: weakref.WeakSet[Webhook] = weakref.WeakSet()
_PENDING: set[Webhook] = set()
"""Webhooks with alerts still queued, held here until they are sent: the ledger (or the sink
list) that made one may be gone meanwhile, and its alerts must not go with it."""


class Webhook:
    """The sink of one webhook URL: alerts queued in order, POSTed as JSON by a daemon worker
    thread that is started when an alert comes and ends when none is left (see the module
    docstring). A URL string among a ledger's ``alerts`` is made into one with the default
    timeout; make one yourself to set it.

    Args:
        url: ``http(s)://[user:password@]host[:port]/path`` (credentials are sent as
            ``Authorization: Basic``; logs show only ``scheme://host[:port]``).
        timeout_s: How long a POST waits for the webhook's answer (default
            :data:`DEFAULT_TIMEOUT_S`). A webhook that takes longer to answer is POSTed again,
            :data:`ATTEMPTS` times, then the alert is logged as delivery uncertain and the next
            one is sent: give a slow webhook (a relay with cold starts) a longer one.

    Raises:
        InvalidInputError: ``url`` is not an http(s) URL alerts can be sent to (the error never
            shows it), or ``timeout_s`` is not a positive number of seconds, at most a day.

    Example:
        >>> from tokenbudget_core import Ledger
        >>> hook = Webhook("https://hooks.example.com/tb", timeout_s=30)
        >>> ledger = Ledger("memory://", alerts=["log", hook])
        >>> hook.timeout_s
        30.0
    """

    def __init__(self, url: str, *, timeout_s: float | None = None) -> None:
        if not isinstance(url, str):
            raise InvalidInputError("url", "must be a webhook URL (a string)", value=type(url).__name__)
        if timeout_s is None:
            timeout_s = _TIMEOUT_S
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not math.isfinite(timeout_s)
            or timeout_s <= 0
            or timeout_s > MAX_TIMEOUT_S
        ):
            raise InvalidInputError(
                "timeout_s",
                f"must be a positive number of seconds, at most {MAX_TIMEOUT_S:,} (a day)",
                value=timeout_s,
                fix=f"pass the seconds a POST may wait for the answer (default {DEFAULT_TIMEOUT_S:g})",
            )
        self.timeout_s = float(timeout_s)
        """How long a POST waits for the webhook's answer, in seconds."""
        parts = _split(url, "url")
        if parts.scheme.lower() not in ("http", "https"):
            raise InvalidInputError(
                "url",
                f"must be an http:// or https:// URL, not {parts.scheme}://",
                value=f"{parts.scheme}://...",  # the URL itself may hold secrets
                fix="give the webhook's http(s) URL",
            )
        userinfo, _, hostport = parts.netloc.rpartition("@")
        hostport = _ascii_host(hostport, parts)
        self.redacted = f"{parts.scheme}://{hostport}"
        """The URL as logs show it: no user info, path or query."""
        path, query = _ascii_text(parts.path), _ascii_text(parts.query)  # http.client sends ASCII only
        self._target = urllib.parse.urlunsplit((parts.scheme, hostport, path, query, ""))
        self._headers = {"Content-Type": "application/json", "User-Agent": "tokenbudget-alerts"}
        user, password = parts.username, parts.password
        if userinfo:
            credentials = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        secrets = {url, self._target, userinfo, user, password, parts.query, query, parts.fragment}
        secrets.update(urllib.parse.unquote(s) for s in (user, password) if s)
        if parts.path not in ("", "/"):
            secrets.update((parts.path, path))
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes, Alert]] = deque()  # (alert id, body, alert)
        self._working = False
        self._failing_since: float | None = None  # when its last run of ATTEMPTS failures began
        _WEBHOOKS.add(self)

    def __repr__(self) -> str:
        return f"<alert webhook {self.redacted}>"

    def __call__(self, alert: Alert) -> None:
        key = alert.id
        body = json.dumps({"type": "tokenbudget.alert", "id": key, **alert.as_dict()}, default=str).encode()
        _flush_at_worker_exit()
        with self._cond:
            waiting = len(self._queue)
            if waiting < MAX_QUEUED:
                self._queue.append((key, body, alert))
                _PENDING.add(self)
        if waiting >= MAX_QUEUED:
            logger.error(
                "alert webhook %s: %d alerts are waiting (it is failing or slow), this one is not "
                "queued: %s (id %s)",
                self.redacted,
                waiting,
                _text(alert),
                key,
            )
            return
        self._start()

    def _start(self, *, inline: bool = True) -> None:
        """A worker for the queued alerts, unless one is at work; with no thread to start, they
        are sent from this thread (``inline``, bounded) or left queued."""
        with self._cond:
            if self._working or not self._queue:
                return
            self._working = True
        try:
            threading.Thread(target=self._work, name="tokenbudget-alert-webhook", daemon=True).start()
        except RuntimeError:  # no thread now (shutting down, or none left)
            if inline:
                self._work(inline=True)
            else:
                self._stopped()

    def _stopped(self) -> None:
        with self._cond:
            self._working = False
            self._cond.notify_all()

    def _work(self, *, inline: bool = False) -> None:
        try:
            self._send_queued(inline=inline)
        except BaseException:  # a KeyboardInterrupt in the caller's thread: a later alert starts anew
            self._stopped()
            raise

    def _send_queued(self, *, inline: bool) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._working = False
                    _PENDING.discard(self)  # nothing left to send: it may go with its ledger
                    self._cond.notify_all()
                    return
                key, body, alert = self._queue[0]  # stays queued while it is sent: an exit waits for it
            try:
                done = self._deliver(key, body, alert, bounded=inline)
            except Exception as e:  # noqa: BLE001 - a bug must not stop the alerts queued after it
                logger.error(
                    "alert webhook %s: an alert was lost: %s: %s",
                    self.redacted,
                    self._scrub(repr(e)),
                    _text(alert),
                )
                done = True
            with self._cond:
                if not done:  # exiting (or in the caller's thread) and the webhook failing: left queued
                    self._working = False
                    self._cond.notify_all()
                    return
                if self._queue:
                    self._queue.popleft()
                self._cond.notify_all()

    def _deliver(self, key: str, body: bytes, alert: Alert, *, bounded: bool = False) -> bool:
        """POST ``body`` until it is delivered, or refused for good (logged): ``True``; ``False``
        after :data:`ATTEMPTS` failed POSTs when the process is exiting or ``bounded`` (sent from
        the caller's thread, which it must not hold for an outage): the alert stays queued."""
        maybe = False  # an attempt may have reached the webhook (no answer in time, a reset)
        late = 0  # POSTs in a row the webhook did not answer within the timeout
        attempt = 0
        while True:
            attempt += 1
            failure = self._post(key, body)
            if failure is None:
                if self._failing_since is not None:
                    logger.warning(
                        "alert webhook %s answers again, after failing for %.0f s; %d alert(s) to send",
                        self.redacted,
                        time.monotonic() - self._failing_since,
                        len(self._queue),
                    )
                    self._failing_since = None
                return True
            reason, retry, uncertain, unanswered = failure
            maybe = maybe or uncertain
            late = late + 1 if unanswered else 0
            if late >= ATTEMPTS:  # slow, not down: it may have taken it; the next alerts must not wait
                logger.error(
                    "alert webhook %s did not answer %d POSTs in a row of the alert %s within its "
                    "timeout (%g s): delivery uncertain (it may not have been delivered, or taken "
                    "without an answer in time; a receiver drops a duplicate by its id); sending "
                    "the %d alert(s) queued after it (a slow webhook needs a longer timeout_s): %s",
                    self.redacted,
                    late,
                    key,
                    self.timeout_s,
                    len(self._queue) - 1,
                    _text(alert),
                )
                return True
            if not retry:
                logger.error(
                    "alert webhook %s failed (attempt %d), the alert %s is not delivered: %s: %s",
                    self.redacted,
                    attempt,
                    key,
                    reason,
                    _text(alert),
                )
                return True
            if attempt == ATTEMPTS and self._failing_since is None:
                self._failing_since = time.monotonic()
                logger.error(
                    "alert webhook %s is failing (attempt %d of the alert %s, which %s): %s; it and "
                    "the %d alert(s) queued after it are kept, tried again every %g s at most and "
                    "sent in order when the webhook answers",
                    self.redacted,
                    attempt,
                    key,
                    "may not have been delivered" if maybe else "is not delivered yet",
                    reason,
                    len(self._queue) - 1,
                    MAX_PAUSE_S,
                )
            if attempt >= ATTEMPTS and (bounded or _EXITING.is_set()):
                return False
            pause = min(_FIRST_PAUSE_S * 2 ** min(attempt - 1, 32), MAX_PAUSE_S)
            logger.info("alert webhook %s failed (%s); retrying in %.1f s", self.redacted, reason, pause)
            _EXITING.wait(pause)

    def _post(self, key: str, body: bytes) -> tuple[str, bool, bool, bool] | None:
        """One POST: ``None`` when delivered, else why not, whether to try again, whether the
        webhook may have taken it all the same (no answer in time, a connection cut mid-way),
        and whether the request was sent and not answered within the timeout."""
        headers = {**self._headers, "Idempotency-Key": key}
        request = urllib.request.Request(self._target, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                response.read(1 << 16)
            return None
        except urllib.error.HTTPError as e:
            e.close()
            if 300 <= e.code < 400:
                return f"HTTP {e.code}: redirects are not followed, give the final URL", False, False, False
            return f"HTTP {e.code}", e.code >= 500 or e.code in _RETRY_STATUS, False, False
        except (OSError, http.client.HTTPException, ValueError) as e:
            cause = e.reason if isinstance(e, urllib.error.URLError) else e
            unsent = isinstance(cause, ConnectionRefusedError | socket.gaierror | ValueError)
            # urllib wraps what fails while connecting and sending in a URLError: a bare timeout
            # came while waiting for the answer, after the request was sent
            unanswered = isinstance(e, TimeoutError)
            retry = not isinstance(cause, UnicodeError)  # a request that cannot be written never will be
            return self._scrub(f"{type(e).__name__}: {e}"), retry, not unsent, unanswered

    def _scrub(self, text: str) -> str:
        """``text`` without any piece of the URL that may be a secret."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _drain(self, deadline: float, *, inline: bool = False) -> list[Alert]:
        """Wait until every queued alert was sent, the deadline (``math.inf``: no limit), or the
        worker gave up (at exit, or in the caller's thread); returns the alerts left."""
        self._start(inline=inline)  # alerts a worker gave up on are tried again (here: at exit only)
        with self._cond:
            while self._queue and self._working and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(None if left == math.inf else left)
            return [alert for _, _, alert in self._queue]

    def _forget(self) -> None:
        """In a forked child: the parent's worker (and its lock) did not come along; its alerts
        are the parent's to send."""
        self._cond = threading.Condition()
        self._queue = deque()
        self._working = False
        self._failing_since = None
        _PENDING.discard(self)


MAX_TIMEOUT_S = 86_400
"""The longest wait a webhook may set (a socket takes no timeout past about 9.2e9 s: a longer one
would lose every alert)."""


def _ascii_text(text: str) -> str:
    """``text`` (a URL's path or query) with each non-ASCII character percent-encoded as UTF-8,
    as browsers send it; the rest as given."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() else urllib.parse.quote(c, safe="") for c in text)


def _ascii_host(hostport: str, parts: urllib.parse.SplitResult) -> str:
    """``host[:port]`` with an internationalised host name in its ASCII (IDNA) form.

    Raises:
        InvalidInputError: The host name has no IDNA form.
    """
    if hostport.isascii():
        return hostport
    try:
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except UnicodeError as e:
        raise InvalidInputError(
            "url",
            "has a host name that cannot be written in ASCII (IDNA)",
            value=f"{parts.scheme}://...",  # the URL itself may hold secrets
            fix="give the host's ASCII (punycode) form, xn--...",
        ) from e
    return host if parts.port is None else f"{host}:{parts.port}"


def _split(url: str, field: str) -> urllib.parse.SplitResult:
    """``url`` parsed, or an error naming what to fix (never showing the URL: it holds secrets).

    Raises:
        InvalidInputError: No host, a port that is not a number, or an unencoded ``/?#@`` in the
            user info (which would send the alert, and the credentials, to the wrong host).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or not parts.hostname
        or ("@" in parts.path and "@" not in parts.netloc)
        or any(c.isspace() or ord(c) < 32 for c in url)  # http.client refuses them at every send
    ):
        raise InvalidInputError(
            field,
            "is not a webhook URL alerts can be sent to (no host, a port that is not a number, "
            "whitespace or control characters, or credentials holding an unencoded '@', '/', '?' or '#')",
            value=url.partition("://")[0] + "://...",  # the URL itself may hold secrets
            fix="write it as http(s)://[user:password@]host[:port]/path, with spaces and '@', '/', '?', '#' "
            "and ':' in the user name and password percent-encoded (%20, %40, %2F, %3F, %23, %3A)",
        )
    return parts


def flush(timeout: float | None = EXIT_WAIT_S) -> int:
    """Wait for the webhook alerts of this process still being sent; returns how many are not
    sent yet (logged as an ERROR; they stay queued and are sent later).

    The process does this by itself when it exits normally (``atexit``, up to
    :data:`EXIT_WAIT_S` seconds) and in a ``multiprocessing`` worker; code that ends a process
    with ``os._exit`` (a forked child of its own, a server's worker) calls it first, or the
    alert the last call crossed is lost with the worker thread.

    Args:
        timeout: Seconds to wait in all (default :data:`EXIT_WAIT_S`); ``None`` waits until every
            alert was delivered or refused, which lasts as long as a webhook keeps failing.

    Example:
        >>> from tokenbudget_core import alerts
        >>> alerts.flush(timeout=5.0)
        0
    """
    return _flush(timeout, "before flush() returned")


def _flush(timeout: float | None, when: str, *, lost: bool = False) -> int:
    deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
    left = 0
    for hook in list(_WEBHOOKS):
        unsent = hook._drain(deadline, inline=lost)  # at exit, with no thread, sent from this one
        if unsent:
            logger.error(
                "alert webhook %s: %d alert(s) not delivered %s (waited %s)",
                hook.redacted,
                len(unsent),
                when,
                "without a limit" if timeout is None else f"{timeout:.0f} s",
            )
            if lost:  # gone with the process: the log is all that is left of them
                for alert in unsent:
                    logger.error(
                        "alert not delivered to %s: %s (id %s)", hook.redacted, _text(alert), alert.id
                    )
        left += len(unsent)
    return left


def _flush_at_exit(timeout: float = EXIT_WAIT_S) -> None:
    """Wait (``timeout`` seconds in all) for the webhook alerts still being sent; log the rest.
    First the stream ends still deferred (:mod:`.finalizing`): settling one may cross a threshold,
    whichever exit hook was registered first."""
    wait_deferred(DEFERRED_EXIT_WAIT_S)
    _EXITING.set()
    _flush(timeout, "before the process exited", lost=True)


_MP_EXIT_PRIORITY = 10
"""Where the flush runs among multiprocessing's exit finalizers (those of priority >= 0 run
first, before the worker joins its own children)."""


def _flush_at_worker_exit() -> None:
    """In a ``multiprocessing`` worker, have its exit run the flush too (see
    :func:`~tokenbudget_core.finalizing.run_at_worker_exit`): registered when an alert is queued."""
    run_at_worker_exit(_flush_at_exit, _MP_EXIT_PRIORITY)


def _after_fork_in_child() -> None:
    global _EXITING
    _EXITING = threading.Event()  # its lock may have been held by a thread that did not come along
    for hook in list(_WEBHOOKS):
        hook._forget()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def resolve_sinks(sinks: Sequence[str | AlertSink] | None) -> list[AlertSink]:
    """Turn ``"log"``, webhook URLs (each a :class:`Webhook` with the default timeout) and
    callables (a :class:`Webhook` among them) into sinks (default: ``["log"]``).

    Raises:
        InvalidInputError: A sink is neither, or a webhook URL has no host or an unencoded
            character in its credentials (the error never shows the URL).
    """
    out: list[AlertSink] = []
    for i, sink in enumerate(["log"] if sinks is None else sinks):
        if sink == "log":
            out.append(_log)
        elif isinstance(sink, str) and sink[:8].lower().startswith(("http://", "https://")):
            try:
                out.append(Webhook(sink))
            except InvalidInputError as e:  # named as the caller gave it (the error never shows the URL)
                raise InvalidInputError(f"alerts[{i}]", e.problem, value=e.value, fix=e.fix) from e
        elif callable(sink):
            if inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(type(sink).__call__):
                raise InvalidInputError(
                    f"alerts[{i}]",
                    "is an async function: alert sinks are called synchronously, from the thread "
                    "that committed, and a coroutine nobody awaits is lost",
                    value=getattr(sink, "__qualname__", type(sink).__qualname__),
                    fix="pass a plain function that hands the alert to your loop, e.g. "
                    "lambda alert: asyncio.run_coroutine_threadsafe(notify(alert), loop)",
                )
            out.append(sink)
        else:
            raise InvalidInputError(
                f"alerts[{i}]",
                "must be 'log', a webhook URL (http:// or https://) or a callable",
                value=_shown(sink) if isinstance(sink, str) else sink,
            )
    return out


_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.-]{0,40}").fullmatch


def _shown(text: str) -> str:
    """A string sink as an error may show it: a URL as ``scheme://host[:port]`` (its user info,
    path and query may be secrets), a short plain word as it is, anything else hidden."""
    scheme, sep, rest = text.partition("://")
    if sep:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
        return f"{scheme}://{authority}"
    return text if _PLAIN_WORD(text) else "<a string that is not a webhook URL (hidden)>"


def dispatch(sinks: Sequence[AlertSink], alert: Alert) -> None:
    """Send ``alert`` to every sink, once each; a sink that raises is logged as an ERROR with the
    alert's content (text and id: the log is then all that is left of it for that sink), never
    raised into the call, and the sinks after it still get the alert."""
    for sink in sinks:
        try:
            returned = sink(alert)
            if inspect.isawaitable(returned):  # an async sink that got past resolve_sinks (a partial)
                close = getattr(returned, "close", None)
                if close is not None:
                    close()
                raise TypeError(
                    "it returned an awaitable that nobody awaits: alert sinks must be plain functions"
                )
        except Exception:
            logger.exception(
                "alert sink %r failed, the alert is not delivered to it: %s (id %s)",
                sink,
                _text(alert),
                alert.id,
            )


def fmt(value: int | Decimal) -> str:
    """An amount as text for an alert."""
    return str(value)
