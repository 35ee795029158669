"""usage_from_langchain(marked_ttl=...): cache writes reported without their 1h/5m split (a streamed
Claude reply's running total) are charged at the TTL the request's cache_control markers named."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import Usage, cost_of
from tokenbudget_core.usage_sources import usage_from_langchain

UNSPLIT = {"input_tokens": 10_020, "output_tokens": 7, "input_token_details": {"cache_creation": 10_000}}
"""What langchain-anthropic makes of ``message_delta.usage``: writes, and no TTL split."""


@pytest.mark.parametrize(("ttl", "write_1h"), [("1h", 10_000), ("5m", 0), (None, 0)])
def test_unsplit_writes_are_charged_at_the_marked_ttl(ttl: Any, write_1h: int) -> None:
    u = usage_from_langchain(UNSPLIT, marked_ttl=ttl)
    assert (u.input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (10_020, 10_000, write_1h)


def test_the_1h_rate_is_what_anthropic_bills() -> None:
    billed = Usage(
        input_tokens=10_020, output_tokens=7, cache_write_tokens=10_000, cache_write_1h_tokens=10_000
    )
    assert cost_of(usage_from_langchain(UNSPLIT, marked_ttl="1h"), "claude-haiku-4-5") == cost_of(
        billed, "claude-haiku-4-5"
    )
    assert cost_of(usage_from_langchain(UNSPLIT), "claude-haiku-4-5") < cost_of(billed, "claude-haiku-4-5")


@pytest.mark.parametrize(
    ("split", "write_1h"),
    [
        ({"ephemeral_5m_input_tokens": 10_000, "ephemeral_1h_input_tokens": 0}, 0),
        ({"ephemeral_5m_input_tokens": 4_000, "ephemeral_1h_input_tokens": 6_000}, 6_000),
        ({"ephemeral_1h_input_tokens": 0}, 0),
    ],
)
def test_a_reported_split_is_kept(split: dict[str, int], write_1h: int) -> None:
    """A 1h marker whose prefix was already cached writes only the 5m part: the split says so."""
    data = {"input_tokens": 10_020, "output_tokens": 7, "input_token_details": {"cache_creation": 0, **split}}
    u = usage_from_langchain(data, marked_ttl="1h")
    assert (u.cache_write_tokens, u.cache_write_1h_tokens) == (sum(split.values()) or 0, write_1h)


def test_usage_without_writes_is_unchanged() -> None:
    plain = {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49}
    assert usage_from_langchain(plain, marked_ttl="1h") == Usage(input_tokens=40, output_tokens=9)
    read = {"input_tokens": 1_040, "output_tokens": 9, "input_token_details": {"cache_read": 1_000}}
    assert usage_from_langchain(read, marked_ttl="1h").cache_write_1h_tokens == 0


def test_unsplit_writes_under_mixed_markers_stay_5m_writes_and_are_flagged() -> None:
    """Both TTLs marked: which blocks were written is unknown; the 5m rate, flagged an estimate."""
    u = usage_from_langchain(UNSPLIT, marked_ttl="mixed")
    assert (u.cache_write_tokens, u.cache_write_1h_tokens, u.estimated) == (10_000, 0, True)
    split = {
        **UNSPLIT,
        "input_token_details": {"cache_creation": 10_000, "ephemeral_1h_input_tokens": 10_000},
    }
    assert usage_from_langchain(split, marked_ttl="mixed").estimated is False  # a split is what was billed
    assert usage_from_langchain({**UNSPLIT, "input_token_details": {}}, marked_ttl="mixed").estimated is False
