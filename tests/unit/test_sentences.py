"""Sentence splitting: one concrete case per rule, and the pieces always join back to the text."""

# ruff: noqa: RUF001  (full-width CJK punctuation is what these tests are about)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.sentences import sentence_boundaries, split_sentences

PROPERTY = settings(max_examples=100, deadline=None, database=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("One. Two! Three? Four", ["One. ", "Two! ", "Three? ", "Four"], id="basic"),
        pytest.param("Mr. Smith met Dr. Jones. Then", ["Mr. Smith met Dr. Jones. ", "Then"], id="titles"),
        pytest.param(
            "Use e.g. this, i.e. that, vs. them. Ok",
            ["Use e.g. this, i.e. that, vs. them. ", "Ok"],
            id="eg-ie",
        ),
        pytest.param(
            "I bought pens, paper, etc. The end.", ["I bought pens, paper, etc. ", "The end."], id="etc"
        ),
        pytest.param("Acme Inc. CEO spoke. Next", ["Acme Inc. CEO spoke. ", "Next"], id="inc-mid"),
        pytest.param("It is Acme Inc. The end.", ["It is Acme Inc. ", "The end."], id="inc-final"),
        pytest.param("The U.S. Army came. He left.", ["The U.S. Army came. ", "He left."], id="us-mid"),
        pytest.param("He lives in the U.S. The end.", ["He lives in the U.S. ", "The end."], id="us-final"),
        pytest.param("See Fig. 3 and No. 5 here. Ok", ["See Fig. 3 and No. 5 here. ", "Ok"], id="numbered"),
        pytest.param("He said No. Then left.", ["He said No. ", "Then left."], id="no-as-word"),
        pytest.param("Born Jan. 5 in Paris. Then", ["Born Jan. 5 in Paris. ", "Then"], id="month"),
        pytest.param("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it. ", "Yes."], id="initials"),
        pytest.param("Pi is 3.14 today. Ok", ["Pi is 3.14 today. ", "Ok"], id="decimal"),
        pytest.param("Install v1.2.3 now. Ok", ["Install v1.2.3 now. ", "Ok"], id="version"),
        pytest.param("Wait... What? Yes", ["Wait... ", "What? ", "Yes"], id="ellipsis"),
        pytest.param("I think... maybe not. Ok", ["I think... maybe not. ", "Ok"], id="ellipsis-lower"),
        pytest.param("Really?! Yes.", ["Really?! ", "Yes."], id="interrobang"),
        pytest.param('He said "Stop." Then left.', ['He said "Stop." ', "Then left."], id="closing-quote"),
        pytest.param("(See above.) Next one.", ["(See above.) ", "Next one."], id="closing-paren"),
        pytest.param('"Where?" she asked. Ok', ['"Where?" she asked. ', "Ok"], id="quote-lowercase"),
        pytest.param(
            "He left. \u201cWhy?\u201d Ok", ["He left. ", "\u201cWhy?\u201d ", "Ok"], id="curly-quotes"
        ),
        pytest.param("Visit example.com. Then go.", ["Visit example.com. ", "Then go."], id="url"),
        pytest.param("Mail a.b@c.io now. Ok", ["Mail a.b@c.io now. ", "Ok"], id="email"),
        pytest.param("Open main.py first. Ok", ["Open main.py first. ", "Ok"], id="filename"),
        pytest.param("https://x.org/a.b?c=d! Ok", ["https://x.org/a.b?c=d! ", "Ok"], id="full-url"),
        pytest.param(
            "1. First step\n2. Second step", ["1. First step\n", "2. Second step"], id="numbered-list"
        ),
        pytest.param("a. Alpha\nb. Beta", ["a. Alpha\n", "b. Beta"], id="lettered-list"),
        pytest.param("Para one\n\n\nPara two", ["Para one\n\n\n", "Para two"], id="blank-lines"),
        pytest.param("line one\nline two", ["line one\n", "line two"], id="newline"),
        pytest.param("A.\r\nB.", ["A.\r\n", "B."], id="crlf"),
        pytest.param("我爱你。你好吗？很好！OK", ["我爱你。", "你好吗？", "很好！", "OK"], id="cjk"),
        pytest.param("「行く。」次", ["「行く。」", "次"], id="cjk-closing"),
        pytest.param("  Lead. Two.\n", ["  Lead. ", "Two.\n"], id="leading-and-trailing-space"),
        pytest.param("end.Next", ["end.Next"], id="no-space-no-split"),
        pytest.param("Plan B. The rest.", ["Plan B. ", "The rest."], id="letter-final"),
        pytest.param("It was 2020. The end.", ["It was 2020. ", "The end."], id="year"),
        pytest.param("   ", ["   "], id="whitespace-only"),
        pytest.param("", [], id="empty"),
    ],
)
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_single_newlines_can_be_soft() -> None:
    text = "This sentence is\nwrapped. Next one.\n\nNew para."
    assert split_sentences(text, split_on_newlines=False) == [
        "This sentence is\nwrapped. ",
        "Next one.\n\n",
        "New para.",
    ]


def test_boundaries_match_pieces() -> None:
    text = "One. Two.\nThree"
    assert sentence_boundaries(text) == [5, 10, 15]
    assert sentence_boundaries("") == []


@pytest.mark.parametrize("bad", [None, b"bytes", 3])
def test_rejects_non_strings(bad: object) -> None:
    with pytest.raises(InvalidInputError) as err:
        split_sentences(bad)  # type: ignore[arg-type]
    assert err.value.field == "text"
    assert "str()" in str(err.value)


_ENDINGS = set(".!?…。！？｡︒\"')]}’”»›」』）】〉》〕")
# fmt: off
_PIECES = st.sampled_from([
    "Mr.", "Dr.", "e.g.", "etc.", "U.S.", "J.", "No.", "3.14", "v1.2.3", "...", "?!", "…", ". ",
    '"Stop."', "(ok.)", "example.com", "a.b@c.io", "1.", "\n", "\n\n", "\r\n", "。", "！", "？",
    " ", "  ", "\t", "The", "the", "word", "I", "A", "x", "「", "」", "\u00a0",
])
# fmt: on
_TEXTS = st.one_of(st.text(), st.lists(_PIECES | st.text(max_size=3)).map("".join))


@PROPERTY
@given(_TEXTS, st.booleans())
def test_pieces_join_back_to_the_text(text: str, split_on_newlines: bool) -> None:
    pieces = split_sentences(text, split_on_newlines=split_on_newlines)
    assert "".join(pieces) == text
    assert all(pieces)
    ends = sentence_boundaries(text, split_on_newlines=split_on_newlines)
    assert ends == sorted(set(ends))
    for piece in pieces[:-1]:  # each cut is after whitespace or a terminator (and closing quotes)
        assert piece[-1].isspace() or piece.rstrip()[-1] in _ENDINGS
