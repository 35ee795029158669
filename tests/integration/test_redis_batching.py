"""Concurrent callers share Redis round trips, and lose nothing by it.

The Redis store coalesces the script calls of concurrent callers (threads, ``asyncio`` tasks
through ``to_thread``) into one pipeline per round trip. These tests force batches (the first
round trip waits until the other callers have queued) and check what must not change: a
reserve is all-or-nothing, so concurrent reserves never overspend; a commit is applied once
per request id; one failing operation fails alone; a script the server lost is reloaded.
The same races run on SQLite, which serialises writers instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.errors import BudgetExceededError, BudgetUnavailableError, InvalidInputError
from tokenbudget_core.ledger import Charge, Ledger, Reservation
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.redis import RedisRefusedError, RedisStore, _Op
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.integration

DAY = "2026-11-23"


@contextmanager
def coalescing(store: RedisStore, callers: int) -> Iterator[list[int]]:
    """Hold the first round trip until ``callers - 1`` more operations queued; yields the batch sizes."""
    batcher = store._batcher
    assert batcher is not None
    send, sizes, first = batcher._send, [], threading.Event()

    def held(ops: Sequence[_Op]) -> list[Any]:
        if not first.is_set():
            first.set()
            for _ in range(2_000):  # up to ~10 s: the others are queueing behind us
                if len(batcher._queue) >= callers - 1:
                    break
                threading.Event().wait(0.005)
        sizes.append(len(ops))
        return send(ops)

    batcher._send = held
    try:
        yield sizes
    finally:
        batcher._send = send


def in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - returned to the test, which checks it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.fixture
def store(clean_redis_url: str) -> Iterator[RedisStore]:
    s = RedisStore(clean_redis_url)
    yield s
    s.close()


def reserve_req(i: int, amount: int = 10, limit: int | None = 95) -> ReserveRequest:
    checks = [Check(scope="g", metric="tokens", amount=amount, limit=limit)]
    return ReserveRequest(day=DAY, request_id=f"r{i}", checks=checks, now_ms=0, lease_ms=60_000)


def commit_req(rid: str, amount: int = 7) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="tokens", amount=amount)],
        rollup_key="f/u/m",
        rollup={"requests": 1, "input_tokens": amount},
        now_ms=0,
    )


def test_concurrent_reserves_in_one_batch_never_overspend(store: RedisStore) -> None:
    with coalescing(store, 20) as sizes:
        outcomes = in_threads(20, lambda i: store.reserve(reserve_req(i)))
    assert max(sizes) > 1  # the reservations did share round trips
    assert sum(o.ok for o in outcomes) == 9  # 9 x 10 <= 95 < 10 x 10
    refused = [o for o in outcomes if not o.ok]
    assert all(o.used == 90 for o in refused)
    assert store.totals(DAY, [("g", "tokens")], 0) == {("g", "tokens"): (0, 90)}


def test_commits_of_one_request_in_one_batch_apply_once(store: RedisStore) -> None:
    store.reserve(reserve_req(0))
    with coalescing(store, 12) as sizes:
        outcomes = in_threads(12, lambda i: store.commit(commit_req("r0")))
    assert max(sizes) > 1
    assert sum(o.applied for o in outcomes) == 1
    assert {o.previous for o in outcomes if not o.applied} == {"committed"}
    assert store.totals(DAY, [("g", "tokens")], 0) == {("g", "tokens"): (7, 0)}
    (row,) = store.rollup([DAY])
    assert row.values == {"requests": 1, "input_tokens": 7}


def test_a_failing_operation_fails_alone(store: RedisStore) -> None:
    keys = store._keys(DAY, "bal", "req", "held", "leases")

    def op(i: int) -> Any:
        if i == 3:  # HINCRBY of a non-number: the script errors, on the server
            return store._run(_Op("RESERVE", keys, [store._ttl, "bad", "0", "60000", "g|tokens x -"]))
        return store.reserve(reserve_req(i, limit=None))

    with coalescing(store, 8) as sizes:
        results = in_threads(8, op)
    assert max(sizes) > 1
    assert isinstance(results[3], RedisRefusedError)  # named, the server's reply as its cause
    assert isinstance(results[3].__cause__, redis.exceptions.ResponseError)
    others = [r for i, r in enumerate(results) if i != 3]
    assert all(r.ok and r.state == "reserved" for r in others)
    assert store.totals(DAY, [("g", "tokens")], 0) == {("g", "tokens"): (0, 70)}


def test_a_batch_reloads_scripts_the_server_lost(store: RedisStore, clean_redis_url: str) -> None:
    store.reserve(reserve_req(100))  # scripts loaded
    redis.Redis.from_url(clean_redis_url).script_flush()
    with coalescing(store, 6) as sizes:
        outcomes = in_threads(6, lambda i: store.reserve(reserve_req(i, limit=None)))
    assert max(sizes) > 1
    assert all(o.ok and not o.duplicate for o in outcomes)
    assert store.totals(DAY, [("g", "tokens")], 0) == {("g", "tokens"): (0, 70)}


def test_a_batch_that_cannot_reach_redis_fails_every_caller_cleanly() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0", socket_timeout=0.5)
    with coalescing(dead, 4) as sizes:
        results = in_threads(4, lambda i: dead.reserve(reserve_req(i)))
    assert sum(sizes) == 4
    assert all(isinstance(r, BudgetUnavailableError) for r in results)


# No soft refusal: these tests count what fits under the hard limit (the last call fills it exactly).
POLICY = BudgetPolicy(  # no refusing step: every call that fits goes out, to the last token
    features={"chat": FeatureBudget(user_daily_tokens=10_000)},
    ladder=Ladder(cache_only=None, soft_refusal=None),
)


@pytest.fixture(params=["redis", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("clean_redis_url")
        return url
    return f"sqlite:///{tmp_path}/ledger.db"


def test_concurrent_ledger_calls_never_overspend_and_commit_once(ledger_url: str, tmp_path: Path) -> None:
    ledger = Ledger(ledger_url, policy=POLICY, alerts=[], spool_path=tmp_path / "spool.jsonl")
    try:

        def call(i: int) -> bool:
            try:
                r = ledger.reserve(
                    model="gpt-4o", input_tokens=900, max_output_tokens=100, feature="chat", user="u"
                )
            except BudgetExceededError:
                return False
            charges = [ledger.commit(r, Usage(input_tokens=900, output_tokens=50)) for _ in range(2)]
            assert [c.applied for c in charges] == [True, False]
            return True

        results = in_threads(24, call)
        assert not [r for r in results if isinstance(r, Exception)]
        # Each call reserves 1,000 tokens and spends 950 of them: never an eleventh call (it would
        # overspend). Fewer may go through: near the limit the ladder's soft refusals (each holds
        # its reservation until it releases it) refuse others too, depending on the interleaving.
        assert 0 < sum(results) <= 10
        spent, reserved = ledger.store.totals(ledger.day(), [("u/chat/u", "tokens")], 0)[
            ("u/chat/u", "tokens")
        ]
        assert (spent, reserved) == (950 * sum(results), 0)
        assert spent <= 10_000
    finally:
        ledger.close()


def test_asyncio_tasks_share_round_trips_and_never_overspend(clean_redis_url: str, tmp_path: Path) -> None:
    ledger = Ledger(clean_redis_url, policy=POLICY, alerts=[], spool_path=tmp_path / "spool.jsonl")
    assert isinstance(ledger.store, RedisStore)

    async def call() -> bool:
        try:
            await ledger.areserve(
                model="gpt-4o", input_tokens=900, max_output_tokens=100, feature="chat", user="u"
            )
        except BudgetExceededError:
            return False
        return True

    async def main() -> list[bool]:
        return await asyncio.gather(*(call() for _ in range(30)))

    try:
        with coalescing(ledger.store, 4) as sizes:  # to_thread's pool: few workers on a small machine
            results = asyncio.run(main())
        assert max(sizes) > 1
        assert sum(results) == 10  # reservations only: exactly ten of 1,000 fit in 10,000
        totals = ledger.store.totals(ledger.day(), [("u/chat/u", "tokens")], 0)
        assert totals == {("u/chat/u", "tokens"): (0, 10_000)}
    finally:
        ledger.close()


@pytest.fixture(params=["redis", "sqlite", "memory"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("clean_redis_url")
        return url
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/many.db"


def test_reserve_many_and_commit_many_answer_like_one_at_a_time(any_url: str, tmp_path: Path) -> None:
    ledger = Ledger(any_url, policy=POLICY, alerts=[], spool_path=tmp_path / "spool.jsonl")
    try:
        call = {
            "model": "gpt-4o",
            "input_tokens": 900,
            "max_output_tokens": 100,
            "feature": "chat",
            "user": "u",
        }
        calls = [call] * 11 + [{**call, "input_tokens": -1}, {**call, "user": "v"}]
        results = ledger.reserve_many(calls)
        reservations = [r for r in results if not isinstance(r, Exception)]
        assert len(reservations) == 11  # ten fit u's 10,000 tokens, and v's call
        assert isinstance(results[10], BudgetExceededError)  # checked in order: the eleventh of u
        assert isinstance(results[11], InvalidInputError)  # a bad call fails alone
        assert results[12].user == "v"  # type: ignore[union-attr]
        usage = Usage(input_tokens=900, output_tokens=50)
        items = [(r, usage) for r in reservations] + [(reservations[0], usage)]  # one commit twice
        charges = ledger.commit_many(items)
        assert [c.applied for c in charges if not isinstance(c, Exception)] == [True] * 11 + [False]
        day = ledger.day()
        got = ledger.store.totals(day, [("u/chat/u", "tokens"), ("u/chat/v", "tokens")], 0)
        assert got == {("u/chat/u", "tokens"): (9_500, 0), ("u/chat/v", "tokens"): (950, 0)}
        assert ledger.commit_many([("nope", usage)])[0].__class__ is InvalidInputError  # type: ignore[list-item]
    finally:
        ledger.close()


def test_many_against_a_redis_that_is_down(tmp_path: Path) -> None:
    call = {"model": "gpt-4o", "input_tokens": 900, "max_output_tokens": 100}
    closed = Ledger("redis://127.0.0.1:1/0", spool_path=tmp_path / "a.jsonl")
    assert all(isinstance(r, BudgetUnavailableError) for r in closed.reserve_many([call] * 3))
    opened = Ledger("redis://127.0.0.1:1/0", on_unavailable="open", spool_path=tmp_path / "b.jsonl")
    reservations = opened.reserve_many([call] * 3)
    assert all(isinstance(r, Reservation) and r.unchecked for r in reservations)
    charges = opened.commit_many([(r, Usage(input_tokens=9, output_tokens=1)) for r in reservations])  # type: ignore[misc]
    assert all(isinstance(c, Charge) and c.spooled and not c.applied for c in charges)
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 3  # each commit spooled once


def test_single_and_many_calls_share_the_script_connection_safely(
    clean_redis_url: str, tmp_path: Path
) -> None:
    """Threads mixing one-at-a-time calls (through the batcher) and ``*_many`` calls (straight to the
    store) on one ledger: every reply reaches its own caller, and the totals are exact."""
    ledger = Ledger(clean_redis_url, alerts=[], spool_path=tmp_path / "spool.jsonl")
    usage = Usage(input_tokens=10, output_tokens=5)
    call = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 5, "feature": "mix", "user": "u"}
    try:

        def work(i: int) -> int:
            done = 0
            for _ in range(20):
                if i % 2:
                    rs = ledger.reserve_many([call] * 3)
                    charges = ledger.commit_many([(r, usage) for r in rs])  # type: ignore[misc]
                    assert all(isinstance(c, Charge) and c.applied for c in charges), charges
                    done += 3
                else:
                    assert ledger.commit(ledger.reserve(**call), usage).applied
                    done += 1
            return done

        results = in_threads(8, work)
        assert not [r for r in results if isinstance(r, Exception)], results
        spent, reserved = ledger.store.totals(ledger.day(), [("u/mix/u", "tokens")], 0)[("u/mix/u", "tokens")]
        assert (spent, reserved) == (15 * sum(results), 0)
    finally:
        ledger.close()
