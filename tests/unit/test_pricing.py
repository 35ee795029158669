"""Pricing: genai-prices data plus user overrides, in Decimal, never $0 for an unknown price.

Expected dollars are computed here from the providers' published per-million-token
rates, so a wrong component, tier or fallback in tokenbudget shows up as a mismatch.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import data_snapshot

from tokenbudget_core import price_overrides, pricing
from tokenbudget_core.errors import InvalidInputError, UnknownModelError, UnpricedModelError
from tokenbudget_core.pricing import (
    CostBreakdown,
    PriceOverride,
    PriceTable,
    cost_of,
    format_usd,
    load_prices,
    price_of,
    register_price,
)
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.usage import Usage

M = Decimal(1_000_000)
D = Decimal

# Published rates, USD per million tokens.
GPT_4O = {"input": D("2.50"), "cached": D("1.25"), "output": D("10")}
GPT_4O_MINI = {"input": D("0.15"), "cached": D("0.075"), "output": D("0.60")}
SONNET_45 = {
    "input": D("3"),
    "cache_read": D("0.30"),
    "write_5m": D("3.75"),
    "write_1h": D("6"),
    "output": D("15"),
    "long_input": D("6"),
    "long_output": D("22.50"),
}


@pytest.fixture
def registry() -> ModelRegistry:
    """A fresh registry with one known model that has no price anywhere."""
    reg = ModelRegistry()
    reg.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
    return reg


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


@pytest.fixture
def fresh_default_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate the process-wide price table."""
    monkeypatch.setattr(price_overrides, "_default_table", None)
    monkeypatch.delenv("TOKENBUDGET_PRICES", raising=False)


def _model_price(model: str, provider: str) -> object:
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    return info.get_prices(datetime.now(tz=UTC))


# -- the data agrees with the published rates -------------------------------------------------------


def test_genai_prices_data_matches_published_rates() -> None:
    mp = _model_price("gpt-4o", "openai")
    assert (mp.input_mtok, mp.cache_read_mtok, mp.output_mtok) == (  # type: ignore[attr-defined]
        GPT_4O["input"],
        GPT_4O["cached"],
        GPT_4O["output"],
    )
    mp = _model_price("gpt-4o-mini", "openai")
    assert (mp.input_mtok, mp.cache_read_mtok, mp.output_mtok) == (  # type: ignore[attr-defined]
        GPT_4O_MINI["input"],
        GPT_4O_MINI["cached"],
        GPT_4O_MINI["output"],
    )
    mp = _model_price("claude-sonnet-4-5", "anthropic")
    assert mp.input_mtok.base == SONNET_45["input"]  # type: ignore[attr-defined]
    assert mp.cache_read_mtok.base == SONNET_45["cache_read"]  # type: ignore[attr-defined]
    assert mp.cache_write_mtok.base == SONNET_45["write_5m"]  # type: ignore[attr-defined]
    assert mp.cache_write_1h_mtok.base == SONNET_45["write_1h"]  # type: ignore[attr-defined]
    assert mp.output_mtok.base == SONNET_45["output"]  # type: ignore[attr-defined]
    assert [(t.start, t.price) for t in mp.input_mtok.tiers] == [(200_000, SONNET_45["long_input"])]  # type: ignore[attr-defined]
    assert [(t.start, t.price) for t in mp.output_mtok.tiers] == [(200_000, SONNET_45["long_output"])]  # type: ignore[attr-defined]


# -- costs from published rates -----------------------------------------------------------------------


def test_gpt_4o_with_cached_input() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=100, cache_read_tokens=200)
    expected = (800 * GPT_4O["input"] + 200 * GPT_4O["cached"] + 100 * GPT_4O["output"]) / M
    assert expected == D("0.00325")
    assert cost_of(usage, "gpt-4o") == expected


def test_gpt_4o_mini() -> None:
    usage = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=1_024)
    expected = (
        (12_345 - 1_024) * GPT_4O_MINI["input"] + 1_024 * GPT_4O_MINI["cached"] + 678 * GPT_4O_MINI["output"]
    ) / M
    assert cost_of(usage, "gpt-4o-mini") == expected


def test_claude_sonnet_4_5_cache_reads_and_both_write_ttls() -> None:
    usage = Usage(
        input_tokens=10_000,
        output_tokens=500,
        cache_read_tokens=2_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=1_000,
    )
    r = SONNET_45
    expected_input = 5_000 * r["input"] / M
    expected_read = 2_000 * r["cache_read"] / M
    expected_write = (2_000 * r["write_5m"] + 1_000 * r["write_1h"]) / M
    expected_output = 500 * r["output"] / M
    b = price_of(usage, "claude-sonnet-4-5")
    assert b.input_cost == expected_input
    assert b.cache_read_cost == expected_read
    assert b.cache_write_cost == expected_write
    assert b.output_cost == expected_output
    assert b.request_cost == 0
    assert b.total == expected_input + expected_read + expected_write + expected_output
    assert (b.provider, b.priced_as, b.source, b.priced) == (
        "anthropic",
        "claude-sonnet-4-5",
        "genai-prices",
        True,
    )


def test_claude_long_context_tier_applies_to_all_tokens_above_200k_input() -> None:
    long = Usage(input_tokens=250_000, output_tokens=1_000)
    expected = (250_000 * SONNET_45["long_input"] + 1_000 * SONNET_45["long_output"]) / M
    assert cost_of(long, "claude-sonnet-4-5") == expected
    at_threshold = Usage(input_tokens=200_000, output_tokens=1_000)  # the tier starts *above* 200k
    expected_base = (200_000 * SONNET_45["input"] + 1_000 * SONNET_45["output"]) / M
    assert cost_of(at_threshold, "claude-sonnet-4-5") == expected_base


def test_tier_of_accumulated_usage_is_judged_per_request() -> None:
    two_calls = Usage(input_tokens=300_000, output_tokens=0, requests=2)  # 150k each: base tier
    assert cost_of(two_calls, "claude-sonnet-4-5") == 300_000 * SONNET_45["input"] / M
    one_call = Usage(input_tokens=300_000, output_tokens=0)
    assert cost_of(one_call, "claude-sonnet-4-5") == 300_000 * SONNET_45["long_input"] / M


def test_reasoning_tokens_are_billed_as_output() -> None:
    usage = Usage(input_tokens=100, output_tokens=1_000, reasoning_tokens=800)
    assert cost_of(usage, "gpt-4o") == (100 * GPT_4O["input"] + 1_000 * GPT_4O["output"]) / M


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ],
)
def test_dated_and_provider_prefixed_names_price_as_their_model(alias: str, canonical: str) -> None:
    usage = Usage(input_tokens=5_000, output_tokens=700, cache_read_tokens=1_000)
    b = price_of(usage, alias)
    assert b.model == alias
    assert b.priced_as == canonical
    assert b.total == cost_of(usage, canonical)


def test_price_in_effect_at_the_call_date_is_used() -> None:
    # OpenAI cut o3 from $10/$40 to $2/$8 per MTok on 2025-06-10.
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_of(usage, "o3", at=datetime(2025, 6, 1, tzinfo=UTC)) == D("50")
    assert cost_of(usage, "o3", at=datetime(2025, 7, 1, tzinfo=UTC)) == D("10")


def test_all_money_is_decimal() -> None:
    usage = Usage(input_tokens=3, output_tokens=7, cache_read_tokens=1, cache_write_tokens=1)
    b = price_of(usage, "claude-sonnet-4-5")
    for name in ("input_cost", "cache_read_cost", "cache_write_cost", "output_cost", "request_cost", "total"):
        assert type(getattr(b, name)) is Decimal, name
    assert type(cost_of(usage, "gpt-4o-mini")) is Decimal
    assert cost_of(Usage(input_tokens=1), "gpt-4o-mini") == D("0.00000015")  # exact, no float rounding


def test_estimated_usage_is_flagged_in_the_breakdown() -> None:
    assert price_of(Usage(input_tokens=10, estimated=True), "gpt-4o").estimated is True
    assert price_of(Usage(input_tokens=10), "gpt-4o").estimated is False


def _cross_check_cases() -> list[tuple[str, str]]:
    rng = random.Random(7)
    snapshot = data_snapshot.get_snapshot()
    cases = []
    for provider in snapshot.providers:
        if provider.id in ("openai", "anthropic", "google"):
            models = [m.id for m in provider.models if not m.id.startswith("regional.")]
            cases += [(provider.id, m) for m in rng.sample(models, min(15, len(models)))]
    return cases


@pytest.mark.parametrize(("provider", "model"), _cross_check_cases())
def test_totals_equal_genai_prices_calc_price(provider: str, model: str) -> None:
    """The per-component arithmetic reproduces genai-prices' own total for single calls."""
    rng = random.Random(f"{provider}/{model}")
    for input_tokens in (1_000, 180_000, 260_000):
        cache_read = rng.randint(0, input_tokens // 3)
        cache_write = rng.randint(0, input_tokens // 3)
        write_1h = rng.randint(0, cache_write)
        output = rng.randint(1, 5_000)
        reasoning = rng.randint(0, output)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=write_1h,
            reasoning_tokens=reasoning,
        )
        b = price_of(usage, f"{provider}/{model}", registry=ModelRegistry(), prices=PriceTable())
        if not b.priced:
            assert b.total is None
            continue
        assert b.priced_as is not None
        expected = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=input_tokens,
                output_tokens=output,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                cache_write_1h_tokens=write_1h,
                output_reasoning_tokens=reasoning,
            ),
            b.priced_as,
            provider_id=b.provider,
        )
        assert b.total == expected.total_price, usage


# -- unknown price is never $0 ---------------------------------------------------------------------


def test_known_model_without_price_is_unpriced_not_zero(registry: ModelRegistry, table: PriceTable) -> None:
    usage = Usage(input_tokens=1_000, output_tokens=10)
    b = price_of(usage, "acme-7b", registry=registry, prices=table)
    assert b.priced is False
    assert b.source is None
    assert b.provider == "acme"
    for name in ("input_cost", "cache_read_cost", "cache_write_cost", "output_cost", "request_cost", "total"):
        assert getattr(b, name) is None, name
    with pytest.raises(UnpricedModelError) as exc:
        cost_of(usage, "acme-7b", registry=registry, prices=table)
    assert exc.value.model == "acme-7b"
    assert isinstance(exc.value, LookupError)


def test_genai_model_with_no_token_price_is_unpriced() -> None:
    snapshot = data_snapshot.get_snapshot()
    google = next(p for p in snapshot.providers if p.id == "google")
    no_price = [m.id for m in google.models if not isinstance(m.prices, list) and m.prices.input_mtok is None]
    assert no_price, "genai-prices lists no unpriced Google model any more; pick another example"
    with pytest.raises(UnpricedModelError):
        cost_of(Usage(input_tokens=100, output_tokens=10), f"google/{no_price[0]}")


def test_input_only_model_is_priced_for_input_but_not_for_output() -> None:
    assert cost_of(Usage(input_tokens=1_000_000), "text-embedding-3-small") == D("0.02")
    with pytest.raises(UnpricedModelError):
        cost_of(Usage(input_tokens=10, output_tokens=1), "text-embedding-3-small")


def test_unknown_model_raises_with_suggestions() -> None:
    with pytest.raises(UnknownModelError) as exc:
        cost_of(Usage(input_tokens=1), "gpt-4oo")
    assert "gpt-4o" in exc.value.suggestions
    with pytest.raises(UnknownModelError):
        price_of(Usage(input_tokens=1), "no-such-model-xyz")


def test_bad_arguments_are_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as exc:
        cost_of({"input_tokens": 5}, "gpt-4o")  # type: ignore[arg-type]
    assert exc.value.field == "usage"
    with pytest.raises(InvalidInputError) as exc:
        cost_of(Usage(input_tokens=5), "  ")
    assert exc.value.field == "model"
    with pytest.raises(InvalidInputError):
        Usage(input_tokens=-1)


# -- overrides ----------------------------------------------------------------------------------------


def test_override_wins_over_genai_prices_for_all_names_of_the_model(table: PriceTable) -> None:
    table.register("gpt-4o", PriceOverride(input_mtok="1", output_mtok="2", cache_read_mtok="0.5"))
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=500_000)
    for name in ("gpt-4o", "gpt-4o-2024-08-06", "openai/gpt-4o"):
        b = price_of(usage, name, prices=table)
        assert (b.total, b.source, b.priced_as) == (D("2.75"), "override", "gpt-4o"), name
    assert price_of(usage, "gpt-4o-mini", prices=table).source == "genai-prices"


def test_exact_name_override_beats_canonical_override(table: PriceTable) -> None:
    table.register("gpt-4o", PriceOverride(input_mtok=1, output_mtok=1))
    table.register("gpt-4o-2024-08-06", PriceOverride(input_mtok=3, output_mtok=3))
    usage = Usage(input_tokens=1_000_000)
    assert cost_of(usage, "gpt-4o-2024-08-06", prices=table) == 3
    assert cost_of(usage, "gpt-4o-2024-11-20", prices=table) == 1


def test_override_prices_a_known_unpriced_model_and_an_unknown_name(
    registry: ModelRegistry, table: PriceTable
) -> None:
    table.register("acme-7b", PriceOverride(input_mtok="0.2", output_mtok="0.8"))
    table.register("my-finetune", PriceOverride(input_mtok="4", output_mtok="16"))
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    b = price_of(usage, "acme-7b", registry=registry, prices=table)
    assert (b.total, b.provider, b.source) == (D("0.6"), "acme", "override")
    b = price_of(usage, "my-finetune", registry=registry, prices=table)
    assert (b.total, b.provider, b.priced_as) == (D("12"), None, "my-finetune")


def test_override_fallbacks_for_cache_prices(table: PriceTable) -> None:
    table.register("acme", PriceOverride(input_mtok="2", output_mtok="8"))
    table.register("acme-cw", PriceOverride(input_mtok="2", output_mtok="8", cache_write_mtok="2.5"))
    usage = Usage(
        input_tokens=1_000_000,
        cache_read_tokens=200_000,
        cache_write_tokens=300_000,
        cache_write_1h_tokens=100_000,
    )
    # Without cache prices every input token costs the input price.
    assert cost_of(usage, "acme", prices=table) == D("2")
    # 1h writes without their own price cost the cache-write price.
    b = price_of(usage, "acme-cw", prices=table)
    assert b.cache_write_cost == 300_000 * D("2.5") / M
    assert b.cache_read_cost == 200_000 * D("2") / M


def test_price_tables_are_independent(table: PriceTable) -> None:
    other = PriceTable()
    table.register("gpt-4o", PriceOverride(input_mtok=0, output_mtok=0))
    assert "gpt-4o" in table
    assert "gpt-4o" not in other
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o", prices=other) == GPT_4O["input"]
    # A zero override is a real price of zero, not "unknown".
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o", prices=table) == 0
    table.unregister("gpt-4o")
    assert len(table) == 0


def test_register_price_uses_the_process_wide_table(fresh_default_table: None) -> None:
    register_price("gpt-4o-mini", PriceOverride(input_mtok="1", output_mtok="1"))
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o-mini") == 1
    pricing.default_price_table().unregister("gpt-4o-mini")
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o-mini") == GPT_4O_MINI["input"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.5", D("2.5")),
        (3, D("3")),
        (D("0.075"), D("0.075")),
        (2.5, D("2.5")),
        (0.1, D("0.1")),
        (" 1.25 ", D("1.25")),
    ],
)
def test_price_override_accepts_decimals_ints_strings_and_floats(value: object, expected: Decimal) -> None:
    o = PriceOverride(input_mtok=value, output_mtok="1")  # type: ignore[arg-type]
    assert o.input_mtok == expected
    assert type(o.input_mtok) is Decimal
    assert o.cache_read_mtok is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_mtok", -1),
        ("output_mtok", "-0.5"),
        ("cache_read_mtok", float("nan")),
        ("cache_write_mtok", float("inf")),
        ("cache_write_1h_mtok", "NaN"),
        ("input_mtok", "two"),
        ("output_mtok", True),
        ("input_mtok", [1]),
        ("input_mtok", None),
    ],
)
def test_price_override_rejects_bad_prices_naming_the_field(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"input_mtok": "1", "output_mtok": "1", field: value}
    with pytest.raises(InvalidInputError) as exc:
        PriceOverride(**kwargs)  # type: ignore[arg-type]
    assert exc.value.field == f"price_override.{field}"
    assert field in str(exc.value)


def test_price_override_is_frozen() -> None:
    o = PriceOverride(input_mtok=1, output_mtok=2)
    with pytest.raises(AttributeError):
        o.input_mtok = D(5)  # type: ignore[misc]
    assert o == PriceOverride(input_mtok="1", output_mtok="2")


def test_register_rejects_non_overrides(table: PriceTable) -> None:
    with pytest.raises(InvalidInputError):
        table.register("gpt-4o", {"input_mtok": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        table.register("", PriceOverride(input_mtok=1, output_mtok=1))


# -- price files ----------------------------------------------------------------------------------------


def test_load_prices_from_toml_reads_decimals_exactly(tmp_path: Path, table: PriceTable) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[prices."gpt-4o"]\ninput_mtok = "2"\noutput_mtok = 0.1\ncache_read_mtok = 1\n\n'
        '[prices."acme-7b"]\ninput_mtok = 0.3\noutput_mtok = "0.9"\n'
    )
    loaded = load_prices(path, table=table)
    assert sorted(loaded) == ["acme-7b", "gpt-4o"]
    assert table.get("gpt-4o") == PriceOverride(input_mtok="2", output_mtok="0.1", cache_read_mtok="1")
    assert table.get("acme-7b").input_mtok == D("0.3")  # type: ignore[union-attr]
    assert cost_of(Usage(input_tokens=1_000_000, output_tokens=1_000_000), "gpt-4o", prices=table) == D("2.1")


def test_load_prices_from_json(tmp_path: Path, table: PriceTable) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": {"gpt-4o-mini": {"input_mtok": 0.1, "output_mtok": "0.2"}}}))
    load_prices(path, table=table)
    assert table.get("gpt-4o-mini") == PriceOverride(input_mtok="0.1", output_mtok="0.2")


OK_ENTRY = '[prices."ok"]\ninput_mtok = "1"\noutput_mtok = "1"\n'


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("p.toml", "[prices\n", "prices_file"),
        ("p.json", "{not json", "prices_file"),
        ("p.toml", '[models."x"]\nprovider = "y"\n', "prices_file"),
        ("p.toml", OK_ENTRY + '[prices."x"]\ninput_mtok = "1"\n', "prices['x'].output_mtok"),
        (
            "p.toml",
            OK_ENTRY + '[prices."x"]\ninput_mtok = "1"\noutput_mtok = "1"\ncolour = "red"\n',
            "prices['x'].colour",
        ),
        (
            "p.toml",
            OK_ENTRY + '[prices."x"]\ninput_mtok = "-1"\noutput_mtok = "1"\n',
            "prices['x'].input_mtok",
        ),
        ("p.toml", OK_ENTRY.replace('[prices."ok"]', "[prices]") + 'x = "1"\n', "prices['input_mtok']"),
    ],
)
def test_load_prices_rejects_bad_files_and_registers_nothing(
    tmp_path: Path, table: PriceTable, name: str, content: str, field: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidInputError) as exc:
        load_prices(path, table=table)
    assert exc.value.field == field
    assert len(table) == 0


def test_load_prices_missing_file(tmp_path: Path, table: PriceTable) -> None:
    with pytest.raises(InvalidInputError) as exc:
        load_prices(tmp_path / "nope.toml", table=table)
    assert exc.value.field == "prices_file"
    assert "nope.toml" in str(exc.value)


def test_default_table_loads_env_file_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_default_table: None
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[prices."gpt-4o"]\ninput_mtok = "7"\noutput_mtok = "7"\n')
    monkeypatch.setenv("TOKENBUDGET_PRICES", str(path))
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o") == 7


# -- output helpers -------------------------------------------------------------------------------------


def test_as_dict_gives_money_as_strings_and_unknown_as_none(
    registry: ModelRegistry, table: PriceTable
) -> None:
    priced = price_of(Usage(input_tokens=1_000, output_tokens=100, cache_read_tokens=200), "gpt-4o").as_dict()
    assert priced["total"] == "0.00325"
    assert priced["usage"]["cache_read_tokens"] == 200
    assert {f.name for f in fields(CostBreakdown)} == set(priced)
    json.dumps(priced)  # JSON-ready
    unpriced = price_of(Usage(input_tokens=1), "acme-7b", registry=registry, prices=table).as_dict()
    assert unpriced["total"] is None
    assert unpriced["priced"] is False


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (D("0.00325"), "$0.003250"),
        (D("0.00000015"), "$0.00000015"),
        (D("1.8"), "$1.800000"),
        (D("0"), "$0.000000"),
        (D("12E+1"), "$120.000000"),
        (None, "unpriced"),
    ],
)
def test_format_usd(amount: Decimal | None, text: str) -> None:
    assert format_usd(amount) == text
