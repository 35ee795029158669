"""Usage and pricing (review s27 F2, F6, F7): DeepSeek's cache hits (``prompt_cache_hit_tokens``)
are cache reads (cached input was charged at the full price: 2.8x); a huge ``saved_usd`` is
InvalidInputError, not a bare decimal.Overflow; a prices file with a blank model name registers
nothing (it kept the entries before it)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

from tokenbudget_core import Ledger, Usage, cost_of
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.price_overrides import PriceTable
from tokenbudget_core.usage_sources import usage_from_openai_chat

DEEPSEEK = {
    "id": "x",
    "object": "chat.completion",
    "model": "deepseek-chat",
    "choices": [],
    "usage": {
        "prompt_tokens": 100_000,
        "completion_tokens": 1_000,
        "total_tokens": 101_000,
        "prompt_cache_hit_tokens": 90_000,
        "prompt_cache_miss_tokens": 10_000,
    },
}


def test_deepseek_cache_hits_are_cache_reads_and_priced_as_genai_prices_prices_them() -> None:
    usage = usage_from_openai_chat(DEEPSEEK)
    assert usage.cache_read_tokens == 90_000
    expected = calc_price(
        GPUsage(input_tokens=100_000, cache_read_tokens=90_000, output_tokens=1_000),
        model_ref="deepseek-chat",
        provider_id="deepseek",
    ).total_price
    assert cost_of(usage, "deepseek-chat") == expected


def test_openai_cached_tokens_still_read_and_the_larger_figure_wins() -> None:
    body = {
        "usage": {
            "prompt_tokens": 1_000,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 800},
        }
    }
    assert usage_from_openai_chat(body).cache_read_tokens == 800


@pytest.mark.parametrize("saved", [Decimal("1e999999"), "1e999999", Decimal("1e16")])
def test_a_huge_saving_is_refused_by_name(saved: object) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError, match=r"^saved_usd: must be at most"):
        ledger.record(Usage(requests=1), model="gpt-4o-mini", cache_hit=True, saved_usd=saved)  # type: ignore[arg-type]


def test_a_prices_file_with_a_blank_name_registers_nothing(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[prices."acme-7b"]\ninput_mtok = "1"\noutput_mtok = "2"\n'
        '[prices."  "]\ninput_mtok = "1"\noutput_mtok = "2"\n'
    )
    table = PriceTable()
    with pytest.raises(InvalidInputError, match=r"prices\['  '\]: must be named by a non-empty model name"):
        table.load_file(path)
    assert table.get("acme-7b") is None


def test_xai_reasoning_on_top_of_completion_tokens_is_billed_as_output() -> None:
    """xAI counts reasoning outside completion_tokens (total = prompt + completion + reasoning):
    a real-shaped Grok reply was refused ('reasoning_tokens exceeds output_tokens'), a smaller
    reasoning count silently dropped."""
    for completion, reasoning in ((1_499, 2_809), (900, 800)):
        body = {
            "model": "grok-4",
            "usage": {
                "prompt_tokens": 1_000,
                "completion_tokens": completion,
                "total_tokens": 1_000 + completion + reasoning,
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        }
        usage = usage_from_openai_chat(body)
        assert (usage.output_tokens, usage.reasoning_tokens) == (completion + reasoning, reasoning)
    openai = {"usage": {"prompt_tokens": 1_000, "completion_tokens": 900, "total_tokens": 1_900,
                        "completion_tokens_details": {"reasoning_tokens": 800}}}  # fmt: skip
    assert usage_from_openai_chat(openai).output_tokens == 900  # OpenAI: reasoning inside


def test_figures_priced_at_other_rates_are_flagged_estimated() -> None:
    from tokenbudget_core.usage_sources import usage_from_anthropic

    audio = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "completion_tokens_details": {"audio_tokens": 19},
        }
    }
    assert usage_from_openai_chat(audio).estimated
    priority = {"service_tier": "priority", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
    assert usage_from_openai_chat(priority).estimated
    assert not usage_from_openai_chat(
        {"service_tier": "default", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    ).estimated
    searched = {
        "usage": {"input_tokens": 10, "output_tokens": 5, "server_tool_use": {"web_search_requests": 3}}
    }
    assert usage_from_anthropic(searched).estimated
    assert usage_from_anthropic(
        {"usage": {"input_tokens": 10, "output_tokens": 5, "speed": "fast"}}
    ).estimated
    assert not usage_from_anthropic({"usage": {"input_tokens": 10, "output_tokens": 5}}).estimated
