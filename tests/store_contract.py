"""The store contract (see tokenbudget_core.stores.base), run against every backend.

Backend test modules import ``ContractTests`` and provide a ``store`` fixture.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores.base import (
    Check,
    CommitRequest,
    LedgerStore,
    ReserveRequest,
    call_costs_many,
    commits_conversation_marks,
    mark_once_for,
    snapshot_call_costs,
)

DAY = "2026-11-23"
ODD_IDS = ["f", "a:b", "{a}", "}{", "a b", "a\nb", "ü", "日本", "", "%61", "a%7C", "a|nanos", "a/b", "*"]
"""Days and features that try every trick: key separators, hash-tag braces, whitespace, non-ASCII,
the empty id and text that looks already encoded."""
NOT_PAIRS: list[object] = [DAY, b"pairs", None, 7, {(DAY, "f")}, [(DAY,)], [(DAY, "f", "x")], [(DAY, 3)],
                           [(None, "f")], [[DAY, "f"]], [(DAY, b"f")], [(DAY, "f"), "f"]]  # fmt: skip
"""What a batched read of call costs refuses (``InvalidInputError`` naming ``pairs``)."""


class OnePairAtATime:
    """The same store without its batched and snapshot reads: reports fall back to
    ``call_costs`` per pair."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("call_costs_many", "call_cost_counts", "scan_call_costs"):
            raise AttributeError(name)
        return getattr(self._store, name)


def reserve(
    store: LedgerStore,
    rid: str,
    amount: int,
    limit: int | None,
    *,
    now: int = 1_000,
    lease: int = 60_000,
    scope: str = "user/f/u",
):
    return store.reserve(
        ReserveRequest(
            day=DAY,
            request_id=rid,
            checks=[
                Check(scope=scope, metric="nanos", amount=amount, limit=limit),
                Check(scope="global", metric="nanos", amount=amount),
            ],
            now_ms=now,
            lease_ms=lease,
        )
    )


def commit(
    store: LedgerStore,
    rid: str,
    amount: int,
    *,
    now: int = 2_000,
    scope: str = "user/f/u",
    conversation_mark: str | None = None,
    rollup_key: str = "f/u/gpt-4o",
):
    return store.commit(
        CommitRequest(
            day=DAY,
            request_id=rid,
            charges=[
                Check(scope=scope, metric="nanos", amount=amount),
                Check(scope="global", metric="nanos", amount=amount),
            ],
            rollup_key=rollup_key,
            rollup={"requests": 1, "cost_nanos": amount, "input_tokens": 10},
            now_ms=now,
            conversation_mark=conversation_mark,
        )
    )


def conversations(store: LedgerStore, rollup_key: str = "f/u/gpt-4o") -> int:
    return sum(r.values.get("conversations", 0) for r in store.rollup([DAY]) if r.rollup_key == rollup_key)


def totals(store: LedgerStore, scope: str = "user/f/u", now: int = 2_000) -> tuple[int, int]:
    return store.totals(DAY, [(scope, "nanos")], now)[(scope, "nanos")]


class ContractTests:
    """Mixed into a test class that has a ``store`` fixture."""

    def test_reserve_commit_moves_reserved_to_spent(self, store: LedgerStore) -> None:
        assert reserve(store, "r1", 100, 1_000).ok
        assert totals(store) == (0, 100)
        out = commit(store, "r1", 70)
        assert out.applied
        assert out.previous == "reserved"
        assert totals(store) == (70, 0)
        assert totals(store, "global") == (70, 0)

    def test_limit_refuses_atomically_and_names_the_check(self, store: LedgerStore) -> None:
        assert reserve(store, "a", 600, 1_000).ok
        refused = reserve(store, "b", 500, 1_000)
        assert not refused.ok
        assert refused.failed is not None
        assert refused.failed.scope == "user/f/u"
        assert refused.used == 600
        assert totals(store) == (0, 600)
        assert totals(store, "global") == (0, 600)  # nothing of the refused request stuck

    def test_commit_is_idempotent_and_release_after_commit_is_a_no_op(self, store: LedgerStore) -> None:
        reserve(store, "r", 100, None)
        assert commit(store, "r", 80).applied
        again = commit(store, "r", 80)
        assert not again.applied
        assert again.previous == "committed"
        assert not store.release(DAY, "r", 3_000)
        assert totals(store) == (80, 0)

    def test_release_is_idempotent(self, store: LedgerStore) -> None:
        reserve(store, "r", 100, None)
        assert store.release(DAY, "r", 3_000)
        assert not store.release(DAY, "r", 3_000)
        assert totals(store) == (0, 0)

    def test_release_with_forget_gives_back_and_forgets_only_a_live_reservation(
        self, store: LedgerStore
    ) -> None:
        """The ledger's answer to a soft refusal: what was held comes back, and a retry under the
        same id is a new reservation; an unknown or settled id is left as it is."""
        reserve(store, "r", 100, None)
        assert store.release(DAY, "r", 3_000, forget=True)
        assert totals(store) == (0, 0)
        again = reserve(store, "r", 100, None)
        assert again.ok
        assert not again.duplicate
        assert totals(store) == (0, 100)
        assert not store.release(DAY, "unknown", 3_000, forget=True)
        assert not reserve(store, "unknown", 50, None).duplicate  # not remembered as released
        assert commit(store, "r", 80).applied
        assert not store.release(DAY, "r", 3_000, forget=True)  # a settled id stays settled
        assert not commit(store, "r", 80).applied
        assert totals(store) == (80, 50)

    def test_commit_after_release_or_without_reservation_still_charges_once(self, store: LedgerStore) -> None:
        reserve(store, "r", 100, None)
        store.release(DAY, "r", 3_000)
        assert commit(store, "r", 40).applied
        assert commit(store, "never-reserved", 5).applied
        assert not commit(store, "never-reserved", 5).applied
        assert totals(store) == (45, 0)

    def test_duplicate_reserve_changes_nothing(self, store: LedgerStore) -> None:
        assert reserve(store, "r", 100, 1_000).ok
        again = reserve(store, "r", 100, 1_000)
        assert again.ok
        assert again.duplicate
        assert totals(store) == (0, 100)

    def test_expired_lease_frees_the_budget(self, store: LedgerStore) -> None:
        assert reserve(store, "crashed", 900, 1_000, now=1_000, lease=5_000).ok
        assert not reserve(store, "x", 200, 1_000, now=2_000).ok
        assert reserve(store, "y", 200, 1_000, now=7_000).ok  # the crashed worker's lease ran out
        assert totals(store, now=7_000) == (0, 200)
        assert commit(store, "crashed", 300, now=8_000).applied  # a late commit still charges
        assert totals(store, now=8_000) == (300, 200)

    def test_rollup_accumulates_per_key(self, store: LedgerStore) -> None:
        commit(store, "a", 10)
        commit(store, "b", 20)
        commit(store, "b", 20)  # duplicate: not counted
        [row] = [r for r in store.rollup([DAY]) if r.rollup_key == "f/u/gpt-4o"]
        assert row.values["requests"] == 2
        assert row.values["cost_nanos"] == 30
        assert row.values["input_tokens"] == 20
        assert store.rollup(["1999-01-01"]) == []

    def test_scopes_are_separate(self, store: LedgerStore) -> None:
        reserve(store, "a", 100, None, scope="user/f/alice")
        reserve(store, "b", 100, None, scope="user/f/bob")
        commit(store, "a", 10, scope="user/f/alice")
        assert totals(store, "user/f/alice") == (10, 0)
        assert totals(store, "user/f/bob") == (0, 100)

    def test_a_commit_counts_its_conversation_once_in_the_same_step(self, store: LedgerStore) -> None:
        """A commit naming a conversation mark counts it (``conversations``) only if no applied
        commit set that mark before; a commit that does not apply sets no mark."""
        assert commits_conversation_marks(store)
        mark = f"conv/{DAY}/f/{ODD_IDS[5]}"
        reserve(store, "a", 100, None)
        commit(store, "a", 10)  # no mark: counts no conversation
        assert conversations(store) == 0
        assert commit(store, "a", 10, conversation_mark=mark).applied is False  # committed before
        assert conversations(store) == 0
        assert commit(store, "b", 10, conversation_mark=mark).applied
        assert conversations(store) == 1
        assert commit(store, "c", 10, conversation_mark=mark, rollup_key="f/v/gpt-4o").applied
        assert commit(store, "b", 10, conversation_mark=mark + "x").applied is False  # settled
        assert (conversations(store), conversations(store, "f/v/gpt-4o")) == (1, 0)
        assert commit(store, "d", 10, conversation_mark=mark + "x").applied
        assert conversations(store) == 2
        [row] = [r for r in store.rollup([DAY]) if r.rollup_key == "f/u/gpt-4o"]
        assert row.values["requests"] == 3  # "a", "b", "d": every commit charged once

    def test_mark_once_and_call_costs(self, store: LedgerStore) -> None:
        assert store.mark_once("alert/2026-11-23/user/f/u/80", 3_600)
        assert not store.mark_once("alert/2026-11-23/user/f/u/80", 3_600)
        for c in (5, 1, 3):
            store.record_call_cost(DAY, "f", c)
        assert sorted(store.call_costs(DAY, "f")) == [1, 3, 5]
        assert store.call_costs(DAY, "other") == []
        store.ping()

    def test_optional_figures_are_right_when_a_store_reports_them(self, store: LedgerStore) -> None:
        commit(store, "first", 30)
        out = reserve(store, "r", 100, 1_000)
        if out.usage:  # spent + reserved per check, after this reservation
            assert out.usage == (130, 130)
        done = store.commit(
            CommitRequest(
                day=DAY,
                request_id="r",
                charges=[
                    Check(scope="user/f/u", metric="nanos", amount=70),
                    Check(scope="global", metric="nanos", amount=70),
                ],
                rollup_key="f/u/gpt-4o",
                rollup={"requests": 1, "cost_nanos": 70},
                now_ms=3_000,
                call_cost_key="f",
            )
        )
        if done.spent:
            assert done.spent == (100, 100)
        if done.recorded_cost:
            assert store.call_costs(DAY, "f") == [70]

    def test_routing_counters_roll_up_once_and_may_be_negative(self, store: LedgerStore) -> None:
        def routed(rid: str, saved: int) -> None:
            store.commit(
                CommitRequest(
                    day=DAY,
                    request_id=rid,
                    charges=[Check(scope="global", metric="nanos", amount=5)],
                    rollup_key="f/u/gpt-4o-mini",
                    rollup={
                        "requests": 1,
                        "cost_nanos": 5,
                        "routed_requests": 1,
                        "routing_saved_nanos": saved,
                    },
                    now_ms=2_000,
                )
            )

        routed("a", 700)
        routed("b", -30)  # a fallback pricier than the premium model
        routed("b", -30)  # a replay: counted once
        commit(store, "plain", 10)  # not routed: no routing counters at all
        rows = {r.rollup_key: r.values for r in store.rollup([DAY])}
        assert rows["f/u/gpt-4o-mini"]["routed_requests"] == 2
        assert rows["f/u/gpt-4o-mini"]["routing_saved_nanos"] == 670
        assert "routed_requests" not in rows["f/u/gpt-4o"]

    def test_a_ledger_on_this_store_reports_what_routing_saved(
        self, store: LedgerStore, tmp_path: Path
    ) -> None:
        from tokenbudget_core.ledger import Ledger
        from tokenbudget_core.pricing import cost_of
        from tokenbudget_core.reports import build_report
        from tokenbudget_core.usage import Usage

        ledger = Ledger(store, spool_path=tmp_path / "spool")
        calls = [("gpt-4o-mini", Usage(input_tokens=1_200, output_tokens=300)),
                 ("gpt-4.1-mini", Usage(input_tokens=5_000, output_tokens=800)),
                 ("gpt-4o", Usage(input_tokens=900, output_tokens=100))]  # fmt: skip
        for i, (model, usage) in enumerate(calls):
            r = ledger.reserve(model="gpt-4o", input_tokens=usage.input_tokens, max_output_tokens=1_000,
                               feature="chat", request_id=f"routed-{i}")  # fmt: skip
            ledger.commit(r, usage, model=model, premium_model="gpt-4o")
            replay = ledger.commit(r, usage, model=model, premium_model="gpt-4o")
            assert not replay.applied
        ledger.record(Usage(input_tokens=100, output_tokens=10), model="gpt-4o", feature="chat")
        expected = sum((cost_of(u, "gpt-4o") - cost_of(u, m) for m, u in calls), Decimal(0))
        report = build_report(ledger, days=[ledger.day()])
        assert report.totals.routed_requests == 3
        assert report.totals.routing_saved_usd == expected > 0
        by_model = {row.key: row for row in report.breakdown("model").rows}
        assert by_model["gpt-4o"].routed_requests == 1
        assert by_model["gpt-4o"].routing_saved_usd == 0
        assert by_model["gpt-4o-mini"].routing_saved_usd == cost_of(calls[0][1], "gpt-4o") - cost_of(
            calls[0][1], "gpt-4o-mini"
        )
        [feature] = report.breakdown("feature").rows
        assert (feature.requests, feature.routed_requests) == (4, 3)

    def test_call_costs_many_answers_like_one_pair_at_a_time(self, store: LedgerStore) -> None:
        days = [DAY, *ODD_IDS[1:6], "日 2026-11-24"]
        for i, (day, feature) in enumerate(itertools.product(days, ODD_IDS)):
            for n in range(i % 4):  # 0 to 3 samples, in an order that is not sorted
                store.record_call_cost(day, feature, (i * 7 + n * 5) % 11)
        pairs = [(d, f) for d in [*days, "1999-01-01"] for f in [*ODD_IDS, "never"]]
        one_by_one = {pair: store.call_costs(*pair) for pair in pairs}
        assert {len(costs) for costs in one_by_one.values()} == {0, 1, 2, 3}
        batched = call_costs_many(store, pairs)
        assert batched == one_by_one
        assert list(batched) == pairs  # every pair given, in order
        own = getattr(store, "call_costs_many", None)  # optional: a store may rely on the default
        if own is not None:
            assert own(pairs) == one_by_one
        assert call_costs_many(store, []) == {}
        assert call_costs_many(store, [*pairs[:5], *pairs[:5]]) == {p: one_by_one[p] for p in pairs[:5]}

    def test_call_costs_many_reads_more_pairs_than_one_round_trip_carries(self, store: LedgerStore) -> None:
        features = [f"feature {i}" for i in range(1_300)]
        for i in range(0, len(features), 97):
            store.record_call_cost(DAY, features[i], i)
            store.record_call_cost(DAY, features[i], 1)
        pairs = [(day, f) for day in (DAY, "2026-11-24") for f in features]  # 2,600 pairs
        expected = {(day, f): [i, 1] if day == DAY and i % 97 == 0 else [] for day in (DAY, "2026-11-24")
                    for i, f in enumerate(features)}  # fmt: skip
        assert call_costs_many(store, pairs) == expected

    @pytest.mark.parametrize("pairs", NOT_PAIRS)
    def test_call_costs_many_refuses_what_is_not_pairs(self, store: LedgerStore, pairs: object) -> None:
        readers = [lambda p: call_costs_many(store, p)]  # type: ignore[arg-type]
        if hasattr(store, "call_costs_many"):
            readers.append(store.call_costs_many)
        for read in readers:
            with pytest.raises(InvalidInputError, match="pairs"):
                read(pairs)

    @pytest.mark.parametrize("own_reads", [True, False], ids=["own", "fallback"])
    def test_a_snapshot_reads_the_costs_it_counted_in_chunks(
        self, store: LedgerStore, own_reads: bool
    ) -> None:
        source: Any = store if own_reads else OnePairAtATime(store)
        big, small, odd = (DAY, "big"), (DAY, "small"), ("日 2026-11-24", "a:b{c}")
        for i in range(2_500):
            store.record_call_cost(*big, (i * 7_919) % 1_000)  # not in sorted order
        for i in range(3):
            store.record_call_cost(*small, 10 + i)
        store.record_call_cost(*odd, 5)
        pairs = [odd, big, ("1999-01-01", "never"), small]
        snapshot = snapshot_call_costs(source, [*pairs, big])
        assert snapshot.counts == {odd: 1, big: 2_500, ("1999-01-01", "never"): 0, small: 3}
        assert snapshot.count([big, small]) == 2_503
        store.record_call_cost(*big, 999_999)  # recorded after the snapshot: not in it
        store.record_call_cost(*small, 999_999)
        for _ in range(2):  # a snapshot reads the same costs as often as asked
            chunks = list(snapshot.scan(pairs, size=1_000))
            assert all(0 < len(costs) <= 1_000 for _, costs in chunks)
            assert [pair for pair, _ in chunks] == [odd, big, big, big, small]  # in the order given
            joined: dict[Any, list[int]] = {}
            for pair, costs in chunks:
                joined.setdefault(pair, []).extend(costs)
            assert joined == {odd: [5], big: store.call_costs(*big)[:2_500], small: [10, 11, 12]}
        assert list(snapshot.scan([])) == []
        with pytest.raises(InvalidInputError, match="pairs"):
            snapshot.scan([(DAY, "not counted")])
        for size in (0, -1, 1.5, True):
            with pytest.raises(InvalidInputError, match="size"):
                snapshot.scan(pairs, size=size)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="pairs"):
            snapshot_call_costs(source, DAY)  # type: ignore[arg-type]


def marks_answer_their_holder(store: LedgerStore) -> None:
    """``mark_once_for`` on ``store``: a mark set for a holder answers True to that holder again
    (a replay cut short after it), False to anyone else, and a plain mark to no holder."""
    assert mark_once_for(store, "m", 60, "2026-11-23/r1")
    assert mark_once_for(store, "m", 60, "2026-11-23/r1")  # the same request again
    assert not mark_once_for(store, "m", 60, "2026-11-23/r2")
    assert not store.mark_once("m", 60)
    assert store.mark_once("plain", 60)
    assert not mark_once_for(store, "plain", 60, "2026-11-23/r1")  # set without a holder
