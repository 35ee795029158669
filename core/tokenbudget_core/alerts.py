"""Budget alerts: thresholds per budget (default 80% and 100%), fired once per budget and day.

Sinks: ``"log"`` (a WARNING on the ``tokenbudget.alerts`` logger), any callable taking an
:class:`Alert`, or a webhook URL (``http(s)://...``) that receives the alert as JSON
(POSTed from a background thread with a timeout, so a slow webhook never delays a call).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, TypeAlias

from .errors import InvalidInputError

__all__ = ["Alert", "AlertSink", "dispatch", "resolve_sinks"]

logger = logging.getLogger("tokenbudget.alerts")


@dataclass(frozen=True, kw_only=True, slots=True)
class Alert:
    """A budget crossed a threshold."""

    day: str
    budget: str
    """``user_daily_usd``, ``feature_daily_usd``, ``daily_usd``, ``user_daily_tokens``..."""
    scope: str
    """Whose budget, readable: ``feature=support user=u-42``."""
    threshold: float
    """The share crossed, e.g. 0.8."""
    used: str
    """Spent (tokens, or USD as a decimal string)."""
    limit: str
    """The limit, same unit."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


AlertSink: TypeAlias = Callable[[Alert], None]


def _log(alert: Alert) -> None:
    logger.warning(
        "budget %s for %s passed %d%%: %s of %s (%s)",
        alert.budget,
        alert.scope,
        round(alert.threshold * 100),
        alert.used,
        alert.limit,
        alert.day,
    )


def _webhook(url: str, timeout: float = 5.0) -> AlertSink:
    def post(alert: Alert) -> None:
        body = json.dumps({"type": "tokenbudget.alert", **alert.as_dict()}, default=str).encode()

        def send() -> None:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout):
                    pass
            except OSError as e:
                logger.error("alert webhook %s failed: %s", url, e)

        threading.Thread(target=send, name="tokenbudget-alert-webhook", daemon=True).start()

    return post


def resolve_sinks(sinks: Sequence[str | AlertSink] | None) -> list[AlertSink]:
    """Turn ``"log"``, webhook URLs and callables into sinks (default: ``["log"]``).

    Raises:
        InvalidInputError: A sink is neither.
    """
    out: list[AlertSink] = []
    for i, sink in enumerate(["log"] if sinks is None else sinks):
        if sink == "log":
            out.append(_log)
        elif isinstance(sink, str) and sink.startswith(("http://", "https://")):
            out.append(_webhook(sink))
        elif callable(sink):
            out.append(sink)
        else:
            raise InvalidInputError(f"alerts[{i}]", "must be 'log', a webhook URL or a callable", value=sink)
    return out


def dispatch(sinks: Sequence[AlertSink], alert: Alert) -> None:
    """Send ``alert`` to every sink; a failing sink is logged, never raised into the call."""
    for sink in sinks:
        try:
            sink(alert)
        except Exception:
            logger.exception("alert sink %r failed", sink)


def fmt(value: int | Decimal) -> str:
    """An amount as text for an alert."""
    return str(value)
