"""Regressions from the review of the memory lane, the handler's one-pass path and ``forget``:
each case compares the one-pass path with the general one, or checks the documented rule."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import BudgetExceededError, BudgetUnavailableError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage


class _GeneralStore(MemoryStore):
    """The memory store seen as any store: no lane."""


class _GeneralHandler(BudgetCallbackHandler):
    """The handler with its one-pass paths off."""

    def _start_plain(self, *args: Any) -> bool:
        return False

    def _end_plain(self, *args: Any) -> bool:
        return False


SOFT = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=1_000), ladder=Ladder(soft_refusal=0.9))


def test_a_retry_under_a_forgotten_id_holds_for_its_own_lease() -> None:
    """The soft-refused reservation's lease entry must not expire the retry made under its id."""
    now = [1_700_000_000.0]
    ledger = Ledger("memory://", policy=SOFT, lease_seconds=600, clock=lambda: now[0])
    other = ledger.reserve(model="gpt-4o", input_tokens=800, max_output_tokens=0, user="u")
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=150, max_output_tokens=0, user="u", request_id="X")
    now[0] += 500
    ledger.release(other)
    ledger.reserve(model="gpt-4o", input_tokens=150, max_output_tokens=0, user="u", request_id="X")
    now[0] += 200  # past the refused reservation's lease, within the retry's
    assert ledger.state(user="u").headroom["user_daily_tokens"] == 850


def _open_twice(handler_class: type[BudgetCallbackHandler], *, next_day: bool) -> tuple[int, bool]:
    """Run A stays open under run id R; run B starts under R (a reused config["run_id"]), the
    budget past its soft-refusal share (or on the next day). Headroom after B, and whether A is open."""
    now = [1_763_856_000.0]
    # next day: no ladder, so a second hold would show rather than be soft-refused
    policy = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=2_000)) if next_day else SOFT
    ledger = Ledger("memory://", policy=policy, clock=lambda: now[0])
    handler = handler_class(ledger, model="gpt-4o-mini", user="u")
    run_id = uuid.UUID(int=7)
    kwargs: dict[str, Any] = {
        "invocation_params": {"model": "gpt-4o-mini", "max_tokens": 490},
        "metadata": {},
    }
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, **kwargs)
    if next_day:
        now[0] += 86_400
    else:
        ledger.record(Usage(input_tokens=420), model="gpt-4o-mini", user="u")
    with contextlib.suppress(BudgetExceededError):  # refused or not: the two paths must agree
        handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, **kwargs)
    headroom = ledger.state(user="u").headroom["user_daily_tokens"]
    assert isinstance(headroom, int)
    return headroom, run_id in handler._runs


@pytest.mark.parametrize("next_day", [False, True])
def test_a_reused_open_run_id_is_reserved_like_the_general_path(next_day: bool) -> None:
    """The one-pass start leaves a run id some open run holds to the general path: a refusal of
    the second call never gives back the first one's hold, and nothing is held twice."""
    assert _open_twice(BudgetCallbackHandler, next_day=next_day) == _open_twice(
        _GeneralHandler, next_day=next_day
    )


@pytest.mark.parametrize("store", ["lane", "general"])
def test_a_retried_reserve_of_a_live_id_past_the_soft_share_gets_its_reservation_and_keeps_its_hold(
    store: str,
) -> None:
    """The retry of a granted call is answered as the call was (its hold covers it); a ledger
    that cannot see the hold (another process's) lets nothing go out that does not fit next to
    it, and the live reservation is not given back for it: its maker settles it."""
    backing = MemoryStore() if store == "lane" else _GeneralStore()
    ledger = Ledger(backing, policy=SOFT)
    first = ledger.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=0, user="u", request_id="A")
    ledger.record(Usage(input_tokens=420), model="gpt-4o", user="u")  # now 92%: past the soft share
    again = ledger.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=0, user="u", request_id="A")
    assert again == first
    assert again.step == first.step == "normal"  # as at 50%, not 92%
    other = Ledger(backing, policy=SOFT)
    with pytest.raises(InvalidInputError) as e:
        other.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=0, user="u", request_id="A")
    assert e.value.field == "request_id"
    assert ledger.state(user="u").headroom["user_daily_tokens"] == 80  # A still held


@pytest.mark.parametrize("store", ["lane", "general"])
def test_one_id_twice_in_one_reserve_many_is_an_error_not_a_retry(store: str) -> None:
    ledger = Ledger(MemoryStore() if store == "lane" else _GeneralStore(), policy=SOFT)
    ledger.record(Usage(input_tokens=850), model="gpt-4o", user="u")
    call = {"model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 0, "user": "u", "request_id": "X"}
    refused, repeated = ledger.reserve_many([call, call])
    assert isinstance(refused, BudgetExceededError)
    assert refused.step == "soft_refusal"
    assert isinstance(repeated, InvalidInputError)  # not mistaken for a retry of the first
    assert repeated.field == "calls[1].request_id"
    assert ledger.state(user="u").headroom["user_daily_tokens"] == 150  # nothing held


@pytest.mark.parametrize("swap", ["prices", "registry"])
def test_reassigning_prices_or_registry_reaches_the_lane(swap: str) -> None:
    results = []
    for store in (MemoryStore(), _GeneralStore()):
        registry = ModelRegistry()
        registry.register("acme", provider="acme", context_window=10_000, max_output_tokens=10)
        ledger = Ledger(
            store,
            registry=registry,
            prices=PriceTable({"acme": PriceOverride(input_mtok="1", output_mtok="1")}),
        )
        ledger.reserve(model="acme", input_tokens=100)  # the lane is built
        if swap == "prices":
            ledger.prices = PriceTable({"acme": PriceOverride(input_mtok="100", output_mtok="100")})
        else:
            registry = ModelRegistry()
            registry.register("acme", provider="acme", context_window=10_000, max_output_tokens=999)
            ledger.registry = registry
        r = ledger.reserve(model="acme", input_tokens=100)
        charge = ledger.commit(r, Usage(input_tokens=100, output_tokens=5))
        results.append((r.max_output_tokens, r.reserved_usd, charge.cost_usd))
    assert results[0] == results[1]
    assert results[0][0] == (999 if swap == "registry" else 10)


def test_a_forget_that_could_not_reach_the_store_still_forgets(tmp_path: Path) -> None:
    """A soft refusal whose give-back fails is given back (and its id forgotten) once the store
    answers: a retry under the id reserves anew."""

    class Flaky(SQLiteStore):
        fail = 0

        def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
            if Flaky.fail:
                Flaky.fail -= 1
                raise BudgetUnavailableError("sqlite://flaky", "a blip")
            return super().release(day, request_id, now_ms, forget=forget)

    ledger = Ledger(Flaky(f"sqlite:///{tmp_path / 'l.db'}"), policy=SOFT)
    ledger.record(Usage(input_tokens=850), model="gpt-4o", user="u")
    Flaky.fail = 1
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=0, user="u", request_id="X")
    # a retry before the store is reached again finds the refused hold: refused, nothing let through
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=0, user="u", request_id="X")
    ledger._next_spool_check = 0.0  # the next store call looks at waiting releases at once
    ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=0, user="w")
    retry = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=0, user="u", request_id="X")
    assert retry.request_id == "X"
    assert ledger.state(user="u").headroom["user_daily_tokens"] == 140  # 850 spent, the retry's 10 held


def test_a_handler_with_a_counter_and_no_model_names_the_missing_model() -> None:
    errors = []
    for handler_class in (BudgetCallbackHandler, _GeneralHandler):
        handler = handler_class(Ledger("memory://"), counter=TokenCounter.for_model("gpt-4o"))
        with pytest.raises(InvalidInputError) as e:
            handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=uuid.uuid4(), invocation_params={})
        errors.append((e.value.field, str(e.value)))
    assert errors[0] == errors[1]
    assert "does not name its model" in errors[0][1]


@pytest.mark.parametrize(
    "change", [{"model": ["gpt-4o"]}, {"user": 1}, {"feature": b"chat"}, {"user": "\ud800"}]
)
def test_committing_a_hand_made_reservation_with_bad_ids_is_a_named_error(change: dict[str, Any]) -> None:
    outcomes = []
    for store in (MemoryStore(), _GeneralStore()):
        ledger = Ledger(store)
        bad = dataclasses.replace(
            ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10), **change
        )
        try:
            ledger.commit(bad, Usage(input_tokens=10, output_tokens=1))
            outcomes.append("charged")
        except Exception as e:  # noqa: BLE001 - compared between the two paths
            outcomes.append(type(e).__name__)
    assert outcomes == ["InvalidInputError", "InvalidInputError"]


def test_a_policys_features_cannot_be_changed_in_place() -> None:
    """A ledger works out what it needs from a policy once; a changed policy is a new one."""
    features = {"chat": FeatureBudget()}
    policy = BudgetPolicy(features=features)
    features["chat"] = FeatureBudget(max_input_tokens_per_call=50)  # the caller's dict: not the policy's
    assert policy.feature("chat") == FeatureBudget()
    with pytest.raises(InvalidInputError) as e:
        policy.features["chat"] = FeatureBudget(max_input_tokens_per_call=50)  # type: ignore[index]
    assert e.value.field == "features"
    assert (
        dataclasses.replace(policy, features={"chat": FeatureBudget(user_daily_tokens=5)})
        .feature("chat")
        .user_daily_tokens
        == 5
    )


class _ReleasedMeanwhile(dict[str, bool]):
    """Waiting releases, each given back (by another thread's replay) just after it is read."""

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key, default)
        self.pop(key, None)
        return found


@pytest.mark.parametrize("store", ["lane", "general"])
def test_a_retry_racing_the_release_of_its_abandoned_id_reserves(store: str) -> None:
    """A caller retrying an id it abandoned, while the ledger's replay gives that id back in
    another thread, gets its reservation (no KeyError from the ledger's bookkeeping)."""
    ledger = Ledger(MemoryStore() if store == "lane" else _GeneralStore(), policy=SOFT)
    ledger.abandon("caller-7")
    ledger._orphan_ids = _ReleasedMeanwhile(ledger._orphan_ids)
    r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=0, user="u", request_id="caller-7")
    assert r.request_id == "caller-7"
    assert ledger.state(user="u").headroom["user_daily_tokens"] == 990
