"""Truncation never cuts inside a grapheme cluster (an accent, an Indic vowel sign or conjunct, a
flag, a ZWJ emoji sequence, a skin tone); compression and ``smart`` truncation pair Markdown
fences as CommonMark does (a line indented four spaces is indented code, not a fence; a list
item's fence ends with its item), so a real code block is never squeezed nor left open."""

from __future__ import annotations

import random

import pytest

from tokenbudget_core.compression import compress_prompt
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.truncation import SMART_MARKER, Strategy, truncate_text

GPT = TokenCounter.for_model("gpt-4o")


class Chars:
    """Counts one token per character, no encode/decode: truncation cuts at character offsets."""

    def count(self, text: str) -> int:
        return len(text)


# -- grapheme clusters ---------------------------------------------------------------------------

# each text as its grapheme clusters (what a reader sees as one character each)
CLUSTERED = {
    "decomposed-accent": ["C", "a", "f", "e\u0301", " "] * 12,
    "hindi": ["न", "म", "स्ते", " ", "दु", "नि", "या", " "] * 6,
    "flags": [*"Flags: ", *["🇺🇸", "🇫🇷", "🇩🇪", "🇯🇵"] * 5],
    "family-emoji": [*"Family: ", *["👨\u200d👩\u200d👧\u200d👦"] * 6],
    "skin-tones": [*"Thumbs: ", *["👍🏽", "👋🏿", " "] * 6],
    "stacked-marks": ["a\u0308\u0323", "o\u0302\u0301", " "] * 10,
    "hangul-jamo": ["\u1100\u1161\u11a8", "\u1102\u1165", " "] * 10,
}


def whole_clusters(clusters: list[str], kept: str, *, from_end: bool = False) -> bool:
    """Whether ``kept`` is the text's first (or last) few clusters, each whole."""
    seq = clusters[::-1] if from_end else clusters
    text = ""
    for cluster in [None, *seq]:
        if cluster is not None:
            text = cluster + text if from_end else text + cluster
        if text == kept:
            return True
    return False


@pytest.mark.parametrize("name", list(CLUSTERED))
@pytest.mark.parametrize("counter", [GPT, Chars(), "claude-sonnet-4-5"], ids=["tiktoken", "chars", "claude"])
@pytest.mark.parametrize("strategy", ["keep_start", "keep_end", "smart"])
def test_truncation_keeps_whole_grapheme_clusters(name: str, counter: object, strategy: Strategy) -> None:
    clusters = CLUSTERED[name]
    text = "".join(clusters)
    count = TokenCounter.for_model(counter) if isinstance(counter, str) else counter
    for budget in range(1, 16):
        out = truncate_text(text, budget, strategy, counter=counter, marker="")  # type: ignore[arg-type]
        assert count.count(out) <= budget  # type: ignore[attr-defined]
        assert whole_clusters(clusters, out, from_end=strategy == "keep_end"), (budget, out)


@pytest.mark.parametrize("counter", [GPT, Chars()], ids=["tiktoken", "chars"])
def test_keep_both_keeps_whole_clusters_at_both_ends(counter: object) -> None:
    clusters = CLUSTERED["family-emoji"] + CLUSTERED["decomposed-accent"] + CLUSTERED["flags"]
    text = "".join(clusters)
    for budget in range(4, 40, 3):
        out = truncate_text(text, budget, "keep_both", counter=counter, marker="|")  # type: ignore[arg-type]
        if "|" in out:
            head, tail = out.split("|")
            assert whole_clusters(clusters, head), (budget, out)
            assert whole_clusters(clusters, tail, from_end=True), (budget, out)


def test_the_reviewers_cases() -> None:
    cafe = "Cafe\u0301 " * 12
    out = truncate_text(cafe, 3, "keep_start", marker="")
    assert not text_continues_cluster(cafe, len(out))
    out = truncate_text(cafe, 4, "keep_end", marker="")
    assert out
    assert not out.startswith("\u0301")
    hindi = "नमस्ते दुनिया " * 6
    for strategy in ("keep_start", "smart"):
        out = truncate_text(hindi, 3, strategy).removesuffix(SMART_MARKER)
        assert not hindi[len(out)].startswith("\u0947")  # the vowel sign stays with its consonant
        assert not out.endswith("\u094d")  # nor does a virama end the text
    family = "Family: " + "👨\u200d👩\u200d👧\u200d👦" * 6
    assert not truncate_text(family, 5, "keep_start", marker="").endswith("\u200d")
    assert not truncate_text(family, 3, "keep_end", marker="").startswith("\u200d")
    flags = "Flags: " + "🇺🇸🇫🇷🇩🇪🇯🇵" * 5
    kept = truncate_text(flags, 4, "keep_start", marker="")
    assert kept.count("\U0001f1fa") == kept.count("\U0001f1f8")  # no half flag


def text_continues_cluster(text: str, at: int) -> bool:
    return 0 < at < len(text) and text[at] in "\u0301\u0947\u200d"


def test_plain_text_cuts_as_before() -> None:
    words = "alpha beta gamma delta " * 40
    assert (
        truncate_text(words, 10, "keep_start", marker="")
        == "alpha beta gamma delta alpha beta gamma delta alpha beta"
    )
    assert GPT.count(truncate_text(words, 10, "keep_end", marker="")) == 10


# -- fences as CommonMark pairs them -------------------------------------------------------------

INDENTED_EXAMPLE = (
    "A fence in an indented example:\n\n"
    "    ```\n"
    "    (the opening fence line on its own)\n\n"
    "Now the real code:\n\n"
)


def test_an_indented_fence_line_opens_no_fence() -> None:
    block = "```\ntable = {'a':    1,\n         'bb':   2}\n```\n"
    out = compress_prompt(INDENTED_EXAMPLE + block + "After   it.\n").text
    assert block in out  # the real block, byte for byte
    assert out.endswith("```\nAfter it.\n")
    assert "    ```\n    (the opening fence line on its own)\n" in out  # the indented code too


def test_smart_closes_a_block_with_a_fence_commonmark_accepts() -> None:
    text = INDENTED_EXAMPLE + "```python\n" + "x = compute(1, 2, 3)\n" * 60 + "```\nAfter.\n"
    out = truncate_text(text, 60, "smart")
    assert out.endswith(f"{SMART_MARKER}\n```")  # not "    ```", which is code, not a closer
    assert GPT.count(out) <= 60
    # a fence in a list item is closed inside the item
    item = "1. Steps:\n\n   ```sh\n" + "   run step --flag value\n" * 80 + "   ```\n"
    assert truncate_text(item, 50, "smart").endswith(f"{SMART_MARKER}\n   ```")


def test_a_list_items_fence_ends_with_its_item() -> None:
    block = "```\nretries:    3\ntimeout:    30\n```\n"
    text = "1. Install:\n   ```\n   pip install tool\n2. Configure:\n" + block
    assert block in compress_prompt(text).text
    # a fence on a continuation line belongs to the item: a line indented less ends both
    text = "- Step:\n\n  ```\n  a  =  1\nout   side\n" + block
    assert compress_prompt(text).text == "- Step:\n\n  ```\n  a  =  1\nout side\n" + block


def test_the_space_after_a_list_marker_is_kept() -> None:
    # "1.  " puts the item's content at column 4: "   ```" (3 spaces) is then a top-level fence
    text = "1.  Step one\n   ```\nkeep   these   spaces\n"
    assert compress_prompt(text).text == text


def test_a_code_span_over_a_line_break_is_kept() -> None:
    text = "Run `pip  install\n  tool`  now   please.\n\nThen   rest.\n"
    assert compress_prompt(text).text == "Run `pip  install\n  tool`  now   please.\n\nThen rest.\n"
    # backticks with no closing string are literal: the line is squeezed
    assert compress_prompt("```not  a `fence`\ntext   here").text == "```not a `fence`\ntext here"


# -- against a CommonMark parser ------------------------------------------------------------------

PIECES = [
    "text   here", "", "```", "~~~", "````", "```py", "    ```", "  ```", "   ~~~", "x  =  1", "    y  =  2",
    "\tz  =  3", "- item   a", "  - sub   b", "1. one   x", "   cont   y", "> quote   q", "> ```", ">   a  b",
    "> ~~~", "`a   b` and  ``c  d``", "- ```", "  code   in   item", "   ```", "      deep   x", ">",
    "-   wide   item", "1.  two", "\t```", ">\t```", "-\t```", "- - -", "para", "-", "2. two", "  > ```",
    "   - ```", "      ```", "> - ```", ">   ```",
]  # fmt: skip


def snippets(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "\n".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) + rng.choice(["", "\n"])
        for _ in range(n)
    ]


def commonmark_code(text: str) -> list[tuple[str, str]]:
    """Every fenced, indented and inline code block of ``text``, as CommonMark reads it."""
    markdown_it = pytest.importorskip("markdown_it")
    found: list[tuple[str, str]] = []

    def walk(tokens: list[object]) -> None:
        for t in tokens:
            kind, children = getattr(t, "type", ""), getattr(t, "children", None) or []
            if kind in ("fence", "code_block"):
                found.append((kind, t.content))  # type: ignore[attr-defined]
            elif kind == "inline":
                found.extend(("inline", c.content) for c in children if c.type == "code_inline")

    walk(markdown_it.MarkdownIt("commonmark").parse(text))
    return found


def test_compression_leaves_every_commonmark_code_block_as_it_was() -> None:
    chars = Chars()
    for text in snippets(29, 1500):
        out = compress_prompt(text, counter=chars).text
        assert commonmark_code(out) == commonmark_code(text), (text, out)


def test_smart_truncation_closes_the_block_commonmark_sees_open() -> None:
    chars = Chars()
    for text in snippets(30, 600):
        for budget in (len(text) * 2 // 3, len(text) // 3):
            out = truncate_text(text, budget, "smart", counter=chars, marker=" [x]")
            after = out + "\n\nAFTER_THE_CUT\n"
            assert not any("AFTER_THE_CUT" in code for _, code in commonmark_code(after)), (text, out)
