"""truncate_text: ``smart`` closes a code block it cuts into; at tiny budgets ``keep_both`` and
``smart`` never splice a head and a tail into words the text does not have, nor return a marker
with no text."""

from __future__ import annotations

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.prompt_builder import PromptBuilder
from tokenbudget_core.truncation import SMART_MARKER, truncate_text

GPT = TokenCounter.for_model("gpt-4o")
STEPS = "".join(f"run step-{i} --flag value\n" for i in range(200))


@pytest.mark.parametrize(
    ("text", "closer"),
    [
        pytest.param("Install guide.\n\n```bash\n" + STEPS + "```\n\nDone.", "```", id="backticks"),
        pytest.param("Guide.\n\n~~~~\n" + STEPS + "~~~~\nDone.", "~~~~", id="tildes"),
        pytest.param("Guide.\n\n> ```sh\n> " + STEPS.replace("\n", "\n> ") + "```\n", "> ```", id="quote"),
        pytest.param(
            "1. Guide:\n\n   ```sh\n   " + STEPS.replace("\n", "\n   ") + "```\n", "   ```", id="list"
        ),
    ],
)
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_smart_closes_the_code_block_it_cuts_into(text: str, closer: str, model: str) -> None:
    counter = TokenCounter.for_model(model)
    for budget in (30, 41, 57, 80, 123):
        out = truncate_text(text, budget, "smart", model)
        assert counter.count(out) <= budget
        assert out.endswith(f"{SMART_MARKER}\n{closer}")  # the marker, then the block closed
        assert text.startswith(out.removesuffix(f"{SMART_MARKER}\n{closer}"))
        assert out.count(closer.lstrip(" >")) % 2 == 0  # every fence closed
    # a fence that is closed before the cut gets nothing more
    prose = "Run this:\n\n```\nls\n```\n\n" + "The output lists files. " * 50
    out = truncate_text(prose, 40, "smart")
    assert out.endswith(f".{SMART_MARKER}")
    assert GPT.count(out) <= 40


def test_the_documents_after_a_cut_code_block_are_not_code() -> None:
    doc1 = "Install guide.\n\n```bash\n" + STEPS + "```\n\nDone."
    doc2 = "Fact: the API key lives in VAULT_PATH."
    prompt = PromptBuilder("gpt-4o", max_tokens=600).build(
        system="Answer from the context.", context=[doc1, doc2], user="Where is the API key?"
    )
    system = prompt.messages[0]["content"]
    assert prompt.documents_truncated == 1
    assert system[: system.index("Fact:")].count("```") % 2 == 0  # doc2 is outside any code block


WORDS = "Supercalifragilistic " * 100
TEXTS = [WORDS, "日本語のテキスト。" * 50, "🙂🎉👍🏽 " * 80, "x" * 500, "   " + "word " * 100]
CASES = [
    (text, model, budget)
    for text in TEXTS
    for model in ("gpt-4o", "gpt-4", "claude-sonnet-4-5")
    for budget in range(1, 16)
]


def test_keep_both_at_tiny_budgets_keeps_text_at_both_ends_or_the_beginning() -> None:
    for text, model, budget in CASES:
        counter = TokenCounter.for_model(model)
        both = truncate_text(text, budget, "keep_both", model)
        assert counter.count(both) <= budget
        head, marked, tail = both.partition("\n[… ")
        if marked:  # head and tail both hold text
            tail = tail.split(" tokens truncated …]\n", 1)[1]
            assert head.strip()
            assert tail.strip()
            assert text.startswith(head)
            assert text.endswith(tail)
        else:  # the marker did not fit: the beginning, as keep_start keeps it
            assert text.startswith(both)
            assert both == truncate_text(text, budget, "keep_start", model)


def test_smart_at_tiny_budgets_never_returns_a_marker_without_text() -> None:
    for text, model, budget in CASES:
        counter = TokenCounter.for_model(model)
        smart = truncate_text(text, budget, "smart", model)
        assert counter.count(smart) <= budget
        if smart.endswith(SMART_MARKER):  # never a marker alone (or after whitespace only)
            assert smart.removesuffix(SMART_MARKER).strip()
        assert text.startswith(smart.removesuffix(SMART_MARKER))


def test_keep_both_never_splices_words_that_are_not_in_the_text() -> None:
    for budget in (6, 8, 9, 10):
        out = truncate_text(WORDS, budget, "keep_both")
        assert "Supercalifragragilistic" not in out
        assert out == truncate_text(WORDS, budget, "keep_start")
        assert GPT.count(out) <= budget
