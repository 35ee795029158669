"""The ledger: budgets enforced before the call, usage charged after, attribution, alerts, ladder."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core import Usage, cost_of
from tokenbudget_core.alerts import Alert
from tokenbudget_core.attribution import attribute, current_attribution, overhead
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder, load_policy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, UnpricedModelError
from tokenbudget_core.ledger import Ledger, default_spool_path
from tokenbudget_core.ledger_records import new_request_id
from tokenbudget_core.money import nanos_to_usd, usd_to_nanos


class Clock:
    def __init__(self, t: float = 1_795_000_000.0) -> None:  # 2026-11-18
        self.t = t

    def __call__(self) -> float:
        return self.t


def ledger(policy: BudgetPolicy | None = None, **kw: Any) -> Ledger:
    clock, alerts = kw.pop("clock", Clock()), kw.pop("alerts", [])
    return Ledger("memory://", policy=policy, clock=clock, alerts=alerts, **kw)


def spent_usd(led: Ledger, scope: str) -> Decimal:
    spent, _ = led.store.totals(led.day(), [(scope, "nanos")], 0)[(scope, "nanos")]
    return nanos_to_usd(spent)


def test_reserve_then_commit_charges_the_priced_usage() -> None:
    led = ledger(BudgetPolicy(daily_usd="10"))
    r = led.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=500, feature="chat", user="ana")
    worst = cost_of(Usage(input_tokens=1_000, output_tokens=500), "gpt-4o")
    assert r.reserved_usd == worst
    usage = Usage(input_tokens=1_000, output_tokens=120, cache_read_tokens=600)
    charge = led.commit(r, usage)
    assert charge.applied
    assert charge.cost_usd == cost_of(usage, "gpt-4o")
    assert spent_usd(led, "g") == cost_of(usage, "gpt-4o")
    replayed = led.commit(r, usage)
    assert not replayed.applied  # a replayed commit changes nothing
    assert (replayed.cost_usd, replayed.spooled) == (None, False)  # and says it charged nothing
    assert spent_usd(led, "g") == cost_of(usage, "gpt-4o")


def test_call_that_does_not_fit_is_refused_with_the_numbers() -> None:
    policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd=Decimal("0.01"))})
    led = ledger(policy)
    with pytest.raises(BudgetExceededError) as info:
        led.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000, feature="chat", user="ana")
    err = info.value
    assert err.budget == "user_daily_usd"
    assert err.limit == Decimal("0.01")
    assert err.requested == cost_of(Usage(input_tokens=2_000, output_tokens=1_000), "gpt-4o")
    assert "feature=chat user=ana" in str(err)
    assert isinstance(err, RuntimeError)
    # Another user is not affected.
    led.reserve(model="gpt-4o-mini", input_tokens=100, max_output_tokens=50, feature="chat", user="bob")


def test_per_call_limits_and_unpriced_models() -> None:
    limits = FeatureBudget(max_input_tokens_per_call=100, max_output_tokens_per_call=50)
    policy = BudgetPolicy(daily_usd="5", features={"chat": limits})
    led = ledger(policy)
    with pytest.raises(BudgetExceededError, match="max_input_tokens_per_call"):
        led.reserve(model="gpt-4o", input_tokens=101, max_output_tokens=10, feature="chat")
    with pytest.raises(BudgetExceededError, match="max_output_tokens_per_call"):
        led.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=51, feature="chat")
    r = led.reserve(model="gpt-4o", input_tokens=10, feature="chat")
    assert r.max_output_tokens == 50  # the feature's cap is the default worst case
    led.registry.register("house-llm", provider="acme", context_window=8_000, max_output_tokens=100)
    with pytest.raises(UnpricedModelError):
        led.reserve(model="house-llm", input_tokens=10)  # a dollar budget cannot price it
    free = ledger()
    free.registry.register("house-llm", provider="acme", context_window=8_000, max_output_tokens=100)
    charge = free.record(Usage(input_tokens=10, output_tokens=5), model="house-llm")
    assert charge.cost_usd is None  # unpriced, never $0


def test_several_choices_reserve_the_input_once_and_the_output_per_choice() -> None:
    limits = FeatureBudget(max_output_tokens_per_call=500, user_daily_tokens=2_000)
    led = ledger(BudgetPolicy(daily_usd="5", features={"chat": limits}))
    r = led.reserve(
        model="gpt-4o", input_tokens=100, max_output_tokens=400, feature="chat", user="ana", choices=3
    )
    assert r.max_output_tokens == 1_200
    assert r.reserved_usd == cost_of(Usage(input_tokens=100, output_tokens=1_200), "gpt-4o")
    led.release(r)
    # the per-call output cap applies to each choice; the daily budget to all of them
    led.release(led.reserve(model="gpt-4o", input_tokens=10, feature="chat", user="ana", choices=3))
    with pytest.raises(BudgetExceededError, match="user_daily_tokens"):
        led.reserve(
            model="gpt-4o", input_tokens=100, max_output_tokens=400, feature="chat", user="ana", choices=5
        )
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(InvalidInputError, match="choices"):
            led.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1, choices=bad)  # type: ignore[arg-type]


def test_a_call_that_may_write_the_prompt_cache_reserves_the_write_rate() -> None:
    """Claude's 5-minute cache writes cost 1.25x input, 1-hour writes 2x: the worst case of a
    marked call covers what its commit can charge."""
    led = ledger(BudgetPolicy(daily_usd="5"))
    writes = {
        "5m": {"cache_write_tokens": 1_000},
        "1h": {"cache_write_tokens": 1_000, "cache_write_1h_tokens": 1_000},
    }
    for ttl, usage in writes.items():
        r = led.reserve(
            model="claude-sonnet-4-5", input_tokens=1_000, max_output_tokens=100, cache_writes=ttl
        )  # type: ignore[arg-type]
        assert r.reserved_usd == cost_of(
            Usage(input_tokens=1_000, output_tokens=100, **usage), "claude-sonnet-4-5"
        )
        led.release(r)
    plain = led.reserve(model="claude-sonnet-4-5", input_tokens=1_000, max_output_tokens=100)
    assert plain.reserved_usd == cost_of(Usage(input_tokens=1_000, output_tokens=100), "claude-sonnet-4-5")
    with pytest.raises(InvalidInputError, match="cache_writes"):
        led.reserve(model="claude-sonnet-4-5", input_tokens=1, max_output_tokens=1, cache_writes="1d")  # type: ignore[arg-type]


def test_release_frees_the_reservation_and_lease_expiry_unlocks_a_crashed_worker() -> None:
    clock = Clock()
    policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=1_000)})
    led = ledger(policy, clock=clock, lease_seconds=60)
    r = led.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=300, feature="chat", user="ana")
    with pytest.raises(BudgetExceededError, match="user_daily_tokens"):
        led.reserve(model="gpt-4o", input_tokens=200, max_output_tokens=100, feature="chat", user="ana")
    assert led.release(r)
    assert not led.release(r)
    crashed = led.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=300, feature="chat", user="ana")
    assert crashed.request_id
    clock.t += 61  # the worker died; its lease runs out
    led.reserve(model="gpt-4o", input_tokens=200, max_output_tokens=100, feature="chat", user="ana")


def test_attribution_follows_nested_runs_and_reports_overhead() -> None:
    led = ledger()
    with (
        attribute(feature="support", user="u-42", conversation="c-1"),
        attribute(feature="inner", user="someone-else"),
    ):
        assert current_attribution().feature == "support"
        r = led.reserve(model="gpt-4o-mini", input_tokens=100, max_output_tokens=10)
        led.commit(r, Usage(input_tokens=100, output_tokens=10))
        with overhead("summariser"):
            led.record(Usage(input_tokens=300, output_tokens=50), model="gpt-4o-mini")
    rows = {row.rollup_key: row.values for row in led.store.rollup([led.day()])}
    values = rows["support/u-42/gpt-4o-mini"]
    assert values["requests"] == 2
    summariser_cost = usd_to_nanos(cost_of(Usage(input_tokens=300, output_tokens=50), "gpt-4o-mini"))
    assert values["overhead_nanos"] == summariser_cost
    assert values["conversations"] == 1
    assert current_attribution().feature is None


def test_ids_cannot_forge_another_scope() -> None:
    policy = BudgetPolicy(features={"f": FeatureBudget(user_daily_tokens=1_000)})
    led = ledger(policy)
    led.reserve(model="gpt-4o", input_tokens=750, max_output_tokens=50, feature="f", user="a/b")
    # "a" with feature "f/b"-like tricks must not see a/b's reservation
    led.reserve(model="gpt-4o", input_tokens=750, max_output_tokens=50, feature="f", user="a")
    led.reserve(model="gpt-4o", input_tokens=750, max_output_tokens=50, feature="f", user="a%2Fb")


def test_alerts_fire_once_per_budget_and_day() -> None:
    fired: list[Alert] = []
    clock = Clock()
    policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=1_000)})
    led = ledger(policy, clock=clock, alerts=[fired.append])
    for _ in range(3):
        led.record(Usage(input_tokens=300, output_tokens=0), model="gpt-4o", feature="chat", user="ana")
    assert [(a.budget, a.threshold) for a in fired] == [("user_daily_tokens", 0.8)]
    led.record(Usage(input_tokens=300, output_tokens=0), model="gpt-4o", feature="chat", user="ana")
    assert [a.threshold for a in fired] == [0.8, 1.0]
    led.record(Usage(input_tokens=10, output_tokens=0), model="gpt-4o", feature="chat", user="ana")
    assert len(fired) == 2  # once per budget and day
    clock.t += 86_400
    led.record(Usage(input_tokens=900, output_tokens=0), model="gpt-4o", feature="chat", user="ana")
    assert len(fired) == 3  # a new day


def test_alert_webhook_receives_json() -> None:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            if len(received) == 2:
                got.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        led = ledger(BudgetPolicy(daily_usd="0.001"), alerts=[url])
        led.record(Usage(input_tokens=1_000, output_tokens=0), model="gpt-4o")
        assert got.wait(5)  # 80% and 100%, in order
        assert [a["threshold"] for a in received] == [0.8, 1.0]
        assert received[0]["type"] == "tokenbudget.alert"
        assert received[0]["budget"] == "daily_usd"
        assert Decimal(received[0]["limit"]) == Decimal("0.001")
    finally:
        server.shutdown()
        server.server_close()


def _climb(led: Ledger) -> list[str]:
    """The steps of 100-token calls by one payer until the ledger refuses one (its step last)."""
    steps = []
    for _ in range(10):
        try:
            r = led.reserve(model="gpt-4o", input_tokens=90, max_output_tokens=10, feature="chat", user="ana")
        except BudgetExceededError as e:
            steps.append(e.step)
            break
        steps.append(r.step)
        led.commit(r, Usage(input_tokens=90, output_tokens=10))
    return steps


def test_degradation_ladder_steps_then_refuses_uncached_calls_at_cache_only() -> None:
    policy = BudgetPolicy(
        features={"chat": FeatureBudget(user_daily_tokens=1_000)},
        ladder=Ladder(cheaper_tier=0.5, smaller_context=0.7, cache_only=0.8, soft_refusal=0.9),
    )
    led = ledger(policy)
    steps = _climb(led)
    assert steps == ["normal"] * 4 + ["cheaper_tier"] * 2 + ["smaller_context", "cache_only"]
    state = led.state(feature="chat", user="ana")
    assert state.headroom["user_daily_tokens"] == 1_000 - 700  # the refused call holds nothing
    assert state.step == "smaller_context"


def test_without_a_cache_only_step_the_ladder_goes_on_to_the_soft_refusal() -> None:
    policy = BudgetPolicy(
        features={"chat": FeatureBudget(user_daily_tokens=1_000)},
        ladder=Ladder(cheaper_tier=0.5, smaller_context=0.7, cache_only=None, soft_refusal=0.9),
    )
    led = ledger(policy)
    steps = _climb(led)
    assert steps == ["normal"] * 4 + ["cheaper_tier"] * 2 + ["smaller_context"] * 2 + ["soft_refusal"]
    assert led.state(feature="chat", user="ana").headroom["user_daily_tokens"] == 1_000 - 800


def test_a_soft_refusal_carries_the_tightest_budgets_figures() -> None:
    policy = BudgetPolicy(
        daily_usd="1000",
        features={"chat": FeatureBudget(user_daily_usd="0.01")},
        ladder=Ladder(cheaper_tier=None, smaller_context=None, cache_only=None, soft_refusal=0.8),
    )
    led = ledger(policy)
    r = led.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=100, feature="chat", user="ana")
    led.commit(r, Usage(input_tokens=2_000, output_tokens=100))  # $0.006 spent
    with pytest.raises(BudgetExceededError) as caught:
        led.reserve(model="gpt-4o", input_tokens=800, max_output_tokens=100, feature="chat", user="ana")
    e = caught.value
    assert (e.step, e.budget) == ("soft_refusal", "user_daily_usd")
    assert e.limit == Decimal("0.01")
    assert e.used == Decimal("0.006")
    assert e.requested == Decimal("0.003")  # 800 x $2.50/M + 100 x $10/M
    assert "0.006 used of 0.01, this call needs 0.003" in str(e)


def test_each_store_gets_its_own_default_spool(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage spooled for one store must never be replayed into another."""
    monkeypatch.delenv("TOKENBUDGET_SPOOL", raising=False)
    monkeypatch.chdir(tmp_path)
    a = Ledger(f"sqlite:///{tmp_path / 'a.db'}")
    a_again = Ledger("sqlite:///a.db")  # the same file by a relative path
    b = Ledger(f"sqlite:///{tmp_path / 'b.db'}")
    m1, m2 = Ledger("memory://"), Ledger("memory://")
    try:
        assert a.spool.path == a_again.spool.path == default_spool_path(a.store)
        assert len({a.spool.path, b.spool.path, m1.spool.path, m2.spool.path}) == 4
        monkeypatch.setenv("TOKENBUDGET_SPOOL", str(tmp_path / "shared.jsonl"))  # the caller's choice
        c = Ledger(f"sqlite:///{tmp_path / 'c.db'}")
        assert c.spool.path == tmp_path / "shared.jsonl"
        c.close()
        # a memory ledger never spools (its store is never unreachable): it keeps its own file
        assert Ledger("memory://").spool.path != tmp_path / "shared.jsonl"
    finally:
        for led in (a, a_again, b):
            led.close()


def test_days_follow_the_configured_time_zone() -> None:
    clock = Clock(1_795_046_400.0 - 3_600)  # 23:00 UTC on 2026-11-18
    assert ledger(clock=clock).day() == "2026-11-18"
    assert ledger(clock=clock, timezone="Asia/Tokyo").day() == "2026-11-19"
    with pytest.raises(InvalidInputError, match="timezone"):
        ledger(timezone="Mars/Olympus")


def test_policy_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        'daily_usd = "100"\n[features.support]\nuser_daily_usd = "0.5"\nmax_output_tokens_per_call = 800\n'
        "[ladder]\ncheaper_tier = 0.5\n[alerts]\nthresholds = [0.5, 0.9]\n"
    )
    policy = load_policy(path)
    assert policy.daily_usd == Decimal("100")
    assert policy.feature("support").user_daily_usd == Decimal("0.5")
    assert policy.feature("other").user_daily_usd is None
    assert policy.ladder.cheaper_tier == 0.5
    assert policy.alert_thresholds == (0.5, 0.9)
    path.write_text("[features.support]\nuser_daily_usd = 0.5\n")
    with pytest.raises(InvalidInputError, match="float"):
        load_policy(path)
    path.write_text("[features.support]\nmonthly = 5\n")
    with pytest.raises(InvalidInputError, match=r"features\.support\.monthly"):
        load_policy(path)


async def test_async_twins() -> None:
    led = ledger(BudgetPolicy(daily_usd="1"))
    r = await led.areserve(model="gpt-4o-mini", input_tokens=100, max_output_tokens=10)
    charge = await led.acommit(r, Usage(input_tokens=100, output_tokens=5))
    assert charge.applied
    assert not await led.arelease(r)
    with attribute(feature="support", user="u-1"):  # the attribution crosses into the worker thread
        recorded = await led.arecord(Usage(input_tokens=10, output_tokens=2), model="gpt-4o-mini")
        again = await led.arecord(recorded.usage, model="gpt-4o-mini", request_id=recorded.request_id)
    assert (recorded.applied, again.applied) == (True, False)
    assert recorded.cost_usd == cost_of(recorded.usage, "gpt-4o-mini")
    assert [r.rollup_key for r in led.store.rollup([led.day()]) if r.rollup_key.startswith("support/")] == [
        "support/u-1/gpt-4o-mini"
    ]


def test_bad_input() -> None:
    led = ledger()
    with pytest.raises(InvalidInputError, match="input_tokens"):
        led.reserve(model="gpt-4o", input_tokens=-1)
    with pytest.raises(InvalidInputError, match="usage"):
        led.record({"input_tokens": 1}, model="gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_unavailable"):
        ledger(on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="store"):
        Ledger("ftp://x")
    with pytest.raises(InvalidInputError, match="user"), attribute(user=""):
        pass


def test_run_budget_checks_the_next_calls_worst_case() -> None:
    from tokenbudget_core.budgets import RunBudget

    led = ledger()
    r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    RunBudget(max_tokens=1_000).check(r, tokens_used=850, usd_used=Decimal(0))
    with pytest.raises(BudgetExceededError, match="max_run_tokens"):
        RunBudget(max_tokens=1_000).check(r, tokens_used=851, usd_used=Decimal(0))
    assert r.reserved_usd is not None
    with pytest.raises(BudgetExceededError, match="max_run_usd") as info:
        RunBudget(max_usd=Decimal("0.01")).check(r, tokens_used=0, usd_used=Decimal("0.01"))
    assert info.value.requested == r.reserved_usd
    with pytest.raises(InvalidInputError, match="max_usd"):
        RunBudget(max_usd=0.5)  # type: ignore[arg-type]


def test_settle_commits_reports_estimates_the_rest_and_releases_failures() -> None:
    from tokenbudget_core import TokenCounter

    led = ledger()
    counter = TokenCounter.for_model("gpt-4o")
    r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    charge = led.settle(r, Usage(input_tokens=120, output_tokens=30))
    assert charge is not None
    assert charge.usage == Usage(input_tokens=120, output_tokens=30)
    r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    charge = led.settle(r, None, reply_text="Hello there, friend.", counter=counter)
    assert charge is not None
    assert charge.usage == Usage(
        input_tokens=100, output_tokens=int(counter.count("Hello there, friend.")), estimated=True
    )
    r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    charge = led.settle(r, Usage(input_tokens=0, output_tokens=7))  # a stream that lost its input figure
    assert charge is not None
    assert (charge.usage.input_tokens, charge.usage.estimated) == (100, True)
    r = led.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    assert led.settle(r, None, failed=True) is None
    assert not led.release(r)  # already released


def _child_request_ids(conn: Any) -> None:
    conn.send([new_request_id() for _ in range(3)])
    conn.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_generated_request_ids_are_unique_across_calls_and_forked_processes() -> None:
    """A reservation that names no request id gets one no other call has, in this process or a fork."""
    import multiprocessing

    mine = [Ledger("memory://").reserve(model="gpt-4o-mini", input_tokens=1).request_id for _ in range(1_000)]
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_request_ids, args=(child,))
    proc.start()
    theirs = parent.recv()
    proc.join(10)
    assert len(set(mine)) == len(mine)
    assert not set(theirs) & set(mine)
    assert theirs[0][:20] != mine[0][:20]  # the child drew a prefix of its own


async def test_a_call_cancelled_while_its_reservation_is_made_holds_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url, policy=BudgetPolicy(user_daily_tokens=10_000))
    led.record(Usage(input_tokens=1, output_tokens=1), model="gpt-4o-mini", user="u-1")  # the file exists
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # another process mid-write: the reserve waits for its lock
    threading.Timer(0.5, blocker.rollback).start()
    call = {"model": "gpt-4o-mini", "input_tokens": 100, "max_output_tokens": 100, "user": "u-1"}
    with pytest.raises(TimeoutError):  # the caller gave up waiting: the call is not sent
        await asyncio.wait_for(led.areserve(**call, request_id="r-1"), 0.1)
    await asyncio.get_running_loop().shutdown_default_executor()  # the worker thread reserved by now
    for _ in range(100):
        if led.state(user="u-1").used["user_daily_tokens (all features)"] == 2:
            break
        await asyncio.sleep(0.02)
    assert led.state(user="u-1").used["user_daily_tokens (all features)"] == 2  # spent 2, nothing held
    with pytest.raises(InvalidInputError, match="released"):  # it was reserved, then released
        led.reserve(**call, request_id="r-1")
    blocker.close()


def test_a_cancelled_reservation_is_released_even_when_its_loop_is_closed_first(tmp_path: Path) -> None:
    """The loop that ran the cancelled call is closed (no shutdown of its executor) before the
    worker thread reserves: the thread releases what it reserved itself."""
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", policy=BudgetPolicy(user_daily_tokens=10_000))
    led.record(Usage(input_tokens=1, output_tokens=1), model="gpt-4o-mini", user="u-1")
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    done = threading.Event()
    threading.Timer(0.3, lambda: (blocker.rollback(), done.set())).start()
    call = {"model": "gpt-4o-mini", "input_tokens": 100, "max_output_tokens": 100, "user": "u-1"}

    async def gives_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(led.areserve(**call, request_id="r-1"), 0.05)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(gives_up())
    loop.close()
    assert done.wait(5)
    for worker in threading.enumerate():  # the closed loop's executor thread ends after its work
        if worker.name.startswith("asyncio_"):
            worker.join(5)
    with pytest.raises(InvalidInputError, match="released"):  # the thread reserved it, then released
        led.reserve(**call, request_id="r-1")
    assert led.state(user="u-1").used["user_daily_tokens (all features)"] == 2
    blocker.close()


def test_a_soft_refusal_says_why_a_call_that_fits_was_refused() -> None:
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=2_040))
    led.reserve(model="gpt-4o-mini", input_tokens=8, max_output_tokens=1_000, user="u")  # 1008 held
    with pytest.raises(BudgetExceededError) as caught:  # 2016 of 2040 would be past 97%
        led.reserve(model="gpt-4o-mini", input_tokens=8, max_output_tokens=1_000, user="u")
    assert caught.value.step == "soft_refusal"
    assert "soft-refusal share" in str(caught.value)
