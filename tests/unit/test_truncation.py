"""Truncation: the budget is never exceeded, whatever the text, strategy or counter."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core.compression import compress_prompt
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError, UnknownModelError
from tokenbudget_core.openai_counting import TiktokenCounter
from tokenbudget_core.registry import get_model
from tokenbudget_core.truncation import (
    DEFAULT_MARKER,
    SMART_MARKER,
    Strategy,
    TruncationResult,
    atruncate_text,
    truncate_text,
    truncate_text_detailed,
)

PROPERTY = settings(max_examples=100, deadline=None, database=None)
STRATEGIES: tuple[Strategy, ...] = ("keep_start", "keep_end", "keep_both", "smart")
GPT = TiktokenCounter(get_model("gpt-4o"))
STORY = "The cat sat on the mat. The dog ran after it all day long. Then both slept."


def n(text: str) -> int:
    return int(GPT.count(text))


class CharCounter:
    """No encode/decode: truncation must search character offsets. Counts tokens of gpt-4o."""

    def __init__(self) -> None:
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return n(text)


class CodecCounter(CharCounter):
    """encode/decode like TiktokenCounter, but counts through count() so calls can be checked."""

    def encode(self, text: str) -> list[int]:
        return GPT.encode(text)

    def decode(self, tokens: Sequence[int]) -> str:
        return GPT.decode(tokens)


class FramedCounter:
    """Like Claude's counter: every count includes 5 tokens of message framing."""

    def count(self, text: str) -> int:
        return n(text) + 5


class AsyncCounter(CharCounter):
    def __init__(self) -> None:
        super().__init__()
        self.async_calls = 0

    async def acount(self, text: str) -> int:
        self.async_calls += 1
        return n(text)


# -- concrete cases ------------------------------------------------------------------------------


def test_text_within_budget_is_returned_as_is() -> None:
    text = "".join(["Hello", " world"])
    for strategy in STRATEGIES:
        assert truncate_text(text, 100, strategy) is text
        assert truncate_text(text, n(text), strategy) is text
    result = truncate_text_detailed(text, 100)
    assert result == TruncationResult(
        text=text, tokens_before=2, tokens_after=2, truncated=False, strategy="keep_start", method="tiktoken"
    )
    assert str(result) == text


def test_keep_start() -> None:
    out = truncate_text(STORY, 8)
    assert out == "The cat sat on the mat. The"
    assert n(out) == 8


def test_keep_end() -> None:
    out = truncate_text(STORY, 8, "keep_end")
    assert out == " all day long. Then both slept."
    assert STORY.endswith(out)
    assert n(out) <= 8


def test_keep_both_puts_an_informative_marker_in_the_middle() -> None:
    result = truncate_text_detailed(STORY, 16, "keep_both")
    head, _, tail = result.text.partition("\n[… ")
    removed = int(re.search(r"\[… ([\d,]+) tokens truncated …\]", result.text).group(1))  # type: ignore[union-attr]
    assert head
    assert STORY.startswith(head)
    assert STORY.endswith(tail.split("]\n", 1)[1])
    assert removed == n(STORY) - n(head) - n(tail.split("]\n", 1)[1])
    assert result.tokens_after == n(result.text) <= 16
    assert result.tokens_before == n(STORY)
    assert result.truncated


def test_smart_cuts_at_the_last_sentence_end_that_fits() -> None:
    assert truncate_text(STORY, 13, "smart") == "The cat sat on the mat. […]"
    assert truncate_text(STORY, 17, "smart") == STORY.removesuffix(" Then both slept.") + " […]"


def test_smart_falls_back_to_a_word_end() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    out = truncate_text(text, 6, "smart")
    assert out == "one two three four five […]"
    assert n(out) <= 6
    # the sentence end would keep less than half of what fits: a word end instead
    assert truncate_text(STORY, 14, "smart") == "The cat sat on the mat. The dog ran after it all […]"


def test_smart_does_not_waste_the_budget_on_an_early_sentence_end() -> None:
    text = "Hi. " + "word " * 200
    out = truncate_text(text, 50, "smart")
    assert out.endswith("word […]")  # a word end, not "Hi. […]"
    assert n(out) <= 50


def test_smart_cuts_at_a_token_when_there_is_no_space() -> None:
    text = "x" * 400
    out = truncate_text(text, 10, "smart")
    assert out.endswith(SMART_MARKER)
    assert text.startswith(out.removesuffix(SMART_MARKER))
    assert n(out) <= 10


def test_smart_respects_abbreviations() -> None:
    text = "We met Dr. Smith at noon and talked for a very long while about everything."
    out = truncate_text(text, 8, "smart")
    assert not out.startswith("We met Dr. […]")
    assert n(out) <= 8


def test_cuts_never_split_a_multibyte_character() -> None:
    text = "🫨😀👩‍👩‍👧 héllo wörld 你好世界 " * 30
    for strategy in STRATEGIES:
        for budget in range(1, 40):
            out = truncate_text(text, budget, strategy)
            assert "\ufffd" not in out
            assert n(out) <= budget


def test_lone_surrogates_fall_back_to_character_cuts() -> None:
    text = "abc\ud800def " * 50
    out = truncate_text(text, 10)
    assert text.startswith(out)
    assert n(out) <= 10


def test_zero_budget_gives_the_empty_string() -> None:
    for strategy in STRATEGIES:
        assert truncate_text(STORY, 0, strategy) == ""
    assert truncate_text("", 0) == ""


def test_marker_that_does_not_fit_is_dropped() -> None:
    out = truncate_text(STORY, 3, "keep_both")
    assert "truncated" not in out
    assert n(out) <= 3
    assert truncate_text(STORY, 1, "smart") == "The"


def test_custom_marker_with_count() -> None:
    out = truncate_text(STORY, 12, "keep_start", marker=" <cut {n}>")
    kept, _, cut = out.rpartition(" <cut ")
    assert STORY.startswith(kept)
    assert int(cut.rstrip(">")) == n(STORY) - n(kept)
    assert n(out) <= 12
    assert truncate_text(STORY, 12, "keep_end", marker="[…] ").startswith("[…] ")
    assert "truncated" not in truncate_text(STORY, 30, "keep_both", marker="")


def test_default_markers() -> None:
    assert "{n}" in DEFAULT_MARKER
    assert truncate_text(STORY, 12, "keep_both").count("tokens truncated") == 1
    assert truncate_text(STORY, 12, "smart").endswith(SMART_MARKER)


def test_other_models_and_counters() -> None:
    for model in ("gpt-4", "gemini-2.5-pro"):
        counter = TokenCounter.for_model(model)
        out = truncate_text(STORY * 20, 40, "keep_both", model)
        assert counter.count(out) <= 40
    framed = FramedCounter()
    out = truncate_text(STORY, 12, "smart", counter=framed)
    assert framed.count(out) <= 12
    assert truncate_text(STORY, 4, counter=framed) == ""  # the framing alone takes the budget


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 5000, id="uniform"),
        pytest.param("你好世界，今天天气很好。" * 3000 + "Lorem ipsum dolor sit amet. " * 3000, id="skewed"),  # noqa: RUF001
    ],
)
def test_few_counts_on_a_long_text(text: str) -> None:
    for strategy in STRATEGIES:
        for budget in (100, 20_000):
            by_chars, by_tokens = CharCounter(), CodecCounter()
            assert n(truncate_text(text, budget, strategy, counter=by_chars)) <= budget
            assert n(truncate_text(text, budget, strategy, counter=by_tokens)) <= budget
            assert by_chars.calls <= 30, strategy  # O(log n), not one count per character
            assert by_tokens.calls <= 8, strategy  # starts at the right token and verifies


async def test_async_twin_uses_acount() -> None:
    counter = AsyncCounter()
    out = await atruncate_text(STORY, 10, "smart", counter=counter)
    assert out == truncate_text(STORY, 10, "smart", counter=CharCounter())
    assert counter.async_calls > 0
    assert counter.calls == 0
    assert await atruncate_text(STORY, 10, "keep_end") == truncate_text(STORY, 10, "keep_end")
    with pytest.raises(InvalidInputError):
        await atruncate_text(STORY, -1)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"text": b"bytes"}, "text", "str()"),
        ({"text": None}, "text", "str()"),
        ({"max_tokens": -1}, "max_tokens", "max_tokens=1000"),
        ({"max_tokens": 1.5}, "max_tokens", "max_tokens=1000"),
        ({"max_tokens": True}, "max_tokens", "max_tokens=1000"),
        ({"max_tokens": "10"}, "max_tokens", "max_tokens=1000"),
        ({"strategy": "middle"}, "strategy", "keep_both"),
        ({"marker": 3}, "marker", '""'),
        ({"counter": object()}, "counter", "TokenCounter.for_model"),
    ],
)
def test_bad_arguments_name_the_field_and_the_fix(kwargs: dict[str, object], field: str, hint: str) -> None:
    args: dict[str, object] = {"text": STORY, "max_tokens": 5, **kwargs}
    with pytest.raises(InvalidInputError) as err:
        truncate_text(**args)  # type: ignore[arg-type]
    assert err.value.field == field
    assert hint in str(err.value)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError):
        truncate_text(STORY, 5, model="no-such-model-xyz")


# -- properties ----------------------------------------------------------------------------------

# fmt: off
_WORDS = st.sampled_from([
    "The", "cat", "Dr.", "e.g.", "3.14", "...", "?!", "。", "你好", "🫨", "é",
    "\n", "\n\n", "  ", "\t", "x" * 30,
])
# fmt: on
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_WORDS, st.text(max_size=4)), max_size=120).map(" ".join),
)


@PROPERTY
@given(_TEXTS, st.integers(min_value=0, max_value=80), st.sampled_from(STRATEGIES))
def test_never_exceeds_the_budget(text: str, budget: int, strategy: Strategy) -> None:
    result = truncate_text_detailed(text, budget, strategy)
    assert n(result.text) == result.tokens_after <= budget
    assert "\ufffd" not in result.text or "\ufffd" in text
    if result.tokens_before <= budget:
        assert result.text is text
        assert not result.truncated


@PROPERTY
@given(_TEXTS, st.integers(min_value=0, max_value=80), st.sampled_from(STRATEGIES))
def test_never_exceeds_the_budget_by_characters(text: str, budget: int, strategy: Strategy) -> None:
    out = truncate_text(text, budget, strategy, counter=CharCounter())
    assert n(out) <= budget


@PROPERTY
@given(_TEXTS, st.integers(min_value=0, max_value=80), st.booleans())
def test_keep_start_is_a_prefix_and_keep_end_a_suffix(text: str, budget: int, by_chars: bool) -> None:
    counter = CharCounter() if by_chars else None
    head = truncate_text(text, budget, "keep_start", counter=counter)
    tail = truncate_text(text, budget, "keep_end", counter=counter)
    assert text.startswith(head)
    assert text.endswith(tail)
    smart = truncate_text(text, budget, "smart", counter=counter)
    assert smart is text or text.startswith(smart.removesuffix(SMART_MARKER))
    if n(text) > budget:  # the budget is used, less at most one character (4 bytes, 4 tokens)
        assert n(head) >= budget - 4


def test_a_model_name_as_counter_counts_with_that_model() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    gpt = TokenCounter.for_model("gpt-4o")
    result = truncate_text_detailed(text, 5, "keep_start", counter="gpt-4o")
    assert result.truncated
    assert result.tokens_after == gpt.count(result.text) <= 5
    assert result.tokens_before == gpt.count(text)
    squeezed = compress_prompt("a     b\n\n\n\nc", counter="gpt-4o")
    assert squeezed.tokens_before == gpt.count("a     b\n\n\n\nc")


@pytest.mark.parametrize("counter", [["x"], ("x",), b"gpt-4o", bytearray(b"x")])
def test_a_sequence_as_counter_is_refused(counter: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        truncate_text("word " * 50, 5, counter=counter)  # type: ignore[arg-type]
    assert info.value.field == "counter"
    with pytest.raises(InvalidInputError) as info:
        compress_prompt("a    b", counter=counter)  # type: ignore[arg-type]
    assert info.value.field == "counter"
