"""Lossless-for-meaning prompt compression: whitespace that costs tokens and says nothing.

:func:`compress_prompt` rewrites only whitespace, and only outside code:

* runs of two or more spaces or tabs inside a line become one space (a lone tab is kept:
  it separates the columns of pasted TSV);
* spaces and tabs at the end of a line are removed (so is a Markdown hard line break);
* two or more blank lines in a row become one blank line;
* leading indentation is kept, so nested Markdown lists keep their structure (after
  blockquote markers ``>`` too).

Left byte for byte as they are:

* fenced code blocks: a line opening with three or more backticks or tildes (with an info
  string or not, at any indentation, after list markers such as ``1.`` or ``-`` and
  blockquote markers ``>``, as CommonMark nests them) up to a line closing with the same
  character at least as many times inside the same blockquotes, or to the end of the
  text when the fence is never closed; a fence in a list item or a blockquote also ends
  where that container does (a line less indented than the item's content, or with fewer
  ``>``), as in CommonMark;
* indented code: any line indented by four or more spaces or by a tab, after its blockquote
  markers if any, or by five or more spaces after a list marker (list continuation lines
  too: leaving them alone is the safe side), and blank lines between two such lines;
* inline code spans (```a  b```) inside a line;
* line endings (``\\n``, ``\\r\\n``, ``\\r``) and every whitespace character other than
  space and tab.

If the rewrite would not save tokens (tokenizers are not monotone in every corner), the
original text is returned, so the count never goes up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .counting import check_text
from .truncation import SupportsCount, text_counter

__all__ = ["CompressionResult", "compress_prompt"]

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")
_CONTAINERS = r"(?:[ \t]*(?:>|[-+*](?=[ \t])|\d{1,9}[.)](?=[ \t])))*"  # blockquote and list markers
_FENCE_OPEN = re.compile(_CONTAINERS + r"[ \t]*(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")
_QUOTE = re.compile(r"[ \t]*>[ \t]?")
_QUOTES = re.compile(r"(?:[ \t]*>)*")
_LIST_MARKER = re.compile(r"[ \t]*(?:[-+*]|\d{1,9}[.)])(?=[ \t])")
_LIST_CODE = re.compile(r"[ \t]*(?:[-+*]|\d{1,9}[.)])(?: {5}|[ \t]*\t)")
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)")
_RUN = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True, kw_only=True, slots=True)
class CompressionResult:
    """A compressed prompt and what it saved.

    Example:
        >>> r = compress_prompt("Hello      world\\n\\n\\n\\nBye   ")
        >>> (r.text, r.tokens_saved > 0)
        ('Hello world\\n\\nBye', True)
    """

    text: str
    """The compressed text (the original object when nothing could be saved)."""
    tokens_before: int
    """Tokens of the original text."""
    tokens_after: int
    """Tokens of :attr:`text`; never above :attr:`tokens_before`."""
    tokens_saved: int
    """``tokens_before - tokens_after``, zero or more."""

    def __str__(self) -> str:
        return self.text


def compress_prompt(
    text: str, *, model: str = "gpt-4o", counter: SupportsCount | None = None
) -> CompressionResult:
    """Remove the whitespace that costs tokens and carries no meaning, leaving code untouched.

    The rules are in the module documentation.

    Args:
        text: The prompt text (plain text or Markdown).
        model: Whose tokenizer counts the savings, via ``TokenCounter.for_model(model)``;
            ignored when ``counter`` is given.
        counter: A counter to use instead (anything with ``count(text) -> int``), or a model name.

    Returns:
        The compressed text with its token counts before and after.

    Raises:
        InvalidInputError: ``text`` is not a string, or ``counter`` cannot count.
        UnknownModelError: ``model`` is unknown (and no ``counter`` was given).

    Example:
        >>> result = compress_prompt("Use   this:\\n\\n\\n```py\\nx  =  1\\n```\\n")
        >>> result.text
        'Use this:\\n\\n```py\\nx  =  1\\n```\\n'
    """
    check_text(text)
    counter = text_counter(counter, model)
    before = int(counter.count(text)) if text else 0
    squeezed = _squeeze(text)
    after = before if squeezed == text else (int(counter.count(squeezed)) if squeezed else 0)
    if after > before:  # tokenizers are not monotone in every corner: never make it worse
        squeezed, after = text, before
    return CompressionResult(
        text=squeezed, tokens_before=before, tokens_after=after, tokens_saved=before - after
    )


def _squeeze(text: str) -> str:
    parts = _LINE_BREAK.split(text)
    lines = list(zip(parts[0::2], [*parts[1::2], ""], strict=True))
    if lines and lines[-1] == ("", ""):
        lines.pop()  # the empty remainder after a final line break is not a line
    out: list[str] = []
    blanks: list[str] = []  # the pending run of blank lines, as they were
    fence: _Fence | None = None
    after_code = False  # the last non-blank line was indented code
    for line, end in lines:
        if fence is not None:
            rest = fence.inside(line)
            if rest is not None:
                out.append(line + end)
                close = _FENCE_CLOSE.fullmatch(rest)
                if close and close.group(1)[0] == fence.char and len(close.group(1)) >= fence.length:
                    fence = None
                continue
            fence = None  # its list item or blockquote ended, and the code block with it
        if not line.strip(" \t"):
            blanks.append(line + end)
            continue
        code = _is_indented_code(line)
        _flush(out, blanks, keep=after_code and code)
        opening = _FENCE_OPEN.fullmatch(line)
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence = _Fence.opened_by(line, opening)
            out.append(line + end)
            code = False
        elif code:
            out.append(line + end)
        else:
            out.append(_squeeze_line(line) + end)
        after_code = code
    _flush(out, blanks, keep=False)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open fenced code block: its fence, and the containers it sits in."""

    char: str
    length: int
    quotes: int  # blockquote depth: each line of the block starts with this many ``>``
    indent: int  # a list item's content column (after the quotes): lines less indented end it

    @classmethod
    def opened_by(cls, line: str, opening: re.Match[str]) -> _Fence:
        prefix = line[: opening.start(1)]
        start = prefix.rfind(">") + 1
        if start and prefix[start : start + 1] in (" ", "\t"):
            start += 1  # the optional space after the last ">"
        in_item = prefix[start:]
        indent = _columns(in_item) if _LIST_MARKER.match(in_item) else 0
        return cls(opening.group(1)[0], len(opening.group(1)), prefix.count(">"), indent)

    def inside(self, line: str) -> str | None:
        """The line without its blockquote markers while it is inside the block, else ``None``."""
        rest = _strip_quotes(line, self.quotes)
        if rest is None:
            return None
        stripped = rest.lstrip(" \t")
        if self.indent and stripped and _columns(rest[: len(rest) - len(stripped)]) < self.indent:
            return None
        return rest


def _strip_quotes(line: str, depth: int) -> str | None:
    """``line`` without its first ``depth`` blockquote markers; ``None`` if it has fewer."""
    for _ in range(depth):
        marker = _QUOTE.match(line)
        if marker is None:
            return None
        line = line[marker.end() :]
    return line


def _columns(indent: str) -> int:
    return len(indent.expandtabs(4))


def _is_indented_code(line: str) -> bool:
    rest = line
    while (marker := _QUOTE.match(rest)) is not None:
        rest = rest[marker.end() :]
    indent = rest[: len(rest) - len(rest.lstrip(" \t"))]
    return "\t" in indent or len(indent) >= 4 or _LIST_CODE.match(rest) is not None


def _flush(out: list[str], blanks: list[str], *, keep: bool) -> None:
    """Emit a run of blank lines: as it was between indented code, else one empty line."""
    if blanks:
        if keep:
            out.extend(blanks)
        else:
            first = blanks[0]
            out.append(first[len(first.rstrip("\r\n")) :])
        blanks.clear()


def _squeeze_line(line: str) -> str:
    quotes = _QUOTES.match(line)
    head = quotes.end() if quotes else 0
    body = line[head:].lstrip(" \t") if head else line.lstrip(" ")
    pieces: list[str] = []
    pos = 0
    for span in _INLINE_CODE.finditer(body):
        pieces.append(_RUN.sub(" ", body[pos : span.start()]))
        pieces.append(span.group())
        pos = span.end()
    pieces.append(_RUN.sub(" ", body[pos:]))
    return line[: len(line) - len(body)] + "".join(pieces).rstrip(" \t")
