"""compress_prompt: a ``` line indented four spaces or more inside a code block is code, not its
closing fence; empty TSV cells (tabs in a row, trailing tabs of a row) are kept."""

from __future__ import annotations

import csv
import io

from tokenbudget_core.compression import compress_prompt


def squeeze(text: str) -> str:
    return compress_prompt(text).text


def test_a_fence_line_indented_four_spaces_is_code_not_the_closing_fence() -> None:
    code = 'TEMPLATE = """\n    ```\n"""\nALIGN  =  {"a":     1,\n"bb":    "x    y"}\n'
    text = f"Here   is   the   generator:\n\n```python\n{code}```\n\nThanks   a   lot.\n"
    out = squeeze(text)
    assert f"```python\n{code}```\n" in out  # the whole block, byte for byte
    assert out.startswith("Here is the generator:\n\n```python\n")
    assert out.endswith("```\n\nThanks a lot.\n")  # the real fence closed the block

    # in a list item the three spaces are counted past the item's content column
    item = "1. ```py\n   s = '''\n       ```\n   '''\n   x  =  {'a':  1}\n   ```\n"
    out = squeeze(f"Steps:\n\n{item}\nafter   it\n")
    assert item in out
    assert out.endswith("\nafter it\n")

    # up to three spaces still close it; a fence opened deeper is closed as deep (as before)
    assert squeeze("```\na  =  1\n   ```\nb   c") == "```\na  =  1\n   ```\nb c"
    assert squeeze("    ```\n    a  =  1\n    ```\nb   c") == "    ```\n    a  =  1\n    ```\nb c"


def test_empty_tsv_cells_are_kept() -> None:
    tsv = "name\tage\tcity\nbob\t\tParis\nann\t31\t\n"
    out = squeeze("Data   below:\n\n\n\n" + tsv)
    assert out.startswith("Data below:\n\n")  # the prose is still compressed
    kept = out.split("\n\n", 1)[1]
    rows = list(csv.reader(io.StringIO(kept), delimiter="\t"))
    assert rows == list(csv.reader(io.StringIO(tsv), delimiter="\t"))
    assert rows[1] == ["bob", "", "Paris"]
    assert rows[2] == ["ann", "31", ""]
    # a tab-separated row with runs of spaces: the spaces shrink, the tabs stay
    assert squeeze("a    b\t\tc   d\t\n") == "a b\t\tc d\t\n"
    assert squeeze(squeeze("a    b\t\tc   d\t  \n")) == "a b\t\tc d\t\n"  # idempotent
