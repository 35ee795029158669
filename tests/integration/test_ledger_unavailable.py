"""The ledger when its Redis store goes away mid-run: fail closed, or fail open with a spool."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from redis_server import RedisServer
from tokenbudget_core import Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger, OnUnavailable
from tokenbudget_core.money import nanos_to_usd
from tokenbudget_core.routing import TierRouter
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration

POLICY = BudgetPolicy(daily_usd="100", features={"chat": FeatureBudget(user_daily_usd="10")})


def usage(i: int) -> Usage:
    return Usage(input_tokens=100 + i, output_tokens=10 + i % 7)


def total_spent(ledger: Ledger) -> Decimal:
    spent, reserved = ledger.store.totals(ledger.day(), [("g", "nanos")], 0)[("g", "nanos")]
    assert reserved == 0
    return nanos_to_usd(spent)


def test_fail_closed_refuses_cleanly_while_redis_is_down(server: RedisServer, tmp_path: Path) -> None:
    ledger = Ledger(server.url, policy=POLICY, spool_path=tmp_path / "spool.jsonl", alerts=[])
    try:
        r = ledger.reserve(
            model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
        )
        server.halt()
        with pytest.raises(BudgetUnavailableError) as info:
            ledger.reserve(
                model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
            )
        assert isinstance(info.value, ConnectionError)
        # The call that was already in flight finishes while the store is down: its usage is spooled.
        charge = ledger.commit(r, usage(0))
        assert charge.spooled
        assert not charge.applied
        server.resume()
        assert ledger.replay_spool() == 1
        assert total_spent(ledger) == cost_of(usage(0), "gpt-4o-mini")
    finally:
        ledger.close()


def test_fail_open_spools_and_replays_nothing_lost_or_doubled(server: RedisServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    ledger = Ledger(server.url, policy=POLICY, on_unavailable="open", spool_path=spool, alerts=[])
    expected = Decimal(0)
    try:
        for i in range(60):
            if i == 20:
                server.halt(kill=True)
            if i == 40:
                server.resume()
            r = ledger.reserve(
                model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
            )
            assert r.unchecked == (20 <= i < 40)
            charge = ledger.commit(r, usage(i))
            expected += cost_of(usage(i), "gpt-4o-mini")
            if 20 <= i < 40:
                assert charge.spooled
        # The first operation after the restart replayed the spool; replaying again changes nothing.
        assert ledger.spool.pending() is False
        assert total_spent(ledger) == expected
        lines = [
            f'{{"day":"{ledger.day()}","request_id":"x","charges":[],"rollup_key":"//","rollup":{{}},"now_ms":0}}'
        ]
        spool.write_text("\n".join(lines) + "\n")
        ledger.replay_spool()
        ledger.replay_spool()
        assert total_spent(ledger) == expected
        rows = {row.rollup_key: row.values for row in ledger.store.rollup([ledger.day()])}
        assert rows["chat/a/gpt-4o-mini"]["requests"] == 60
    finally:
        ledger.close()


def test_a_spool_that_cannot_be_written_is_a_clear_error_not_a_raw_oserror(
    server: RedisServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ledger = Ledger(server.url, policy=POLICY, spool_path=blocker / "sub" / "spool.jsonl", alerts=[])
    try:
        server.halt(kill=True)
        with pytest.raises(BudgetUnavailableError) as e:
            ledger.record(usage(1), model="gpt-4o-mini", feature="chat", user="a", request_id="lost")
        assert "could not be written to the spool" in str(e.value)
        assert "'lost'" in str(e.value)
        assert "record the usage again" in str(e.value)
    finally:
        server.resume()
        ledger.close()


def test_state_fails_open_as_reserve_does_so_routed_calls_go_through(
    server: RedisServer, tmp_path: Path
) -> None:
    ledger = Ledger(
        server.url, policy=POLICY, on_unavailable="open", spool_path=tmp_path / "s.jsonl", alerts=[]
    )
    closed = Ledger(server.url, policy=POLICY, spool_path=tmp_path / "c.jsonl", alerts=[])
    try:
        assert ledger.state(feature="chat", user="a").unchecked is False
        server.halt(kill=True)
        state = ledger.state(feature="chat", user="a")
        assert (state.step, state.shares, state.unchecked) == ("normal", {}, True)
        router = TierRouter({"simple": "gpt-4o-mini", "hard": "gpt-4o"}, ledger=ledger)
        assert router.route("What are your opening hours?", feature="chat", user="a").model
        with pytest.raises(BudgetUnavailableError):
            closed.state(feature="chat", user="a")  # failing closed, it says so
    finally:
        server.resume()
        ledger.close()
        closed.close()


def _reserved_now(ledger: Ledger) -> int:
    return ledger.store.totals(ledger.day(), [("g", "nanos")], int(ledger.clock() * 1000))[("g", "nanos")][1]


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_reserve_whose_answer_was_lost_holds_nothing_once_the_store_answers(
    server: RedisServer, tmp_path: Path, mode: OnUnavailable
) -> None:
    """Redis stalls past the timeout: the reserve may still run there. Failing closed, the ledger
    releases the id it drew once the store answers again; failing open, release() of the
    unchecked reservation reaches the store. Either way no ghost holds the budget for a lease."""
    store = RedisStore(server.url, socket_timeout=0.3)
    ledger = Ledger(store, policy=POLICY, on_unavailable=mode, spool_path=tmp_path / "s.jsonl", alerts=[])
    try:
        ledger.release(
            ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, feature="chat", user="a")
        )
        os.kill(server.pid, signal.SIGSTOP)
        try:
            if mode == "closed":
                with pytest.raises(BudgetUnavailableError):
                    ledger.reserve(
                        model="gpt-4o", input_tokens=2000, max_output_tokens=300, feature="chat", user="a"
                    )
                lost = None
            else:
                lost = ledger.reserve(
                    model="gpt-4o", input_tokens=2000, max_output_tokens=300, feature="chat", user="a"
                )
                assert lost.unchecked
        finally:
            os.kill(server.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while _reserved_now(ledger) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the stalled request runs once the server is back
        assert _reserved_now(ledger) > 0, "the stalled reserve should have run on the server"
        if lost is not None:
            ledger.release(lost)
        else:
            time.sleep(1.1)  # the ledger looks at its orphans (and its spool) once a second
            ledger.state(feature="chat", user="a")  # any store call after that releases them
        assert _reserved_now(ledger) == 0
    finally:
        ledger.close()


def test_ledgers_sharing_one_spool_replay_each_line_into_its_own_store(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TOKENBUDGET_SPOOL names one file for every ledger of a process: usage spooled while Redis
    was down reaches Redis once it is back, never the healthy ledger that happened to replay first."""
    monkeypatch.setenv("TOKENBUDGET_SPOOL", str(tmp_path / "shared.jsonl"))
    prod = Ledger(server.url, policy=POLICY, on_unavailable="open", alerts=[])
    other = Ledger(f"sqlite:///{tmp_path / 'other.db'}", alerts=[])
    try:
        assert prod.spool.path == other.spool.path
        server.halt(kill=True)
        r = prod.reserve(
            model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
        )
        assert prod.commit(r, usage(1)).spooled
        other.record(usage(2), model="gpt-4o-mini", feature="analytics")
        other.replay_spool()
        assert {row.rollup_key for row in other.store.rollup([other.day()])} == {"analytics//gpt-4o-mini"}
        server.resume()
        assert prod.replay_spool() == 1
        assert total_spent(prod) == cost_of(usage(1), "gpt-4o-mini")
    finally:
        prod.close()
        other.close()


def test_a_langchain_call_refused_by_a_stalled_redis_leaves_no_ghost_hold(
    server: RedisServer, tmp_path: Path
) -> None:
    """The LangChain handler reserves under its run's id; when the store stalls, it abandons that
    id (it never retries under it), so whatever the lost request held is released once Redis is back."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langchain_tokenbudget import BudgetCallbackHandler

    ledger = Ledger(
        RedisStore(server.url, socket_timeout=0.3), policy=POLICY, spool_path=tmp_path / "s", alerts=[]
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o", feature="chat", user="a", max_output_tokens=300)
    reply = AIMessage("ok", usage_metadata={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6})
    model = GenericFakeChatModel(messages=iter([reply, reply]), callbacks=[handler])
    try:
        model.invoke("warm up")
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BudgetUnavailableError):
                model.invoke("hello")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while _reserved_now(ledger) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _reserved_now(ledger) > 0, "the stalled reserve should have run on the server"
        time.sleep(1.1)
        ledger.state(feature="chat", user="a")
        assert _reserved_now(ledger) == 0
    finally:
        ledger.close()
