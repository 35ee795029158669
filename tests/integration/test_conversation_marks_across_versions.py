"""On one Redis server, a conversation is counted once per day and feature across releases side
by side (a rolling deploy, a plain upgrade mid-day, an older release's spool line replayed):
earlier releases set the conversation's once-mark apart from the commit (``mark_once`` of
``conv/<day>/<feature>/<conversation>``), this one in the commit's script, which reads and sets
that older mark too. (On a cluster the older mark lives in another slot: not covered there.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import CONVERSATION_MARK_TTL_S
from tokenbudget_core.usage import Usage


@pytest.fixture
def ledger(clean_redis_url: str) -> Iterator[Ledger]:
    led = Ledger(clean_redis_url, alerts=[])
    yield led
    led.close()


def _record(ledger: Ledger, conversation: str = "c-1") -> None:
    ledger.record(
        Usage(input_tokens=10, output_tokens=5),
        model="gpt-4o-mini",
        feature="chat",
        conversation=conversation,
    )


def _conversations(ledger: Ledger) -> int:
    return build_report(ledger, day=ledger.day()).totals.conversations


def test_a_conversation_an_earlier_release_counted_today_is_not_counted_again(ledger: Ledger) -> None:
    key = f"conv/{ledger.day()}/chat/c-1"
    assert ledger.store.mark_once(key, CONVERSATION_MARK_TTL_S)  # what the earlier release did first
    _record(ledger)  # its commit carried conversations=1; this release's commit must add none
    _record(ledger)
    _record(ledger, "c-2")  # a conversation no release counted yet
    assert _conversations(ledger) == 1


def test_a_conversation_this_release_counted_is_not_counted_again_by_an_earlier_one(ledger: Ledger) -> None:
    _record(ledger)
    assert _conversations(ledger) == 1
    key = f"conv/{ledger.day()}/chat/c-1"
    assert not ledger.store.mark_once(key, CONVERSATION_MARK_TTL_S)  # an earlier release: not first
