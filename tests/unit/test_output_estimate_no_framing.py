"""A cut-short Claude stream's output is estimated as text, not as a framed user message."""

from __future__ import annotations

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.streams import estimate_output_tokens


@pytest.fixture
def claude(monkeypatch: pytest.MonkeyPatch) -> TokenCounter:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return TokenCounter.for_model("claude-sonnet-4-5")


def test_claude_output_is_the_text_alone(claude: TokenCounter) -> None:
    framed = int(claude.count("The weather "))  # as a user message: framing included
    alone = estimate_output_tokens("The weather ", counter=claude)
    assert alone < framed
    assert alone == int(claude.count_output("The weather "))
    assert 1 <= estimate_output_tokens("a", counter=claude) <= 2
    assert not claude.count_output("a").exact  # an estimate, and says so
    assert estimate_output_tokens("", counter=claude) == 0


def test_openai_output_is_unchanged() -> None:
    gpt = TokenCounter.for_model("gpt-4o")
    assert estimate_output_tokens("The weather ", counter=gpt) == int(gpt.count("The weather ")) == 3


def test_a_cut_short_claude_stream_is_charged_its_text(claude: TokenCounter) -> None:
    ledger = Ledger("memory://")
    r = ledger.reserve(model="claude-sonnet-4-5", input_tokens=20, max_output_tokens=100)
    charge = ledger.settle(r, None, reply_text="a", failed=True, counter=claude)
    assert charge is not None
    assert charge.usage.estimated
    assert charge.usage.output_tokens <= 2  # not the ~10 of "a" framed as a user message
