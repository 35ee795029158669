"""Review s31 of prompt building, allocation and compression: a numpy float share, Gemini 2.5's
window, and blank lines after a lone CR."""

from __future__ import annotations

import numpy as np
import pytest

from tokenbudget_core.allocation import allocate_budget
from tokenbudget_core.compression import compress_prompt
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.prompt_builder import PromptBuilder
from tokenbudget_core.registry import default_registry


def test_a_numpy_float_share_is_a_share() -> None:
    """``Fraction(repr(np.float64(0.5)))`` raised a bare ValueError (NumPy 2 writes
    ``np.float64(0.5)``): a share from a numpy computation broke allocation and PromptBuilder."""
    plain = allocate_budget(10_000, shares={"context": 0.5, "history": 0.5})
    assert allocate_budget(10_000, shares={"context": np.float64(0.5), "history": np.float64(0.5)}) == plain
    builder = PromptBuilder("gpt-4o", max_tokens=2_000, shares={"context": np.float64(0.6), "history": 0.4})
    built = builder.build(system="Be brief.", context=["fact " * 50], user="What is it?")
    assert built.tokens <= 2_000


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-2.5-flash"])
def test_gemini_2_5_has_its_window_and_output_limit(model: str) -> None:
    """genai-prices lists no window for gemini-2.5-pro: PromptBuilder could not default to it
    and took any ``max_tokens`` (10**9) without a check."""
    info = default_registry().get(model)
    assert (info.context_window, info.max_output_tokens) == (1_048_576, 65_536)
    assert PromptBuilder(model).budget > 0
    with pytest.raises((InvalidInputError, ContextOverflowError)) as e:
        PromptBuilder(model, max_tokens=10**9)
    assert "max_tokens" in str(e.value)


@pytest.mark.parametrize(
    "text", ["First paragraph.\r \nSecond paragraph.", "Intro.\r\t\n    x  =  1\n", "a\r\n\n \r\nb"]
)
def test_a_blank_line_after_a_lone_cr_stays_a_blank_line(text: str) -> None:
    """A blank ``"\\n"`` line after a line ending in a lone CR was emitted as ``"\\n"``, joining
    that CR into one CRLF: two paragraphs became one, an indented code block paragraph text."""
    out = compress_prompt(text).text
    assert out.replace("\r\n", "\n").replace("\r", "\n").count("\n\n") == 1


def test_a_prompt_builder_overflow_names_fixes_it_has() -> None:
    """Its fix said "unpin messages", which PromptBuilder has no option for."""
    builder = PromptBuilder("gpt-4o", max_tokens=100)
    with pytest.raises(ContextOverflowError) as e:
        builder.build(system="Rules. " * 80, user="What now?")
    assert "unpin" not in str(e.value)
    assert "on_overflow='truncate'" in str(e.value)


def test_explain_says_gemini_is_estimated() -> None:
    from click.testing import CliRunner

    from tokenbudget_core.cli import cli

    result = CliRunner().invoke(cli, ["explain", "-m", "gemini-2.5-pro"])
    assert result.exit_code == 0, result.output
    assert "Gemini" in result.output


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("Escaped \\```  a  `` end", "``  a  ``"),  # \` is a literal backtick: `` opens the span
        ("\\```  ``", "``  ``"),
        ("keep `a\\`  b` too", "`a\\`"),  # inside a span a backslash is literal: it closes there
        ("two \\\\`  x  ` here", "`  x  `"),  # an escaped backslash: the backtick opens a span
    ],
)
def test_a_backslash_escaped_backtick_does_not_throw_code_spans_off(text: str, span: str) -> None:
    """The pairing of backtick strings ignored backslash escapes: a span after an escaped
    backtick was taken for text and its spaces squeezed."""
    out = compress_prompt(text).text
    assert span in out
    assert compress_prompt(out).text == out


@pytest.mark.parametrize("model", ["gemini-2.5-flash-tts", "gemini-2.5-pro-tts", "gemini-2.5-flash-image"])
def test_gemini_2_5_speech_and_image_models_keep_their_own_limits(model: str) -> None:
    """(regression review s31) The Gemini 2.5 family gave the 8,192-token TTS models a 65,536-token
    output limit: a window of the model's default budget became impossible."""
    info = default_registry().get(model)
    assert info.max_output_tokens is None or info.max_output_tokens <= (info.context_window or 0)
    if info.context_window == 8_192:
        assert PromptBuilder(model).budget > 0
