"""A replay that set a spooled line's conversation once-mark and then could not commit keeps the
line resolved (the mark's answer in its counters, the mark gone), so the next replay counts the
conversation once (a store that sets the mark apart from the commit); a store that sets it in
the commit needs no such care; and a replay logs, once, the lines of other stores left for more
than a day."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import pytest

from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitOutcome, CommitRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.usage import Usage

DAY = "2026-11-23"


class _Flaky(MemoryStore):
    """A memory store (no ledger fast path) that can be down, or fail its next commits; asked a
    conversation's mark apart from the commit, as a store of one's own may be."""

    commits_conversation_marks = False
    down = False
    failing_commits = 0
    refuse: Exception | None = None

    def commit(self, req: CommitRequest) -> CommitOutcome:
        if self.refuse is not None:
            raise self.refuse
        if self.down or self.failing_commits:
            self.failing_commits = max(0, self.failing_commits - 1)
            raise BudgetUnavailableError("flaky://", "timeout")
        return super().commit(req)

    def mark_once(self, key: str, ttl_s: int) -> bool:
        if self.down:
            raise BudgetUnavailableError("flaky://", "timeout")
        return super().mark_once(key, ttl_s)


def conversations(store: MemoryStore, day: str) -> int:
    return sum(row.values.get("conversations", 0) for row in store.rollup([day]))


def spooled_call(tmp_path: Path, store: _Flaky, conversation: str = "conv-1") -> Ledger:
    ledger = Ledger(store, on_unavailable="open", spool_path=tmp_path / "s.jsonl", alerts=[])
    store.down = True
    ledger.record(
        Usage(input_tokens=100, output_tokens=10),
        model="gpt-4o-mini",
        feature="chat",
        conversation=conversation,
        request_id="r1",
    )
    store.down = False
    return ledger


def test_a_mark_set_before_a_failed_commit_is_kept_as_the_lines_answer(tmp_path: Path) -> None:
    store = _Flaky()
    ledger = spooled_call(tmp_path, store)
    store.failing_commits = 1  # the store flaps during the first replay's commit
    assert ledger.replay_spool() == 0
    (line,) = ledger.spool.replaying_path.read_bytes().splitlines()
    data = json.loads(line)
    assert "mark" not in data
    assert data["rollup"]["conversations"] == 1
    assert data["owner"] == ledger.spool.owner
    assert ledger.replay_spool() == 1
    assert conversations(store, ledger.day()) == 1
    assert len(ledger.spool) == 0


def test_a_mark_another_call_had_set_stays_uncounted_after_a_failed_commit(tmp_path: Path) -> None:
    store = _Flaky()
    ledger = spooled_call(tmp_path, store)
    elsewhere = Ledger(store, spool_path=tmp_path / "other.jsonl", alerts=[])  # another process
    elsewhere.record(  # the same conversation, counted while the first call waited in the spool
        Usage(input_tokens=100, output_tokens=10), model="gpt-4o-mini", feature="chat", conversation="conv-1"
    )
    store.failing_commits = 1
    assert ledger.replay_spool() == 0
    assert json.loads(ledger.spool.replaying_path.read_bytes())["rollup"]["conversations"] == 0
    assert ledger.replay_spool() == 1
    assert conversations(store, ledger.day()) == 1


def test_a_refused_line_is_quarantined_with_its_marks_answer(tmp_path: Path) -> None:
    store = _Flaky()
    ledger = spooled_call(tmp_path, store)
    store.refuse = InvalidInputError("charges", "refused for the test")
    assert ledger.replay_spool() == 0
    (record,) = [json.loads(x) for x in ledger.spool.bad_path.read_text().splitlines()]
    line = json.loads(record["line"])
    assert "mark" not in line
    assert line["rollup"]["conversations"] == 1


class _FlakyMarkingInCommits(_Flaky):
    """:class:`_Flaky` that sets a conversation's mark in the commit, as memory, SQLite and Redis do."""

    commits_conversation_marks = True


def test_a_line_whose_commit_sets_the_mark_counts_the_conversation_once_after_failed_replays(
    tmp_path: Path,
) -> None:
    store = _FlakyMarkingInCommits()
    ledger = spooled_call(tmp_path, store)
    store.failing_commits = 2  # two replays meet the store flapping
    for _ in range(2):
        assert ledger.replay_spool() == 0
        (line,) = ledger.spool.replaying_path.read_bytes().splitlines()
        data = json.loads(line)
        assert data["conversation_mark"].startswith("conv/")  # the line still carries it
        assert "conversations" not in data["rollup"]
        assert "mark" not in data
    assert ledger.replay_spool() == 1
    assert conversations(store, ledger.day()) == 1
    ledger.record(  # the same conversation again: already counted
        Usage(input_tokens=1, output_tokens=1), model="gpt-4o-mini", feature="chat", conversation="conv-1"
    )
    assert conversations(store, ledger.day()) == 1


def test_a_line_carrying_its_mark_replayed_into_a_store_without_marking_commits_counts_once(
    tmp_path: Path,
) -> None:
    """A spool written on a store that marks in commits, replayed into one that does not."""
    ledger = spooled_call(tmp_path, _FlakyMarkingInCommits())
    other = _Flaky()
    assert ledger.spool.replay(other) == 1
    assert conversations(other, ledger.day()) == 1
    assert other.mark_once(f"conv/{ledger.day()}/chat/conv-1", 60) is False  # the mark was set


# -- other stores' lines left for a day ----------------------------------------------------------


def req(rid: str, now_ms: int) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=1)],
        rollup_key="//m",
        rollup={"requests": 1},
        now_ms=now_ms,
    )


def test_a_replay_logs_other_owners_lines_older_than_a_day_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.jsonl"
    now_ms = int(time.time() * 1000)
    other = Spool(path, owner="https://user:pw@elsewhere")  # never shown
    other.append(req("old-1", now_ms - 2 * 86_400_000))
    other.append(req("old-2", now_ms - 86_400_001))
    other.append(req("fresh", now_ms - 1000))
    mine = Spool(path, owner="mine")
    mine.append(req("m-1", now_ms))
    store = MemoryStore()
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert mine.replay(store) == 1
    (message,) = [r.getMessage() for r in caplog.records]
    assert "2 line(s) of other stores are more than a day old" in message
    assert str(path) in message
    assert "elsewhere" not in message
    assert "user:pw" not in message
    caplog.clear()
    mine.append(req("m-2", now_ms))
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert mine.replay(store) == 1  # the same spool object: not repeated within the hour
    assert not caplog.records
    assert len(other) == 3  # left in place for their own ledger


def test_no_warning_for_other_owners_fresh_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.jsonl"
    now_ms = int(time.time() * 1000)
    Spool(path, owner="other").append(req("fresh", now_ms))
    mine = Spool(path, owner="mine")
    mine.append(req("m-1", now_ms))
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert mine.replay(MemoryStore()) == 1
    assert not caplog.records


def test_usage_replayed_from_the_spool_sends_the_threshold_alerts_it_crossed(tmp_path: Path) -> None:
    """Spend that crossed a budget while the store was down is alerted when it is replayed, once
    per threshold, as the commits would have been had the store answered."""
    from tokenbudget_core.budgets import BudgetPolicy

    store, alerts = _Flaky(), []
    ledger = Ledger(
        store,
        policy=BudgetPolicy(daily_usd="0.01", user_daily_usd="0.008"),
        on_unavailable="open",
        spool_path=tmp_path / "s.jsonl",
        alerts=[alerts.append],
    )
    store.down = True
    for _ in range(3):  # $0.0035 each: $0.0105 in all, past both budgets
        charge = ledger.record(Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o", user="a")
        assert charge.spooled
    assert alerts == []
    store.down = False
    assert ledger.replay_spool() == 3
    assert sorted((a.budget, a.scope, a.threshold) for a in alerts) == [
        ("daily_usd", "all calls", 0.8),
        ("daily_usd", "all calls", 1.0),
        ("user_daily_usd (all features)", "user=a (all features)", 0.8),
        ("user_daily_usd (all features)", "user=a (all features)", 1.0),
    ]
    ledger.record(Usage(input_tokens=10), model="gpt-4o", user="a")  # a later commit: nothing new
    assert len(alerts) == 4


def test_a_spooled_commit_of_several_calls_keeps_a_cost_sample_per_call(tmp_path: Path) -> None:
    """p50/p95 per call count each call of a batch recorded while the store was down."""
    store = _Flaky()
    ledger = Ledger(store, on_unavailable="open", spool_path=tmp_path / "s.jsonl", alerts=[])
    store.down = True
    ledger.record(Usage(input_tokens=1_000, output_tokens=100, requests=2), model="gpt-4o", feature="f")
    ledger.record(Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o", feature="f")
    fields = {f.name for f in dataclasses.fields(CommitRequest)} | {"owner", "mark"}
    for line in (tmp_path / "s.jsonl").read_text().splitlines():  # what an older build's replay reads
        assert set(json.loads(line)) <= fields
    store.down = False
    assert ledger.replay_spool() == 2
    samples = sorted(store.call_costs(ledger.day(), "f"))
    assert len(samples) == 3
    assert sum(samples) == sum(row.values["cost_nanos"] for row in store.rollup([ledger.day()]))
