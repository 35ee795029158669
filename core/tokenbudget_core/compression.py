"""Lossless-for-meaning prompt compression: whitespace that costs tokens and says nothing.

:func:`compress_prompt` rewrites only whitespace, and only outside code:

* runs of two or more spaces, or of spaces and tabs, inside a line become one space; tabs
  alone are kept however many there are (they separate the columns of pasted TSV, and two
  in a row are an empty cell);
* spaces at the end of a line are removed (so is a Markdown hard line break), and tabs too
  unless a tab stands between the line's words (a TSV row: its trailing tabs are empty
  cells);
* two or more blank lines in a row become one blank line;
* leading indentation is kept, so nested Markdown lists keep their structure (after
  blockquote markers ``>`` too).

Left byte for byte as they are:

* fenced code blocks: a line opening with three or more backticks or tildes (with an info
  string or not, at any indentation, after list markers such as ``1.`` or ``-`` and
  blockquote markers ``>``, as CommonMark nests them) up to a line closing with the same
  character at least as many times inside the same blockquotes, indented at most three
  spaces past its list item's content column (or no more than an opening fence indented
  deeper) and followed by nothing but spaces and tabs, or to the end of the text when
  the fence is never closed; a fence in a list item or a blockquote also ends
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

from .counting import check_text, counted
from .truncation import SupportsCount, text_counter

__all__ = ["CompressionResult", "compress_prompt"]

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")
_CONTAINERS = r"(?:[ \t]*(?:>|[-+*](?=[ \t])|\d{1,9}[.)](?=[ \t])))*"  # blockquote and list markers
_FENCE_OPEN = re.compile(_CONTAINERS + r"[ \t]*(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r"(`{3,}|~{3,})[ \t]*")
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
        InvalidInputError: ``text`` is not a string, ``counter`` cannot count, or it returned
            something other than a non-negative int (named ``counter``).
        UnknownModelError: ``model`` is unknown (and no ``counter`` was given).

    Example:
        >>> result = compress_prompt("Use   this:\\n\\n\\n```py\\nx  =  1\\n```\\n")
        >>> result.text
        'Use this:\\n\\n```py\\nx  =  1\\n```\\n'
    """
    check_text(text)
    counter = text_counter(counter, model)
    before = counted(counter.count(text), counter) if text else 0
    squeezed = _squeeze(text)
    after = before if squeezed == text else (counted(counter.count(squeezed), counter) if squeezed else 0)
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
                if fence.closed_by(rest):
                    fence = None
                continue
            fence = None  # its list item or blockquote ended, and the code block with it
        if not line.strip(" \t"):
            blanks.append(line + end)
            continue
        code = _is_indented_code(line)
        _flush(out, blanks, keep=after_code and code)
        fence = _Fence.opened_by(line)
        if fence is not None:
            out.append(line + end)
            code = False
        elif code:
            out.append(line + end)
        else:
            out.append(_squeeze_line(line) + end)
        after_code = code
    _flush(out, blanks, keep=False)
    return "".join(out)


def _closing_fence(text: str) -> str | None:
    """The line that closes the fenced code block left open at the end of ``text``, if any.

    Fences are found as :func:`compress_prompt` finds them; the line repeats the opening
    fence's blockquote markers and indentation (list markers as spaces). Used by ``smart``
    truncation so that a cut inside a code block does not leave it open.
    """
    fence: _Fence | None = None
    for line in _LINE_BREAK.split(text)[0::2]:
        if fence is not None:
            rest = fence.inside(line)
            if rest is not None:
                if fence.closed_by(rest):
                    fence = None
                continue
            fence = None  # its list item or blockquote ended, and the code block with it
        fence = _Fence.opened_by(line)
    return None if fence is None else fence.prefix + fence.char * fence.length


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open fenced code block: its fence, and the containers it sits in."""

    char: str
    length: int
    quotes: int  # blockquote depth: each line of the block starts with this many ``>``
    indent: int  # a list item's content column (after the quotes): lines less indented end it
    opened_at: int  # the opening fence's indentation past ``indent``
    prefix: str  # what precedes the opening fence, list markers blanked: a closing line's start

    @classmethod
    def opened_by(cls, line: str) -> _Fence | None:
        """The fence ``line`` opens, else ``None``."""
        opening = _FENCE_OPEN.fullmatch(line)
        if opening is None or (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            return None
        prefix = line[: opening.start(1)]
        start = prefix.rfind(">") + 1
        if start and prefix[start : start + 1] in (" ", "\t"):
            start += 1  # the optional space after the last ">"
        in_item = prefix[start:]
        indent = _columns(in_item) if _LIST_MARKER.match(in_item) else 0
        blanked = "".join(c if c in ">\t" else " " for c in prefix)
        fence = opening.group(1)
        return cls(fence[0], len(fence), prefix.count(">"), indent, _columns(in_item) - indent, blanked)

    def closed_by(self, rest: str) -> bool:
        """Whether ``rest`` (a line of the block without its blockquote markers) closes it.

        As in CommonMark: the same character at least as many times, indented at most three
        spaces past the list item's content column (or no more than the opening fence, which
        this module takes at any indentation), then nothing but spaces and tabs.
        """
        body = rest.lstrip(" \t")
        if _columns(rest[: len(rest) - len(body)]) - self.indent > max(3, self.opened_at):
            return False
        close = _FENCE_CLOSE.fullmatch(body)
        return close is not None and close.group(1)[0] == self.char and len(close.group(1)) >= self.length

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
    indent = line[: len(line) - len(body)]
    body = body.rstrip(" ")
    pieces: list[str] = []
    pos = 0
    for span in _INLINE_CODE.finditer(body):
        pieces.append(_RUN.sub(_one_space, body[pos : span.start()]))
        pieces.append(span.group())
        pos = span.end()
    pieces.append(_RUN.sub(_one_space, body[pos:]))
    squeezed = "".join(pieces)
    words = squeezed.rstrip(" \t")
    # a TSV row keeps its trailing tabs (empty cells); other lines lose them
    return indent + (squeezed.rstrip(" ") if "\t" in words else words)


def _one_space(run: re.Match[str]) -> str:
    """A run of spaces, or of spaces and tabs, as one space; tabs alone are kept (TSV cells)."""
    return " " if " " in run.group() else run.group()
