"""Bad input to the public API (review s28, F1-F8): refused by name as an ``InvalidInputError``
(or another ``TokenBudgetError``), never a bare exception from deep inside nor a silent wrong
number; and the valid input next to each still works.

F1 counters that are builtin sequences, F2 a counter's answer, F3 a response cache's clock,
F4 ``reserve_many`` / ``commit_many`` batches, F5 ``choices``, F6 a hand-made ``Reservation``,
F7 ``Calibration``, F8 ``registry=`` / ``table=`` / ``overrides=``. F9-F15 are in
``test_s28_bad_input_more.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from typing import Any

import pytest

import tokenbudget_core as t
from tokenbudget_core.calibration import Calibration
from tokenbudget_core.errors import InvalidInputError, UnknownModelError
from tokenbudget_core.estimating import EstimatingTokenCounter
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable, load_prices, register_price
from tokenbudget_core.prompt_caching import aplan_prompt_cache, min_cacheable_tokens, plan_prompt_cache
from tokenbudget_core.registry import ModelRegistry, get_model
from tokenbudget_core.streams import OpenAIStreamUsage, estimate_output_tokens
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "system": "You are helpful. " * 800,
    "messages": [{"role": "user", "content": "hi"}],
}
REPLY = "hello world " * 100


class Fixed:
    """A custom counter whose count() answers ``value`` whatever the text."""

    def __init__(self, value: object) -> None:
        self.value = value

    def count(self, text: str) -> object:
        return self.value


class AsyncFixed(Fixed):
    async def acount(self, text: str) -> object:
        return self.value


# -- F1: a str / list / tuple has a .count method, but it is no token counter -----------------------

NOT_COUNTERS = [[1], (), ("a",), b"ab", bytearray(b"x"), {"a": 1}, 5, object()]


@pytest.mark.parametrize("counter", NOT_COUNTERS, ids=lambda c: type(c).__name__)
def test_plan_prompt_cache_refuses_a_counter_that_is_not_one(counter: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        plan_prompt_cache(REQUEST, counter=counter)
    assert e.value.field == "counter"


def test_aplan_prompt_cache_refuses_a_list_counter() -> None:
    with pytest.raises(InvalidInputError) as e:
        asyncio.run(aplan_prompt_cache(REQUEST, counter=[1]))
    assert e.value.field == "counter"


def test_plan_prompt_cache_reads_a_string_counter_as_a_model_name() -> None:
    # the default counter and a model name plan the same breakpoint; a str.count() would plan none
    assert len(plan_prompt_cache(REQUEST).breakpoints) == 1
    assert len(plan_prompt_cache(REQUEST, counter="claude-sonnet-4-5").breakpoints) == 1
    with pytest.raises(UnknownModelError) as e:
        plan_prompt_cache(REQUEST, counter="hello")
    assert e.value.field == "counter"


@pytest.mark.parametrize("counter", [[1], (), b"x"], ids=lambda c: type(c).__name__)
def test_ledger_settle_refuses_a_sequence_counter(counter: object) -> None:
    ledger = Ledger("memory://")
    res = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=500)
    with pytest.raises(InvalidInputError) as e:
        ledger.settle(res, None, reply_text=REPLY, counter=counter)
    assert e.value.field == "counter"
    charged = ledger.settle(res, None, reply_text=REPLY)  # the default counter counts it
    assert charged.usage.output_tokens == 300


@pytest.mark.parametrize("counter", [(), [1], b"x"], ids=lambda c: type(c).__name__)
def test_stream_results_refuse_a_sequence_counter(counter: object) -> None:
    stream = OpenAIStreamUsage()
    stream.add({"choices": [{"delta": {"content": REPLY}}]})
    with pytest.raises(InvalidInputError) as e:
        stream.result(prompt_tokens_estimate=10, counter=counter)
    assert e.value.field == "counter"
    with pytest.raises(InvalidInputError) as e2:
        estimate_output_tokens(REPLY, counter=counter)  # type: ignore[arg-type]
    assert e2.value.field == "counter"
    assert stream.result(prompt_tokens_estimate=10, counter="gpt-4o").output_tokens > 100


@pytest.mark.parametrize("counter", [[1], (), b"x", {"a": 1}], ids=lambda c: type(c).__name__)
def test_truncation_and_compression_refuse_a_sequence_counter(counter: object) -> None:
    for call in (
        lambda: t.truncate_text(REPLY, 5, counter=counter),  # type: ignore[arg-type]
        lambda: t.compress_prompt(REPLY, counter=counter),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "counter"


# -- F2: a custom counter's answer is a token count, never int()-ed ---------------------------------

BAD_COUNTS = [-5, True, 2.9, float("nan"), None, "3", Decimal(3)]


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
def test_truncation_refuses_a_counter_answer_that_is_no_count(value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        t.truncate_text_detailed("hello world " * 20, 5, counter=Fixed(value))  # type: ignore[arg-type]
    assert e.value.field == "counter"
    assert "Fixed" in str(e.value)  # the counter is named, with what it answered
    assert e.value.value == value or value != value  # (NaN)


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
def test_compression_refuses_a_counter_answer_that_is_no_count(value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        t.compress_prompt("hello   world " * 20, counter=Fixed(value))  # type: ignore[arg-type]
    assert e.value.field == "counter"


@pytest.mark.parametrize("value", [None, -1, 1.5, True], ids=repr)
def test_async_truncation_refuses_an_acount_answer_that_is_no_count(value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        asyncio.run(t.atruncate_text("hello world " * 20, 5, counter=AsyncFixed(value)))  # type: ignore[arg-type]
    assert e.value.field == "counter"


def test_a_counter_answering_a_valid_count_still_works() -> None:
    r = t.truncate_text_detailed("hello world " * 20, 5, counter=Fixed(3))  # type: ignore[arg-type]
    assert (r.tokens_before, r.truncated) == (3, False)
    c = t.compress_prompt("hello   world", counter=Fixed(2))  # type: ignore[arg-type]
    assert (c.tokens_before, c.tokens_after) == (2, 2)
    assert asyncio.run(t.atruncate_text("hi", 5, counter=AsyncFixed(1))) == "hi"  # type: ignore[arg-type]


# -- F3: a response cache's clock ------------------------------------------------------------------


def _request() -> t.CacheRequest:
    return t.CacheRequest(model="gpt-4o", messages=(t.Message(role="user", content="capital of france?"),))


def _response() -> t.CachedResponse:
    return t.CachedResponse(content="Paris", model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=2))


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), -float("inf"), None, "1", True, 10**400])
def test_a_cache_refuses_a_clock_reading_that_is_no_time(reading: object) -> None:
    cache = t.ExactCache(clock=lambda: reading, ttl=60)
    with pytest.raises(InvalidInputError) as e:
        cache.store(_request(), _response())
    assert e.value.field == "clock"
    assert cache.lookup(_request()) is None  # nothing stored: nothing to read the clock for


def test_an_entry_stored_by_a_good_clock_is_not_served_by_a_nan_one() -> None:
    now = [time.time()]
    cache = t.ExactCache(clock=lambda: now[0], ttl=60)
    assert cache.store(_request(), _response())
    assert cache.lookup(_request()) is not None
    now[0] = float("nan")
    with pytest.raises(InvalidInputError) as e:
        cache.lookup(_request())
    assert e.value.field == "clock"
    now[0] = time.time() + 10 * 86_400
    assert cache.lookup(_request()) is None  # expired, as the ttl says


def test_a_semantic_cache_refuses_an_async_clock_and_a_coroutine_reading() -> None:
    async def clock() -> float:
        return time.time()

    with pytest.raises(InvalidInputError) as e:
        t.SemanticCache(embedder=t.HashingEmbedder(dim=64), clock=clock)  # type: ignore[arg-type]
    assert e.value.field == "clock"
    cache = t.SemanticCache(embedder=t.HashingEmbedder(dim=64), clock=lambda: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidInputError) as e2:
        cache.store(_request(), _response())
    assert e2.value.field == "clock"


# -- F4: batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["hello", "x" * 100_000, b"ab", None, 5, {"model": "gpt-4o"}, {1, 2}])
def test_reserve_many_refuses_what_is_no_list_of_calls(batch: object) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve_many(batch)  # type: ignore[arg-type]
    assert e.value.field == "calls"


@pytest.mark.parametrize("batch", ["hello", None, 5, {"a": 1}, frozenset()])
def test_commit_many_refuses_what_is_no_list_of_items(batch: object) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.commit_many(batch)  # type: ignore[arg-type]
    assert e.value.field == "items"


def test_batches_as_lists_still_work() -> None:
    ledger = Ledger("memory://")
    [res] = ledger.reserve_many([{"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 5}])
    assert isinstance(res, t.Reservation)
    [charge] = ledger.commit_many([(res, Usage(input_tokens=10, output_tokens=5))])
    assert isinstance(charge, t.Charge)
    assert charge.applied


# -- F5: choices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("choices", [True, 1.0, Decimal(1), 2.0, 0, -1, "1"], ids=repr)
def test_choices_must_be_an_int_of_at_least_one(choices: object) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=50, choices=choices)  # type: ignore[arg-type]
    assert e.value.field == "choices"
    with pytest.raises(InvalidInputError) as e2:
        ledger.check(model="gpt-4o", input_tokens=10, max_output_tokens=50, choices=choices)  # type: ignore[arg-type]
    assert e2.value.field == "choices"
    [refused] = ledger.reserve_many(
        [{"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 50, "choices": choices}]
    )
    assert isinstance(refused, InvalidInputError)
    assert refused.field == "choices"


def test_valid_choices_still_reserve() -> None:
    ledger = Ledger("memory://")
    assert ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=50).max_output_tokens == 50
    assert (
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=50, choices=3).max_output_tokens
        == 150
    )


# -- F6: a hand-made Reservation -------------------------------------------------------------------

BAD_FIELDS = [
    ("day", "garbage"),
    ("day", "2024-13-45"),
    ("day", "20240101"),
    ("day", None),
    ("input_tokens", -5),
    ("input_tokens", True),
    ("max_output_tokens", -5),
    ("max_output_tokens", 1.5),
    ("reserved_usd", Decimal("NaN")),
    ("reserved_usd", Decimal("-1")),
    ("reserved_usd", 0.5),
    ("step", "panic"),
]


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS, ids=lambda v: repr(v))
def test_commit_and_release_refuse_a_reservation_with_a_bad_field(name: str, value: object) -> None:
    ledger = Ledger("memory://", policy=t.BudgetPolicy(daily_usd=Decimal("10")))
    res = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    forged = dataclasses.replace(res, **{name: value})
    with pytest.raises(InvalidInputError) as e:
        ledger.commit(forged, Usage(input_tokens=1000, output_tokens=500))
    assert e.value.field == f"reservation.{name}"
    with pytest.raises(InvalidInputError) as e2:
        ledger.release(forged)
    assert e2.value.field == f"reservation.{name}"
    # nothing was charged: the real reservation still commits, to today
    assert ledger.commit(res, Usage(input_tokens=1000, output_tokens=500)).applied
    assert ledger.state().used["daily_usd"] == Decimal("0.0075")


def test_a_hand_made_reservation_with_valid_fields_still_commits() -> None:
    ledger = Ledger("memory://")
    made = t.Reservation(
        request_id="req-1", day=ledger.day(), model="gpt-4o", feature=None, user=None, conversation=None,
        overhead=None, input_tokens=10, max_output_tokens=10, reserved_usd=None, step="normal",
    )  # fmt: skip
    assert ledger.commit(made, Usage(input_tokens=10, output_tokens=10)).applied


# -- F7: Calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [-100, True, 1.5, float("nan"), float("inf"), None, "3"], ids=repr)
def test_calibration_apply_refuses_an_estimate_that_is_no_count(raw: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        Calibration().apply("gpt-4o", raw)  # type: ignore[arg-type]
    assert e.value.field == "raw_estimate"


@pytest.mark.parametrize("model", [[1], None, "", "  ", 5])
def test_calibration_refuses_a_model_that_is_no_name(model: object) -> None:
    cal = Calibration()
    for call in (
        lambda: cal.observe(model, estimated=1, actual=1),  # type: ignore[arg-type]
        lambda: cal.factor(model),  # type: ignore[arg-type]
        lambda: cal.state(model),  # type: ignore[arg-type]
        lambda: cal.apply(model, 10),  # type: ignore[arg-type]
        *([lambda: cal.reset(model)] if model is not None else []),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "model"


@pytest.mark.parametrize(("name", "value"), [("prior", True), ("alpha", True), ("prior", "1.2")])
def test_calibration_refuses_a_bool_prior_or_alpha(name: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        Calibration(**{name: value})
    assert e.value.field == name


@pytest.mark.parametrize("calibration", ["x", 5, {}, True])
def test_a_counter_refuses_a_calibration_that_is_none(calibration: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        EstimatingTokenCounter(get_model("claude-sonnet-4-5"), calibration=calibration)  # type: ignore[arg-type]
    assert e.value.field == "calibration"
    for model in ("claude-sonnet-4-5", "gpt-4o"):
        with pytest.raises(InvalidInputError) as e2:
            t.TokenCounter.for_model(model, calibration=calibration)  # type: ignore[arg-type]
        assert e2.value.field == "calibration"


def test_calibration_still_works() -> None:
    cal = Calibration(prior=1.0)
    assert cal.apply("gpt-4o", 100) == 100
    cal.observe("gpt-4o", estimated=100, actual=120)
    assert cal.apply("gpt-4o", 100) == 120
    counter = EstimatingTokenCounter(get_model("claude-sonnet-4-5"), calibration=cal)
    assert counter.count("hello") >= 1


# -- F8: registry=, table=, overrides= -------------------------------------------------------------

NOT_REGISTRIES = ["x", [1], {"a": 1}, 5]


@pytest.mark.parametrize("registry", NOT_REGISTRIES, ids=lambda r: type(r).__name__)
def test_entry_points_refuse_a_registry_that_is_none(registry: Any) -> None:
    calls = [
        lambda: min_cacheable_tokens("claude-sonnet-4-5", registry=registry),
        lambda: plan_prompt_cache(REQUEST, registry=registry),
        lambda: plan_prompt_cache(REQUEST, registry=registry, min_tokens=0, counter="claude-sonnet-4-5"),
        lambda: t.TokenCounter.for_model("gpt-4o", registry=registry),
        lambda: t.TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, registry=registry),
        lambda: t.cost_of(Usage(input_tokens=1), "gpt-4o", registry=registry),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "registry"


@pytest.mark.parametrize("table", ["x", 5, {}], ids=lambda v: type(v).__name__)
def test_register_price_and_load_prices_refuse_a_table_that_is_none(table: Any, tmp_path: Any) -> None:
    with pytest.raises(InvalidInputError) as e:
        register_price("m", PriceOverride(input_mtok="1", output_mtok="1"), table=table)
    assert e.value.field == "table"
    path = tmp_path / "prices.toml"
    path.write_text('[prices."m"]\ninput_mtok = "1"\noutput_mtok = "1"\n')
    with pytest.raises(InvalidInputError) as e2:
        load_prices(path, table=table)
    assert e2.value.field == "table"
    mine = PriceTable()
    load_prices(path, table=mine)
    assert "m" in mine


@pytest.mark.parametrize("overrides", ["abc", 5, [("x", 1)]], ids=lambda v: type(v).__name__)
def test_override_mappings_must_be_mappings(overrides: Any) -> None:
    for make in (PriceTable, ModelRegistry):
        with pytest.raises(InvalidInputError) as e:
            make(overrides=overrides)
        assert e.value.field == "overrides"


def test_model_registry_overrides_must_hold_model_infos() -> None:
    with pytest.raises(InvalidInputError) as e:
        ModelRegistry(overrides={"x": 5})  # type: ignore[dict-item]
    assert e.value.field == "overrides['x']"
    with pytest.raises(InvalidInputError) as e2:
        ModelRegistry(overrides={"": get_model("gpt-4o")})
    assert e2.value.field == "overrides"
    info = get_model("gpt-4o")
    assert ModelRegistry(overrides={"mine": info}).get("mine") is info


def test_suggest_refuses_a_bad_name_or_count() -> None:
    registry = ModelRegistry()
    with pytest.raises(InvalidInputError) as e:
        registry.suggest(None)  # type: ignore[arg-type]
    assert e.value.field == "name"
    for n in (-1, 0, True, 1.5):
        with pytest.raises(InvalidInputError) as e2:
            registry.suggest("gpt4", n=n)  # type: ignore[arg-type]
        assert e2.value.field == "n"
    assert "gpt-4" in registry.suggest("gpt4", n=3) or registry.suggest("gpt4", n=3)


@pytest.mark.parametrize(
    ("field", "value"), [("encoding", 0), ("tokenizer", 0), ("canonical", False), ("encoding", "")]
)
def test_register_refuses_falsy_values_rather_than_reading_them_as_unset(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        ModelRegistry().register("acme-7b", provider="acme", **{field: value})  # type: ignore[arg-type]
    assert e.value.field == f"models['acme-7b'].{field}"
    info = ModelRegistry().register("acme-7b", provider="acme")
    assert (info.tokenizer, info.encoding, info.canonical) == ("estimate", "cl100k_base", "acme-7b")
