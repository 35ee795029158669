"""Ids shown to people (terminals, log lines): :func:`visible`.

Feature and user ids come from end users. Written verbatim, an id with a newline forges a log
line, an escape sequence drives the terminal, and a right-to-left mark makes one id read as
another. :func:`visible` shows every control and invisible format character as an escape.
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BLANK = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))  # variation selectors (VS1-VS16)
    + "".join(map(chr, range(0xE0100, 0xE01F0)))  # variation selectors supplement (VS17-VS256)
)
"""Letters and marks that show nothing (printable, yet invisible after a letter): the combining
grapheme joiner, Hangul fillers, the Braille blank, Khmer's inherent vowels, Mongolian's free
variation selectors and the variation selectors (so ``alice`` and ``alice\\ufe0f`` read apart)."""


def _visible_char(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    category = unicodedata.category(c)
    if category in ("Cc", "Cf", "Zl", "Zp") or (category == "Zs" and c != " ") or c in _BIDI or c in _BLANK:
        code = ord(c)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return c


def visible(text: str) -> str:
    """``text`` with every control, invisible format, blank (a variation selector among them) and
    non-ASCII space character shown as an escape (``\\x1b``, ``\\n``, ``\\u200b``, ``\\ufe0f``,
    ``\\xa0``; ``\\U000e0100`` beyond the Basic Multilingual Plane), so an id printed on a terminal or
    written to a log can neither send escape sequences, break a line or a table row, nor end in
    invisible characters. Printable text (non-ASCII letters, a backslash) is shown as recorded, so
    an id holding the two characters ``\\n`` reads like one holding a newline: where ids must be
    told apart for sure, compare the ids themselves (an alert's ``feature`` and ``user``).

    Example:
        >>> visible("bob\\nERROR forged")
        'bob\\\\nERROR forged'
    """
    if text.isprintable() and _BLANK.isdisjoint(text):
        return text
    return "".join(_visible_char(c) for c in text)
