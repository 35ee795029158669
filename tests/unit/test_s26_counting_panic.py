"""tiktoken panics (pyo3_runtime.PanicException, no Exception) on about a million spaces or tabs:
the OpenAI counter still counts such text, exactly, and lets every other BaseException through."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import TokenCounter, compress_prompt
from tokenbudget_core.encodings import get_encoding
from tokenbudget_core.openai_counting import TiktokenCounter

N = 1_100_000  # above tiktoken 0.14's limit (it panics from about 1,000,000)


def reference(encoding: str, text_between: str, a: str = "a", b: str = "b") -> int:
    """Tokens of a + run + b, from tiktoken's own pieces: "a", the run but its last char, that
    char + "b" (how the o200k / cl100k regexes split it), each encoded by tiktoken's BPE."""
    enc = get_encoding(encoding)
    bpe = enc._core_bpe.encode_single_piece  # BPE of one piece, no regex: no panic
    pieces = [a, text_between[:-1], text_between[-1] + b]
    return sum(len(bpe(p.encode())) for p in pieces)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_a_million_spaces_are_counted_exactly(model: str) -> None:
    counter = TokenCounter.for_model(model)
    assert isinstance(counter, TiktokenCounter)
    text = "a" + " " * N + "b"
    n = counter.count(text)
    assert n.exact
    assert int(n) == reference(counter.encoding_name, " " * N)
    # The same text in a chat request (fast path) and as a Message part (slow path).
    framing = int(counter.count_messages([{"role": "user", "content": "x"}])) - int(counter.count("x"))
    fresh = TokenCounter.for_model(model)
    m = fresh.count_messages([{"role": "user", "content": text}])
    assert m.exact
    assert int(m) == int(n) + framing
    parts = fresh.count_messages([{"role": "user", "content": [{"type": "text", "text": text}]}])
    assert parts.exact
    assert int(parts) == int(n) + framing


def test_a_million_tabs_count_and_compress_without_panicking() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    text = "a" + "\t" * N + "b"
    n = counter.count(text)
    assert n.exact
    assert int(n) == reference(counter.encoding_name, "\t" * N)
    ids = counter.encode(text)
    assert counter.decode(ids) == text  # encoded in pieces: valid ids of the same text
    report = "Report:" + " " * N + "end"
    result = compress_prompt(report)
    assert result.text == "Report: end"
    assert result.tokens_before == int(counter.count(report))


class PanicException(BaseException):  # what pyo3 raises, by name
    pass


def test_only_the_panic_is_handled(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TokenCounter.for_model("gpt-4o")
    assert isinstance(counter, TiktokenCounter)
    real = counter._encode
    raised: list[BaseException] = []

    def encode(text: str) -> Any:
        if raised:
            raise raised.pop()
        return real(text)

    monkeypatch.setattr(counter, "_encode", encode)
    raised.append(PanicException("StackOverflow"))
    assert int(counter.count("hello world")) == len(real("hello world"))
    raised.append(PanicException("StackOverflow"))
    m = counter.count_messages([{"role": "user", "content": "some other words"}])
    assert int(m) == len(real("some other words")) + int(
        counter.count_messages([{"role": "user", "content": ""}])
    )
    for error in (KeyboardInterrupt(), SystemExit(3), GeneratorExit(), ValueError("boom")):
        raised.append(error)
        with pytest.raises(type(error)):
            counter.count("a text not counted before " + type(error).__name__)
