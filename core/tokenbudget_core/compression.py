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

* fenced code blocks, read as CommonMark reads them: a line opening with three or more
  backticks or tildes (with an info string or not) indented at most three spaces past its
  containers (blockquote markers ``>``, and list items: the item's content column, whether
  the list marker is on the fence's line or an earlier one), up to a line closing with the
  same character at least as many times, indented at most three spaces in the same
  containers and followed by nothing but spaces and tabs, or to the end of the text when
  the fence is never closed; a fence in a list item or a blockquote also ends where that
  container does (a line less indented than the item's content, or without its ``>``). A
  line indented four spaces or more opens no fence: it is indented code. A fence-like line
  that a list item would open if it could interrupt the paragraph before it
  (``"text\\n2. ```"``) is left alone too, with its block;
* code spans (```a  b```) inside a line, or running over line breaks within a paragraph
  (every line such a span touches is left as it was);
* the whitespace after a list marker or a blockquote marker (it sets where the item's
  content starts);
* indented code: any line indented by four or more spaces or by a tab, after its blockquote
  markers if any, or by five or more spaces after a list marker (list continuation lines
  too: leaving them alone is the safe side), any line CommonMark reads as indented code (in
  a list item: four spaces past its content column), and blank lines between two such lines;
* line endings (``\\n``, ``\\r\\n``, ``\\r``) and every whitespace character other than
  space and tab.

If the rewrite would not save tokens (tokenizers are not monotone in every corner), the
original text is returned, so the count never goes up.
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass

from .counting import check_text, counted
from .truncation import SupportsCount, text_counter

__all__ = ["CompressionResult", "compress_prompt"]

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")
# the block structure, matched on a line whose tabs are expanded (see _Blocks)
_FENCE_OPEN = re.compile(r"(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r"(`{3,}|~{3,}) *")
_LIST_START = re.compile(r"(?:[-+*]|(\d{1,9})[.)])(?= |$)")
_THEMATIC = re.compile(r"([-*_])(?: *\1){2,} *")
_SETEXT = re.compile(r"(?:=+|-+) *")
_ATX = re.compile(r"#{1,6}(?: |$)")
_BLOCK_CHARS = frozenset(" \t>#`~-+*_=0123456789") | {""}  # what a line starting a block starts with
_QUOTE = re.compile(r"[ \t]*>[ \t]?")
# blockquote and list markers opening a line: the whitespace after them is kept, as it sets the
# column the container's content starts at (CommonMark's list items: "-   a" is not "- a")
_MARKERS = re.compile(r"(?:[ \t]*(?:>|(?:[-+*]|\d{1,9}[.)])(?=[ \t])))*")
_LIST_CODE = re.compile(r"[ \t]*(?:[-+*]|\d{1,9}[.)])(?: {5}|[ \t]*\t)")
_BACKTICKS = re.compile(r"`+")
_ESCAPE_OR_BACKTICKS = re.compile(r"\\[" + re.escape(string.punctuation) + r"]|`+")
"""A backslash escape (CommonMark escapes ASCII punctuation) or a backtick string."""
_SPACES = re.compile(" *")
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
    # CommonMark's reading; and a looser one, where any list item interrupts a paragraph (as
    # "text\n2. ```" reads to a person): a line either reads as code is left alone
    blocks, loose = _Blocks(), _Blocks(loose=True)
    paragraph: list[tuple[int, str]] = []  # the open paragraph's lines: where in out, as they were
    after_code = False  # the last non-blank line was indented code
    for line, end in lines:
        in_fence = blocks.fence is not None or loose.fence is not None
        read, loose_kind = blocks.feed(line), loose.feed(line)
        if read != "cont":
            _keep_code_spans(out, paragraph)
        kind = loose_kind if loose_kind in ("fence", "code") and read not in ("fence", "code") else read
        if in_fence and kind == "fence":  # a line of an open fenced block, blank or not
            _flush(out, blanks, keep=True)
            if read in ("para", "cont"):  # (of the looser reading's block only)
                paragraph.append((len(out), line + end))
            out.append(line + end)
            continue
        if not line.strip(" \t"):
            blanks.append(line + end)
            continue
        # a line CommonMark reads as indented code, or one that merely looks like it (the safe side)
        code = kind == "code" or _is_indented_code(line)
        _flush(out, blanks, keep=after_code and code)
        if read in ("para", "cont"):  # code spans run as CommonMark reads the paragraphs
            paragraph.append((len(out), line + end))
        if kind == "fence":
            out.append(line + end)
            code = False
        elif code:
            out.append(line + end)
        else:
            out.append(_squeeze_line(line) + end)
        after_code = code
    _keep_code_spans(out, paragraph)
    _flush(out, blanks, keep=False)
    return "".join(out)


def _keep_code_spans(out: list[str], paragraph: list[tuple[int, str]]) -> None:
    """Put back as they were the lines of a paragraph that a code span runs across.

    A code span can go on over line breaks, up to the paragraph's end; :func:`_squeeze_line`
    sees one line, so here the paragraph's backtick strings are paired as CommonMark pairs them
    (an opening string with the next one as long; one with none is literal) and each line a span
    crosses is left alone. Empties ``paragraph``.
    """
    if len(paragraph) > 1 and any("`" in line for _, line in paragraph):
        starts = [0]  # where each line starts in the joined paragraph
        for _, line in paragraph[:-1]:
            starts.append(starts[-1] + len(line))
        text = "".join(line for _, line in paragraph)
        for a, b in _code_spans(text):
            first, last = bisect.bisect_right(starts, a) - 1, bisect.bisect_right(starts, b - 1) - 1
            if first != last:
                for index, line in paragraph[first : last + 1]:
                    out[index] = line
    paragraph.clear()


def _code_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the code spans in ``text``, paired as CommonMark pairs them: a backtick
    string opens a span unless a backslash escapes its first backtick (``\\``` is a literal
    backtick; the rest of the string can still open one), and is closed by the next backtick
    string of the same length (inside a span backslashes are literal); an opening string with no
    closing one is literal text. The closing strings are found by length in one index, so a
    paragraph of many unclosed strings costs O(n log n), not a scan of the rest per string."""
    starts_by_length: dict[int, list[int]] = {}
    for m in _BACKTICKS.finditer(text):  # every string (a closing one is read without escapes)
        starts_by_length.setdefault(m.end() - m.start(), []).append(m.start())
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _ESCAPE_OR_BACKTICKS.finditer(text):
        a, b = m.span()
        if a < pos or text[a] == "\\":  # inside a span found already, or an escaped character
            continue
        starts = starts_by_length.get(b - a, [])
        k = bisect.bisect_left(starts, b)
        if k < len(starts):
            pos = starts[k] + (b - a)
            spans.append((a, pos))
    return spans


def _closing_fence(text: str) -> str | None:
    """The line that closes the fenced code block left open at the end of ``text``, if any.

    Fences are read by the same :class:`_Blocks` as :func:`compress_prompt` reads them; the
    line repeats the opening fence's blockquote markers and indentation (list markers as
    spaces), so it continues the same containers and is indented at most three spaces past
    them, as CommonMark requires of a closing fence. Used by ``smart`` truncation so that a
    cut inside a code block does not leave it open.
    """
    blocks = _Blocks()
    for line in _LINE_BREAK.split(text)[0::2]:
        blocks.feed(line)
    fence = blocks.fence
    return None if fence is None else fence.prefix + fence.char * fence.length


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open fenced code block."""

    char: str
    length: int
    prefix: str  # what precedes the opening fence, list markers blanked: a closing line's start


@dataclass(slots=True)
class _Item:
    """An open list item."""

    width: int  # its content column, counted from where the item's container's content starts
    has_content: bool  # a blank line ends an item that has none yet ("-" then a blank line)


class _Quote:
    """An open blockquote."""

    __slots__ = ()


class _Blocks:
    """Markdown's block structure, read line by line as CommonMark reads it, as far as code is
    concerned: which line is fenced code, indented code, or anything else.

    It follows the containers (blockquotes and list items, across lines: a list item's lines are
    those indented to its content column, and blank lines), the paragraphs (indented code cannot
    interrupt one, and a lazy continuation line keeps its containers open), and the fences: an
    opening fence is indented at most three spaces past its containers, and closed by a line of
    the same character at least as long, indented at most three spaces, in the same containers;
    a fence also ends where a container of it does. Not followed: HTML blocks and link reference
    definitions, read as paragraphs.
    """

    def __init__(self, *, loose: bool = False) -> None:
        self.loose = loose  # any list item interrupts a paragraph
        self.containers: list[_Quote | _Item] = []
        self.fence: _Fence | None = None  # the open fenced code block
        self.leaf: str | None = None  # "paragraph", "code" (indented) or None, when not in a fence

    def feed(self, line: str) -> str:
        """Read the next line (without its line break): ``"fence"`` (a line of a fenced code
        block, its fences included), ``"code"`` (indented code), ``"para"`` (a paragraph's first
        line), ``"cont"`` (a paragraph's next line) or ``"other"`` (blank lines, headings, …)."""
        if not self.containers and self.fence is None and line[:1] not in _BLOCK_CHARS:
            # the common case, a line of prose outside any container: a paragraph's
            if self.leaf == "paragraph":
                return "cont"
            self.leaf = "paragraph"
            return "para"
        s = line.expandtabs(4)  # CommonMark's tab stops are every four columns
        pos, matched = 0, 0
        for box in self.containers:
            ind = _indent(s, pos)
            if isinstance(box, _Quote):  # a blockquote continues on a line with its ">"
                if ind > 3 or not s.startswith(">", pos + ind):
                    break
                pos += ind + 1
                pos += s.startswith(" ", pos)  # the optional space after ">"
            elif pos + ind >= len(s):  # a list item continues on a blank line, once it has content
                if not box.has_content:
                    break
                pos = len(s)
            elif ind >= box.width:  # and on lines indented to its content column
                pos += box.width
            else:
                break
            matched += 1
        if self.fence is not None:
            if matched == len(self.containers):
                ind = _indent(s, pos)
                if ind <= 3 and self._closes(s[pos + ind :]):
                    self.fence = None
                return "fence"
            self.fence = None  # one of its containers ended, and the code block with it
        if self.leaf == "code":
            if matched == len(self.containers) and (_indent(s, pos) >= 4 or pos + _indent(s, pos) >= len(s)):
                return "code"
            self.leaf = None
        paragraph = self.leaf == "paragraph"
        while True:
            ind = _indent(s, pos)
            at = pos + ind
            if at >= len(s):
                break
            if ind >= 4:
                if paragraph:  # a continuation line: indented code cannot interrupt a paragraph
                    break
                self._open(matched, "code")
                return "code"
            if s[at] == ">":
                self._open(matched, None)
                self.containers.append(_Quote())
                matched = len(self.containers)
                pos = at + 1
                pos += s.startswith(" ", pos)
                paragraph = False
                continue
            fence = _FENCE_OPEN.match(s, at)
            if fence is not None and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
                self._open(matched, None)
                run = fence.group(1)
                start = line.index(run[0])  # nothing before the fence is a backtick or tilde
                prefix = "".join(c if c in ">\t" else " " for c in line[:start])
                self.fence = _Fence(run[0], len(run), prefix)
                return "fence"
            if paragraph and matched == len(self.containers) and _SETEXT.fullmatch(s, at):
                self.leaf = None  # the paragraph became a heading
                return "other"
            if _ATX.match(s, at) or _THEMATIC.fullmatch(s, at):
                self._open(matched, None)
                return "other"
            item = _LIST_START.match(s, at)
            if item is not None:
                after = item.end()
                spaces = _indent(s, after)
                empty = after + spaces >= len(s)
                number = item.group(1)
                # CommonMark: not a lazy line's (the paragraph is not the item's container)
                interrupts = paragraph and matched == len(self.containers) and not self.loose
                if interrupts and (empty or (number is not None and int(number) != 1)):
                    break  # such an item cannot interrupt a paragraph: the line continues it
                gap = 1 if empty or spaces >= 5 else spaces  # 5+ spaces: the item starts with code
                self._open(matched, None)
                self.containers.append(_Item(ind + after - at + gap, has_content=False))
                matched = len(self.containers)
                pos = min(after + gap, len(s))
                paragraph = False
                continue
            break
        if pos + _indent(s, pos) >= len(s):  # a blank line (past its containers' markers)
            del self.containers[matched:]
            self.leaf = None
            return "other"
        if paragraph:  # the paragraph goes on, lazily when some containers were not continued
            self._mark_content()
            return "cont"
        self._open(matched, "paragraph")
        return "para"

    def _open(self, matched: int, leaf: str | None) -> None:
        """A block starts: the containers this line did not continue end, and the leaf block."""
        del self.containers[matched:]
        self.leaf = leaf
        self._mark_content()

    def _mark_content(self) -> None:
        for box in self.containers:
            if isinstance(box, _Item):
                box.has_content = True

    def _closes(self, rest: str) -> bool:
        close = _FENCE_CLOSE.fullmatch(rest)
        fence = self.fence
        return (
            fence is not None
            and close is not None
            and close.group(1)[0] == fence.char
            and len(close.group(1)) >= fence.length
        )


def _indent(s: str, pos: int) -> int:
    """Spaces at ``s[pos:]`` (tabs already expanded)."""
    spaces = _SPACES.match(s, pos)
    return spaces.end() - pos if spaces else 0


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
            end = first[len(first.rstrip("\r\n")) :]
            if end.startswith("\n") and out and out[-1].endswith("\r"):
                end = "\r" + end  # after a lone CR, "\n" would join it as one CRLF: no blank line
            out.append(end)
        blanks.clear()


def _squeeze_line(line: str) -> str:
    markers = _MARKERS.match(line)
    head = markers.end() if markers else 0
    body = line[head:].lstrip(" \t") if head else line.lstrip(" ")
    indent = line[: len(line) - len(body)]
    body = body.rstrip(" ")
    if not body:  # markers alone ("-", ">"): nothing follows them, so neither do spaces
        return indent.rstrip(" ")
    pieces: list[str] = []
    pos = 0
    for start, end in _code_spans(body):
        pieces.append(_RUN.sub(_one_space, body[pos:start]))
        pieces.append(body[start:end])
        pos = end
    pieces.append(_RUN.sub(_one_space, body[pos:]))
    squeezed = "".join(pieces)
    words = squeezed.rstrip(" \t")
    # a TSV row keeps its trailing tabs (empty cells); other lines lose them
    return indent + (squeezed.rstrip(" ") if "\t" in words else words)


def _one_space(run: re.Match[str]) -> str:
    """A run of spaces, or of spaces and tabs, as one space; tabs alone are kept (TSV cells)."""
    return " " if " " in run.group() else run.group()
