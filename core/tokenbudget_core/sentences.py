"""Rule-based sentence splitting, lossless, with no dependency.

:func:`split_sentences` cuts text into sentences whose concatenation is the original
text exactly: each piece keeps its trailing whitespace (and the newlines after it), so
:func:`~tokenbudget_core.truncation.truncate_text` can cut at a sentence boundary
without losing or inventing a character.

The rules, in the order they are applied:

* a newline ends a sentence (``split_on_newlines=False``: only a blank line does);
* the ideographic full stop and the full-width ``!`` and ``?`` (U+3002, U+FF01, U+FF1F) end
  a sentence with no space after them;
* ``.``, ``!``, ``?``, ``…`` and runs of them (``?!``, ``...``) end a sentence only when
  whitespace or the end of the text follows, after any closing quotes or brackets
  (``He said "Stop." Then...``): so ``3.14``, ``v1.2.3``, ``example.com``,
  ``a.b@c.io`` and ``main.py`` are never cut;
* no cut when the next word starts with a lowercase letter (``"Where?" she asked``);
* no cut after titles and fixed abbreviations (``Mr.``, ``Prof.``, ``e.g.``, ``i.e.``,
  ``vs.``); after ``No.``, ``Fig.``, ``Eq.``, ``Vol.``, ``pp.`` when a number follows;
  after ``etc.``, ``Inc.``, ``Dr.``, ``St.``, month abbreviations, dotted acronyms
  (``U.S.``) and single-letter initials (``J. K. Rowling``) unless a common sentence
  starter (``The``, ``It``, ``We``...) follows;
* no cut after a list number at the start of a line (``1. First step``).
"""

from __future__ import annotations

import re

from .errors import InvalidInputError, check_flag

__all__ = ["sentence_boundaries", "split_sentences"]

# CJK stops: ideographic full stop, full-width ! and ?, half-width and vertical full stops.
_CJK = "\u3002\uff01\uff1f\uff61\ufe12"
# Closing quotes and brackets, ASCII and typographic and CJK (right single quote, guillemets...).
_CLOSERS = "\"')\\]}\u2019\u201d\u00bb\u203a\u300d\u300f\uff09\u3011\u3009\u300b\u3015"
_OPENERS = "\"'([{\u2018\u201c\u00ab\u2039\u300c\u300e\uff08\u3010\u3008\u300a\u3014"
# A terminator run, then any closing quotes or brackets.
_CANDIDATE = re.compile(f"(?P<run>[.!?\u2026{_CJK}]+)(?P<close>[{_CLOSERS}]*)")
_CJK_STOPS = frozenset(_CJK)
_LIST_MARKER = re.compile(r"\d{1,3}|[A-Za-z]|i{2,3}|iv|vi{1,3}|ix|x{1,3}", re.IGNORECASE)
_INITIAL = re.compile(r"[A-Z]\.?")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_WORD = re.compile(r"\w+\.?")
_NEWLINE = re.compile(r"\n\s*")  # a newline and the whitespace after it: a hard boundary
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Never the end of a sentence.
_ALWAYS = _words(
    "mr mrs ms mx messrs mme mlle prof rev fr gen col capt cpt lt sgt cmdr adm hon gov sen rep "
    "pres e.g i.e cf vs viz approx ca resp incl esp"
)
# Abbreviations before a number: ``No. 5``, ``Fig. 3``, ``pp. 10-12``.
_NUMBERED = _words("no nos nr fig figs eq eqs vol vols ch chap sec sect art p pp op ref tab")
# Abbreviations that may also end a sentence: cut only when a sentence starter follows.
_MAYBE_FINAL = _words(
    "etc inc ltd co corp ph.d llc plc bros jr sr dr st mt ft ave blvd rd al dept est univ jan "
    "feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun"
)
_STARTERS = _words(
    "the a an i it he she we they you this that these those there here but and so or yet in on "
    "at if when then however also after before for as my our his her its their what why how who "
    "where which while although though since because yes no one some many most all each every "
    "to from with by during meanwhile finally first next"
)


def split_sentences(text: str, *, split_on_newlines: bool = True) -> list[str]:
    """Split ``text`` into sentences that concatenate back to ``text`` exactly.

    Each sentence keeps the whitespace that follows it; leading whitespace stays with
    the first sentence. The empty string gives ``[]``.

    Args:
        text: The text to split.
        split_on_newlines: ``True`` (default): every newline ends a sentence, which suits
            lists, code and chat text. ``False``: only blank lines do, for prose wrapped
            at a fixed width.

    Raises:
        InvalidInputError: ``text`` is not a string, or ``split_on_newlines`` not a bool.

    Example:
        >>> split_sentences('Dr. Smith paid $3.50 for it. "Why?" he asked. See example.com!')
        ['Dr. Smith paid $3.50 for it. ', '"Why?" he asked. ', 'See example.com!']
    """
    ends = sentence_boundaries(text, split_on_newlines=split_on_newlines)
    return [text[start:end] for start, end in zip([0, *ends], ends, strict=False)]


def sentence_boundaries(text: str, *, split_on_newlines: bool = True) -> list[int]:
    """End offsets of the sentences :func:`split_sentences` returns (the last is ``len(text)``).

    Args:
        text: The text to split.
        split_on_newlines: As for :func:`split_sentences`.

    Raises:
        InvalidInputError: ``text`` is not a string, or ``split_on_newlines`` not a bool.

    Example:
        >>> sentence_boundaries("One. Two.")
        [5, 9]
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            "text",
            f"must be a string, got {type(text).__name__}",
            value=text,
            fix="convert it with str() first",
        )
    hard = _NEWLINE if check_flag("split_on_newlines", split_on_newlines) else _BLANK_LINE
    ends: list[int] = []
    start = 0
    for m in hard.finditer(text):
        if m.end() < len(text):
            ends.extend(_block_ends(text, start, m.start()))
            ends.append(m.end())
            start = m.end()
    ends.extend(_block_ends(text, start, len(text)))
    if text and (not ends or ends[-1] != len(text)):
        ends.append(len(text))
    return ends


def _block_ends(text: str, start: int, stop: int) -> list[int]:
    """Sentence ends strictly inside ``text[start:stop]`` (a block without hard breaks)."""
    ends: list[int] = []
    for m in _CANDIDATE.finditer(text, start, stop):
        end = _skip_space(text, m.end(), stop)
        if end >= stop:
            continue
        run = m.group("run")
        cjk = any(c in _CJK_STOPS for c in run)
        if cjk or (end > m.end() and _is_boundary(text, m, end, start, stop)):
            ends.append(end)
    return ends


def _skip_space(text: str, i: int, stop: int) -> int:
    while i < stop and text[i].isspace():
        i += 1
    return i


def _is_boundary(text: str, m: re.Match[str], next_start: int, block: int, stop: int) -> bool:
    """Whether the terminator ``m``, followed by whitespace up to ``next_start``, ends a sentence."""
    j = next_start
    while j < stop and text[j] in _OPENERS:
        j += 1
    nxt = _WORD.match(text, j, stop)
    next_word = nxt.group() if nxt else text[j : j + 1]
    if next_word[:1].islower():
        return False
    if m.group("run") != "." or m.group("close"):
        return True  # ?, !, ?!, ..., or a period inside quotes or brackets: "Stop." (see above.)
    i = m.start()
    while i > block and not text[i - 1].isspace():
        i -= 1
    token = text[i : m.start()].lstrip(_OPENERS)
    if _LIST_MARKER.fullmatch(token):
        j = i
        while j > block and text[j - 1] in " \t":
            j -= 1
        if j == block or text[j - 1] in "\r\n":
            return False  # "1. First step" at the start of a line
    key = token.lower()
    if key in _ALWAYS:
        return False
    if key in _NUMBERED:
        return not (next_word[:1].isdigit() or next_word.startswith("#"))
    if key in _MAYBE_FINAL or _INITIAL.fullmatch(token) or _DOTTED.fullmatch(token):
        if _INITIAL.fullmatch(next_word) and next_word.endswith("."):
            return False  # another initial: "J. K. Rowling"
        return next_word.rstrip(".").lower() in _STARTERS
    return True
