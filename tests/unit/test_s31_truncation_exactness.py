"""A truncation says whether its figures are exact (``TruncationResult.exact`` / ``.method``), as a
count does: a Claude model counted offline, or Gemini, is cut against an estimate. Before, only
the CLI knew (through a counting wrapper of its own) and ``POST /tokens/truncate`` answered
estimated figures with nothing to tell them from exact ones."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core import TokenCounter
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.truncation import atruncate_text, truncate_text_detailed

pytestmark = pytest.mark.usefixtures("isolated")  # no ANTHROPIC_API_KEY: Claude is estimated

TEXT = "The cat sat. The dog ran after it all day long. " * 30


@pytest.mark.parametrize("text", [TEXT, "short", ""])
def test_tiktoken_figures_are_exact(text: str) -> None:
    r = truncate_text_detailed(text, 12, "smart", "gpt-4o")
    assert (r.exact, r.method) == (True, "tiktoken")


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-pro"])
@pytest.mark.parametrize("text", [TEXT, "short"])
def test_estimated_figures_are_flagged(model: str, text: str) -> None:
    r = truncate_text_detailed(text, 12, "keep_both", model)
    assert (r.exact, r.method) == (False, TokenCounter.for_model(model).count(text).method)
    assert r.method == "estimate"


def test_a_counter_of_plain_ints_is_taken_at_its_word() -> None:
    class Words:
        def count(self, text: str) -> int:
            return len(text.split())

    r = truncate_text_detailed(TEXT, 10, "keep_start", counter=Words())
    assert r.truncated
    assert (r.exact, r.method) == (True, None)


def test_the_async_twin_cuts_the_same_text() -> None:
    r = truncate_text_detailed(TEXT, 12, "smart", "claude-sonnet-4-5")
    assert asyncio.run(atruncate_text(TEXT, 12, "smart", "claude-sonnet-4-5")) == r.text


def test_the_service_answers_exact_and_method() -> None:
    with TestClient(create_app(Ledger("memory://"))) as client:
        for model, exact, method in (("gpt-4o", True, "tiktoken"), ("claude-sonnet-4-5", False, "estimate")):
            body = client.post(
                "/tokens/truncate", json={"text": TEXT, "max_tokens": 12, "model": model}
            ).json()
            assert body["truncated"] is True
            assert (body["exact"], body["method"]) == (exact, method)
