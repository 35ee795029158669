"""Prompt compression: whitespace outside code shrinks, code stays byte for byte, tokens never grow."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokenbudget_core.compression import CompressionResult, compress_prompt
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import InvalidInputError, UnknownModelError

PROPERTY = settings(max_examples=100, deadline=None, database=None)
GPT = TokenCounter.for_model("gpt-4o")


def squeeze(text: str) -> str:
    return compress_prompt(text).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a    b", "a b", id="space-run"),
        pytest.param("a \t \t b", "a b", id="space-tab-run"),
        pytest.param("a\tb", "a\tb", id="lone-tab-kept"),
        pytest.param("end   \nnext\t\n", "end\nnext\n", id="trailing-space"),
        pytest.param("a\n\n\n\n\nb", "a\n\nb", id="blank-run"),
        pytest.param("a\n   \n\t\n  \nb", "a\n\nb", id="whitespace-only-blank-lines"),
        pytest.param("a\n\nb", "a\n\nb", id="one-blank-line-kept"),
        pytest.param("\n\n\n\nstart", "\nstart", id="leading-blank-lines"),
        pytest.param("end\n\n\n\n", "end\n\n", id="trailing-blank-lines"),
        pytest.param("a\r\n\r\n\r\n\r\nb  c\r\n", "a\r\n\r\nb c\r\n", id="crlf"),
        pytest.param("  - item   one\n   1. two   x", "  - item one\n   1. two x", id="indent-kept"),
        pytest.param("say `a   b`  now", "say `a   b` now", id="inline-code"),
        pytest.param("``x  `  y``   z", "``x  `  y`` z", id="inline-code-double-backticks"),
        pytest.param("a\u00a0\u00a0b", "a\u00a0\u00a0b", id="other-whitespace-untouched"),
        pytest.param("", "", id="empty"),
    ],
)
def test_rules(text: str, expected: str) -> None:
    assert squeeze(text) == expected


def test_fenced_code_is_untouched() -> None:
    code = "def f(x):\n    return  x   \n\n\n\n\tpass  \n"
    text = f"Look   at this:\n\n\n```python  title='a b'\n{code}```\nand   this.\n"
    out = squeeze(text)
    assert f"```python  title='a b'\n{code}```\n" in out
    assert out.startswith("Look at this:\n\n```")
    assert out.endswith("and this.\n")


def test_tilde_fences_and_fence_lengths() -> None:
    text = "~~~~\ncode   a\n~~~\n```\nstill  code\n~~~~\nout   side"
    assert squeeze(text) == "~~~~\ncode   a\n~~~\n```\nstill  code\n~~~~\nout side"
    # a backtick fence is not closed by tildes or by a shorter fence
    text = "````\nx   y\n```\n~~~~\nz   w\n````\nafter   it"
    assert squeeze(text) == "````\nx   y\n```\n~~~~\nz   w\n````\nafter it"


def test_unclosed_fence_runs_to_the_end() -> None:
    text = "intro   text\n```\ncode    \n\n\n\nmore   code  "
    assert squeeze(text) == "intro text\n```\ncode    \n\n\n\nmore   code  "


def test_backticks_in_the_info_string_do_not_open_a_fence() -> None:
    assert squeeze("```not  a `fence`\ntext   here") == "```not a `fence`\ntext here"


def test_indented_code_is_untouched() -> None:
    text = "para   one\n\n    code  =  1   \n\n\n\n    more  =  2\n\tTabbed   line  \n\n\n\nend   here"
    assert squeeze(text) == (
        "para one\n\n    code  =  1   \n\n\n\n    more  =  2\n\tTabbed   line  \n\nend here"
    )


def test_result_reports_tokens_saved() -> None:
    text = "Hello      world\n\n\n\n\nBye      "
    result = compress_prompt(text)
    assert result == CompressionResult(
        text="Hello world\n\nBye",
        tokens_before=int(GPT.count(text)),
        tokens_after=int(GPT.count("Hello world\n\nBye")),
        tokens_saved=int(GPT.count(text)) - int(GPT.count("Hello world\n\nBye")),
    )
    assert result.tokens_saved > 0
    assert str(result) == "Hello world\n\nBye"


def test_nothing_to_save_returns_the_same_text() -> None:
    text = "".join(["Already ", "tight."])
    result = compress_prompt(text)
    assert result.text is text
    assert result.tokens_saved == 0


def test_a_rewrite_that_costs_tokens_is_not_used() -> None:
    class Perverse:
        def count(self, text: str) -> int:
            return 100 - len(text)  # shorter text "costs" more

    result = compress_prompt("a    b", counter=Perverse())
    assert result.text == "a    b"
    assert result.tokens_saved == 0


def test_other_models() -> None:
    result = compress_prompt("x      y", model="gemini-2.5-pro")
    assert result.text == "x y"
    with pytest.raises(UnknownModelError):
        compress_prompt("x", model="no-such-model-xyz")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"text": b"bytes"}, "text"), ({"text": None}, "text"), ({"counter": object()}, "counter")],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"text": "a  b", **kwargs}
    text = args.pop("text")
    with pytest.raises(InvalidInputError) as err:
        compress_prompt(text, **args)  # type: ignore[arg-type]
    assert err.value.field == field


# -- properties ----------------------------------------------------------------------------------

_BITS = st.sampled_from(
    [" ", "  ", "\t", " \t ", "\n", "\n\n\n", "\r\n", "    ", "word", "`", "``", "~", "- ", "é", "🫨", "x  y"]
)
_PROSE = st.lists(st.one_of(_BITS, st.text(max_size=3)), max_size=40).map("".join)
_CODE_LINE = st.lists(st.one_of(_BITS, st.text(max_size=3)), max_size=8).map(
    lambda parts: "".join(parts).replace("\n", "").replace("\r", "").replace("`", "").replace("~", "")
)


@PROPERTY
@given(_PROSE, st.lists(_CODE_LINE, max_size=6), _PROSE, st.sampled_from(["```", "~~~", "````"]))
def test_fenced_code_is_kept_byte_for_byte(before: str, lines: list[str], after: str, fence: str) -> None:
    assume("```" not in before and "~~~" not in before)  # prose that opens no fence of its own
    block = f"{fence}py  x\n" + "".join(line + "\n" for line in lines) + f"{fence}\n"
    out = compress_prompt(f"{before}\n{block}{after}").text
    assert block in out


@PROPERTY
@given(st.one_of(st.text(), _PROSE))
def test_never_more_tokens_and_idempotent(text: str) -> None:
    result = compress_prompt(text)
    assert result.tokens_after <= result.tokens_before
    assert result.tokens_after == (int(GPT.count(result.text)) if result.text else 0)
    assert result.tokens_saved == result.tokens_before - result.tokens_after
    assert squeeze(result.text) == result.text
    if "`" not in text and "~" not in text:  # no code: only spaces, tabs and blank lines changed
        assert "".join(result.text.split()) == "".join(text.split())


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            "1. ```python\n   table = {'a':  1,\n            'bb': 2}\n   s = 'two  spaces'\n   ```\n",
            id="ordered-list-item",
        ),
        pytest.param("- ```\n  x  =  'a  b'\n  ```\n", id="bullet-list-item"),
        pytest.param("* ~~~sh\n  echo  'a  b'   \n  ~~~\n", id="star-list-item-tildes"),
        pytest.param("2) ```\n   y  =  3\n   ```\n", id="paren-list-item"),
        pytest.param("> ```python\n> def f():\n>     return  'a  b'\n> ```\n", id="blockquote"),
        pytest.param(">> ```\n>> a  =  1\n>> ```\n", id="nested-blockquote"),
        pytest.param("> - ```\n>   x  =  1\n>\n>\n>   y  =  2\n>   ```\n", id="list-in-blockquote"),
        pytest.param("- > ```\n  > x  =  1\n  > ```\n", id="blockquote-in-list"),
    ],
)
def test_fences_inside_list_items_and_blockquotes_are_kept_byte_for_byte(block: str) -> None:
    text = f"Steps   to   follow:\n\n\n{block}\n\n\nThen   run   it.  \n"
    out = squeeze(text)
    assert block in out
    assert out.startswith("Steps to follow:\n\n")
    assert out.endswith("\nThen run it.\n")


def test_a_fence_closes_inside_its_own_containers_and_ends_with_them() -> None:
    # a top-level fence is not closed by "> ```": that line is code
    assert squeeze("```\n> ```\nx  =  1\n```\nafter   it") == "```\n> ```\nx  =  1\n```\nafter it"
    # a quoted fence ends with its blockquote; the "```" after it opens a new (unclosed) fence
    text = "> ```\n> a  =  1\n```\n> x  =  1\n> ```\nafter   it"
    assert squeeze(text) == text
    # a list item's fence ends at a line less indented than the item's content
    text = "- ```\n  a  =  1\nout   side\n```\ncode  =  2\n"
    assert squeeze(text) == "- ```\n  a  =  1\nout side\n```\ncode  =  2\n"


def test_indented_code_inside_blockquotes_and_list_items_is_untouched() -> None:
    text = "> quoted   text\n>\n>     code  =  1\n>     more  =  2\n\n-     listed  =  3\n"
    assert squeeze(text) == "> quoted text\n>\n>     code  =  1\n>     more  =  2\n\n-     listed  =  3\n"


_CONTAINERS = st.sampled_from(
    [("1. ", "   "), ("- ", "  "), ("* ", "  "), ("10) ", "    "), ("> ", "> "), ("> - ", ">   "), (">", ">")]
)


@PROPERTY
@given(_PROSE, st.lists(_CODE_LINE, max_size=6), _PROSE, st.sampled_from(["```", "~~~", "````"]), _CONTAINERS)
def test_fenced_code_in_a_container_is_kept_byte_for_byte(
    before: str, lines: list[str], after: str, fence: str, container: tuple[str, str]
) -> None:
    assume("```" not in before and "~~~" not in before)
    opener, indent = container
    block = f"{opener}{fence}py  x\n" + "".join(f"{indent}{line}\n" for line in lines) + f"{indent}{fence}\n"
    out = compress_prompt(f"{before}\n{block}{after}").text
    assert block in out
