"""Cutting text to a token budget.

:func:`truncate_text` returns text that never exceeds ``max_tokens`` as counted by the
model's own counter, marker included. Strategies:

* ``keep_start``: the beginning (the result is a prefix of the text);
* ``keep_end``: the end (a suffix), e.g. the newest part of a log or of a question;
* ``keep_both``: the beginning and the end, with ``"\\n[… N tokens truncated …]\\n"`` between
  (when the marker leaves no room for text at both ends: the beginning alone, as
  ``keep_start``, rather than a head and a tail spliced with nothing between them);
* ``smart``: the beginning, cut at the last sentence end that fits (see
  :mod:`tokenbudget_core.sentences`), else at the last word end, else at a token
  boundary, followed by ``" […]"``. A sentence or word end is used only when it keeps at
  least half of what fits, so one long sentence does not waste the budget. A fenced code
  block (```` ``` ```` or ``~~~``) the cut leaves open is closed on a line after the marker,
  the closing fence counted in the budget, so what follows the text is not code.

How it cuts: with a counter that has ``encode``/``decode`` (:class:`TiktokenCounter`), the
text is encoded once and cut at token boundaries, backing off a token when a cut would
split a multi-byte character; with any other counter (Claude, estimates) it searches
character offsets. Either way a cut never splits a grapheme cluster (a letter and its
combining accents, an Indic syllable, a flag, an emoji sequence with its joiners and skin
tone): it moves to the cluster's edge, dropping the whole cluster rather than keeping part of
it. Each candidate is verified with the counter, starting at
the size the budget suggests and galloping from there: one encode and O(log n) counts.
Re-tokenising a cut can merge or split tokens at the seam, which the verification absorbs.

Text already within budget is returned unchanged; ``max_tokens=0`` gives ``""``; a marker
that leaves no room for any text (whitespace aside; at both ends, for ``keep_both``) is
dropped. The empty string is taken to fit any budget
(a counter that adds message framing, as Claude's does, counts that framing in the budget).
"""

from __future__ import annotations

import dataclasses
import inspect
import unicodedata
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, cast, get_args

from .counting import TokenCounter, as_counter, check_text, counted
from .errors import InvalidInputError
from .sentences import sentence_boundaries

__all__ = [
    "DEFAULT_MARKER",
    "SMART_MARKER",
    "Strategy",
    "SupportsCount",
    "TruncationResult",
    "atruncate_text",
    "truncate_text",
    "truncate_text_detailed",
]

Strategy: TypeAlias = Literal["keep_start", "keep_end", "keep_both", "smart"]
"""How :func:`truncate_text` chooses what to keep."""
_STRATEGIES: tuple[str, ...] = get_args(Strategy)

DEFAULT_MARKER = "\n[… {n} tokens truncated …]\n"
"""The ``keep_both`` marker; ``{n}`` becomes the number of tokens cut."""
SMART_MARKER = " […]"
"""The ``smart`` marker, appended when anything was cut."""

_MIN_KEEP = 0.5  # a sentence or word end must keep at least this share of what fits
_LOOKAHEAD = 256  # characters after the cut the sentence splitter sees (abbreviation context)


class SupportsCount(Protocol):
    """Anything with ``count(text) -> int``; every :class:`TokenCounter` qualifies."""

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class TruncationResult:
    """What :func:`truncate_text_detailed` kept and what it cost.

    Example:
        >>> r = truncate_text_detailed("word " * 100, 10, "keep_both")
        >>> (r.truncated, r.tokens_after <= 10)
        (True, True)
    """

    text: str
    """The text to send (the original object when nothing was cut)."""
    tokens_before: int
    """Tokens of the original text."""
    tokens_after: int
    """Tokens of :attr:`text`, marker included; never above ``max_tokens``."""
    truncated: bool
    """Whether anything was cut."""
    strategy: Strategy
    """The strategy used."""
    exact: bool = True
    """False when a count behind the figures was an estimate (a model whose tokenizer is not
    here: Claude counted offline, Gemini...): the cut then aims at the estimate, not the
    provider's own count. A counter answering plain ints is taken at its word."""
    method: str | None = None
    """How the counts were made (``tiktoken``, ``estimate``...: the :class:`TokenCount` method of
    the first estimate among them, else of the counter); ``None`` for a counter answering plain
    ints."""

    def __str__(self) -> str:
        return self.text


def truncate_text(
    text: str,
    max_tokens: int,
    strategy: Strategy = "keep_start",
    model: str = "gpt-4o",
    *,
    counter: SupportsCount | None = None,
    marker: str | None = None,
) -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens of ``model``, marker included.

    Args:
        text: The text to cut.
        max_tokens: The budget, a non-negative int.
        strategy: ``keep_start``, ``keep_end``, ``keep_both`` or ``smart`` (see the module doc).
        model: Whose tokenizer counts, via ``TokenCounter.for_model(model)``; ignored when
            ``counter`` is given.
        counter: A counter to use instead (anything with ``count(text) -> int``), or a model name.
        marker: Text put where the cut was; ``{n}`` in it becomes the number of tokens cut.
            ``None`` (default): :data:`DEFAULT_MARKER` for ``keep_both``, :data:`SMART_MARKER`
            for ``smart``, nothing for ``keep_start``/``keep_end``. ``""``: no marker.

    Returns:
        The text itself when it fits, else the cut text.

    Raises:
        InvalidInputError: ``text`` is not a string, ``max_tokens`` is not a non-negative
            int, ``strategy`` is unknown, ``marker`` is not a string, ``counter`` cannot count, or
            it returned something other than a non-negative int (named ``counter``).
        UnknownModelError: ``model`` is unknown (and no ``counter`` was given).

    Example:
        >>> truncate_text("The cat sat. The dog ran after it all day long.", 6, "smart")
        'The cat sat. […]'
    """
    return truncate_text_detailed(text, max_tokens, strategy, model, counter=counter, marker=marker).text


def truncate_text_detailed(
    text: str,
    max_tokens: int,
    strategy: Strategy = "keep_start",
    model: str = "gpt-4o",
    *,
    counter: SupportsCount | None = None,
    marker: str | None = None,
) -> TruncationResult:
    """Like :func:`truncate_text`, returning the token counts too.

    Args:
        text: The text to cut.
        max_tokens: The budget, a non-negative int.
        strategy: ``keep_start``, ``keep_end``, ``keep_both`` or ``smart``.
        model: Whose tokenizer counts (ignored when ``counter`` is given).
        counter: A counter to use instead, or a model name.
        marker: As for :func:`truncate_text`.

    Raises:
        InvalidInputError: As for :func:`truncate_text`.
        UnknownModelError: ``model`` is unknown.

    Example:
        >>> truncate_text_detailed("Hello world", 100).truncated
        False
    """
    resolved = _prepare(text, max_tokens, strategy, marker, counter, model)
    plan = _plan(text, max_tokens, strategy, marker, resolved)
    noted = _Noted()
    count = _sync_count(resolved, noted)
    try:
        request = next(plan)
        while True:
            request = plan.send(count(request))
    except StopIteration as done:
        result: TruncationResult = done.value
        return noted.flag(result, resolved)


async def atruncate_text(
    text: str,
    max_tokens: int,
    strategy: Strategy = "keep_start",
    model: str = "gpt-4o",
    *,
    counter: SupportsCount | None = None,
    marker: str | None = None,
) -> str:
    """Async twin of :func:`truncate_text`: counts with the counter's ``acount`` when it has one.

    Args:
        text: The text to cut.
        max_tokens: The budget, a non-negative int.
        strategy: ``keep_start``, ``keep_end``, ``keep_both`` or ``smart``.
        model: Whose tokenizer counts (ignored when ``counter`` is given).
        counter: A counter to use instead, or a model name.
        marker: As for :func:`truncate_text`.

    Raises:
        InvalidInputError: As for :func:`truncate_text`.
        UnknownModelError: ``model`` is unknown.

    Example:
        >>> await atruncate_text(long_text, 500, "keep_end", "claude-sonnet-4-5")  # doctest: +SKIP
    """
    resolved = _prepare(text, max_tokens, strategy, marker, counter, model)
    plan = _plan(text, max_tokens, strategy, marker, resolved)
    acount = getattr(resolved, "acount", None)
    use_async = _encoder(resolved) is None and inspect.iscoroutinefunction(acount)
    count = _sync_count(resolved)
    try:
        request = next(plan)
        while True:
            if use_async and acount is not None:
                n = counted(await acount(request), resolved)
            else:
                n = count(request)
            request = plan.send(n)
    except StopIteration as done:
        result: TruncationResult = done.value
        return result.text


# -- validation and counting ---------------------------------------------------------------------


def _prepare(
    text: object, max_tokens: object, strategy: object, marker: object, counter: object, model: str
) -> SupportsCount:
    check_text(text)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        fix = "pass the token budget as an int, e.g. max_tokens=1000"
        raise InvalidInputError("max_tokens", f"must be a non-negative int, got {max_tokens!r}", fix=fix)
    if strategy not in _STRATEGIES:
        fix = f"use one of {list(_STRATEGIES)}"
        raise InvalidInputError("strategy", f"unknown strategy {strategy!r}", value=strategy, fix=fix)
    if marker is not None and not isinstance(marker, str):
        problem = f"must be a string or None, got {type(marker).__name__}"
        raise InvalidInputError("marker", problem, value=marker, fix='pass "" for no marker')
    return text_counter(counter, model)


def text_counter(counter: object, model: str) -> SupportsCount:
    """``counter`` if it can count, a model name's ``TokenCounter``, else
    ``TokenCounter.for_model(model)`` when it is ``None``.

    A string is a model name (``str.count`` would count a substring), as everywhere a counter is
    taken; other sequences (``list.count``, ``bytes.count``) are refused.
    """
    if counter is None:
        return TokenCounter.for_model(model)
    return cast(SupportsCount, as_counter(counter))


def _encoder(counter: object) -> tuple[Callable[[str], list[int]], Callable[[Sequence[int]], str]] | None:
    encode, decode = getattr(counter, "encode", None), getattr(counter, "decode", None)
    return (encode, decode) if callable(encode) and callable(decode) else None


class _Noted:
    """What the counts of one cut were: the first estimate among them, else the last count."""

    __slots__ = ("estimate", "last")

    def __init__(self) -> None:
        self.estimate: object = None
        self.last: object = None

    def note(self, n: object) -> object:
        self.last = n
        if self.estimate is None and getattr(n, "exact", True) is False:
            self.estimate = n
        return n

    def flag(self, result: TruncationResult, counter: SupportsCount) -> TruncationResult:
        """``result`` with its exactness: no count noted (tiktoken's own path, an empty text)
        asks the counter how it counts, with the count of ``""``."""
        seen = self.estimate if self.estimate is not None else self.last
        if seen is None and isinstance(counter, TokenCounter):
            seen = counter.count("")
        method = getattr(seen, "method", None)
        exact = getattr(seen, "exact", True) is not False
        return dataclasses.replace(result, exact=exact, method=method if isinstance(method, str) else None)


def _sync_count(counter: SupportsCount, noted: _Noted | None = None) -> Callable[[str], int]:
    from .openai_counting import TiktokenCounter

    if isinstance(counter, TiktokenCounter):
        encode = counter.encode  # same figure as count(), without filling its cache with candidates
        return lambda s: len(encode(s))
    if noted is None:
        return lambda s: counted(counter.count(s), counter)
    return lambda s: counted(noted.note(counter.count(s)), counter)


# -- cut points ----------------------------------------------------------------------------------


class _CharCuts:
    """Cut anywhere between characters; sizes in characters, tokens estimated from their share."""

    def __init__(self, text: str, tokens_before: int) -> None:
        self.text, self.units, self.before = text, len(text), tokens_before
        self.step_div = 32

    def head(self, k: int) -> tuple[int, int]:
        end = _grapheme_floor(self.text, k)
        return end, end

    def tail(self, k: int) -> tuple[int, int]:
        start = _grapheme_ceil(self.text, self.units - k)
        return start, self.units - start

    def guess(self, tokens: int) -> int:
        return self.units * max(tokens, 0) // max(self.before, 1)

    def units_of_prefix(self, chars: int) -> int:
        return chars

    def removed(self, head: int, tail: int) -> int:
        return round(self.before * (self.units - head - tail) / max(self.units, 1))


class _TokenCuts:
    """Cut at token boundaries; a cut inside a multi-byte character backs off a token, and one
    inside a grapheme cluster backs off to the cluster's edge."""

    def __init__(self, text: str, tokens: list[int], codec: tuple[Any, Any]) -> None:
        self.text, self.tokens, self.units = text, tokens, len(tokens)
        self._encode, self._decode = codec
        self.step_div = 0

    def head(self, k: int) -> tuple[int, int]:
        for j in range(k, max(k - 4, 0) - 1, -1):
            piece = self._decode(self.tokens[:j])
            if self.text.startswith(piece):
                end = _grapheme_floor(self.text, len(piece))
                return (end, j) if end == len(piece) else (end, self.units_of_prefix(end))
        return 0, 0

    def tail(self, k: int) -> tuple[int, int]:
        for j in range(k, max(k - 4, 0) - 1, -1):
            piece = self._decode(self.tokens[self.units - j :])
            if self.text.endswith(piece):
                start = _grapheme_ceil(self.text, len(self.text) - len(piece))
                if start == len(self.text) - len(piece):
                    return start, j
                return start, len(self._encode(self.text[start:]))
        return len(self.text), 0

    def guess(self, tokens: int) -> int:
        return tokens

    def units_of_prefix(self, chars: int) -> int:
        return len(self._encode(self.text[:chars]))

    def removed(self, head: int, tail: int) -> int:
        return self.units - head - tail


_Cuts: TypeAlias = _CharCuts | _TokenCuts
_Plan: TypeAlias = Generator[str, int, TruncationResult]


def _cuts_for(text: str, before: int, counter: SupportsCount) -> _Cuts:
    codec = _encoder(counter)
    if codec is not None:
        tokens = list(codec[0](text))
        if codec[1](tokens) == text:  # lone surrogates and the like do not round-trip
            return _TokenCuts(text, tokens, codec)
    return _CharCuts(text, before)


def _render(template: str, n: int) -> str:
    return template.replace("{n}", f"{max(n, 0):,}")


# -- the plan: yields texts to count, receives their counts -----------------------------------------


def _plan(
    text: str, max_tokens: int, strategy: Strategy, marker: str | None, counter: SupportsCount
) -> _Plan:
    before = (yield text) if text else 0
    if before <= max_tokens:
        return TruncationResult(
            text=text, tokens_before=before, tokens_after=before, truncated=False, strategy=strategy
        )
    counts: dict[str, int] = {}

    def fits(candidate: str) -> Generator[str, int, bool]:
        if candidate and candidate not in counts:
            counts[candidate] = yield candidate
        return counts.get(candidate, 0) <= max_tokens

    def done(kept: str) -> TruncationResult:
        return TruncationResult(
            text=kept,
            tokens_before=before,
            tokens_after=counts.get(kept, 0),
            truncated=True,
            strategy=strategy,
        )

    if max_tokens == 0:
        return done("")
    template = marker if marker is not None else _default_marker(strategy)
    marker_tokens = (yield _render(template, before)) if template else 0
    cuts = _cuts_for(text, before, counter)
    how = strategy
    if template:
        if marker_tokens < max_tokens:
            found = yield from _search(text, how, template, marker_tokens, max_tokens, cuts, fits)
            if found is not None and found[1]:
                return done(found[0])
        # the marker leaves no room for text (at both ends, for keep_both): cut without it, and
        # keep_both keeps the beginning, not a head and a tail spliced with nothing between them
        how = "keep_start" if strategy == "keep_both" else strategy
    found = yield from _search(text, how, "", 0, max_tokens, cuts, fits)
    return done("" if found is None else found[0])


def _search(
    text: str,
    strategy: Strategy,
    template: str,
    marker_tokens: int,
    max_tokens: int,
    cuts: _Cuts,
    fits: Callable[[str], Generator[str, int, bool]],
) -> Generator[str, int, tuple[str, bool] | None]:
    """The longest cut of ``text`` that fits, and whether it keeps any text besides whitespace
    (at both ends, for ``keep_both``); ``None`` when nothing fits."""

    from .compression import _closing_fence  # compression imports this module

    def smart_text(end: int, used: int) -> str:
        kept = text[:end] + _render(template, cuts.removed(used, 0))
        closer = _closing_fence(kept) if "``" in kept or "~~" in kept else None
        if closer is None:
            return kept
        return kept + ("" if kept.endswith(("\n", "\r")) else "\n") + closer

    def spans(k: int) -> tuple[int, int]:
        """Where the kept head ends and the kept tail starts."""
        if strategy == "keep_end":
            return 0, cuts.tail(k)[0]
        if strategy == "keep_both":
            end = cuts.head((k + 1) // 2)[0]
            return end, max(cuts.tail(k // 2)[0], end)
        return cuts.head(k)[0], len(text)

    def build(k: int) -> str:
        if strategy == "keep_end":
            start, used = cuts.tail(k)
            return _render(template, cuts.removed(0, used)) + text[start:]
        if strategy == "keep_both":
            end, head_used = cuts.head((k + 1) // 2)
            start, tail_used = cuts.tail(k // 2)
            start = max(start, end)
            return text[:end] + _render(template, cuts.removed(head_used, tail_used)) + text[start:]
        end, used = cuts.head(k)
        if strategy == "smart":
            return smart_text(end, used)
        return text[:end] + _render(template, cuts.removed(used, 0))

    guess = cuts.guess(max_tokens - marker_tokens)
    step = max(1, guess // cuts.step_div) if cuts.step_div else 1
    k = yield from _largest_fit(build, fits, hi=cuts.units - 1, guess=guess, step=step)
    if k < 0:
        return None
    best = build(k)
    end, start = spans(k)
    if strategy == "smart":
        smart = _smart_end(text, end)
        candidate = smart_text(smart, cuts.units_of_prefix(smart))
        if smart and (yield from fits(candidate)):
            best, end = candidate, smart
    head, tail = _has_text(text, 0, end), _has_text(text, start, len(text))
    return best, (head and tail) if strategy == "keep_both" else (head or tail)


def _has_text(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` has a character other than whitespace."""
    return end > start and not text[start:end].isspace()


def _default_marker(strategy: Strategy) -> str:
    return DEFAULT_MARKER if strategy == "keep_both" else SMART_MARKER if strategy == "smart" else ""


def _largest_fit(
    build: Callable[[int], str],
    fits: Callable[[str], Generator[str, int, bool]],
    *,
    hi: int,
    guess: int,
    step: int,
) -> Generator[str, int, int]:
    """The largest ``k`` in ``[0, hi]`` found whose candidate fits (verified), or -1.

    Gallops from ``guess`` (up while candidates fit, down while they do not), then bisects.
    """
    seen: dict[int, bool] = {}

    def ok(k: int) -> Generator[str, int, bool]:
        if k not in seen:
            seen[k] = yield from fits(build(k))
        return seen[k]

    g = min(max(guess, 0), hi)
    if (yield from ok(g)):
        lo, bad = g, hi + 1
        while lo < hi:
            nxt = min(lo + step, hi)
            if not (yield from ok(nxt)):
                bad = nxt
                break
            lo, step = nxt, step * 2
    else:
        lo, bad = -1, g
        while bad > 0:
            nxt = max(bad - step, 0)
            if (yield from ok(nxt)):
                lo = nxt
                break
            bad, step = nxt, step * 2
        if lo < 0:
            return -1
    while bad - lo > 1:
        mid = (lo + bad) // 2
        if (yield from ok(mid)):
            lo = mid
        else:
            bad = mid
    return lo


def _smart_end(text: str, cut: int) -> int:
    """Where ``smart`` ends the kept text: a sentence end, else a word end, else ``cut``
    (all at a grapheme cluster's edge)."""
    return _grapheme_floor(text, _text_end(text, cut))


def _text_end(text: str, cut: int) -> int:
    """The last sentence end at or before ``cut``, else word end, that keeps enough; else ``cut``."""
    floor = max(1, int(cut * _MIN_KEEP))
    best = 0
    for end in sentence_boundaries(text[: cut + _LOOKAHEAD]):
        content_end = _rstrip_end(text, end)
        if content_end > cut:
            break
        best = content_end
    if best >= floor:
        return best
    for i in range(min(cut, len(text) - 1), floor - 1, -1):
        if text[i].isspace():
            end = _rstrip_end(text, i)
            return end if end >= floor else cut
    return cut


def _rstrip_end(text: str, end: int) -> int:
    """``len(text[:end].rstrip())`` without copying."""
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end


# -- grapheme clusters ---------------------------------------------------------------------------
# A cut between the code points of one user-perceived character changes the text ("Cafe" + U+0301
# cut before the accent is "Cafe"; half a flag is a letter). These approximate Unicode's extended
# grapheme cluster rules (UAX #29) from unicodedata alone, erring towards joining: a cut moves
# inwards, which only removes text, so the budget holds. Only the characters around a cut are read.

_MAX_CLUSTER = 32  # code points a cut moves at most; a longer "cluster" (stacked marks) is cut
_EXTEND = frozenset({"Mn", "Me", "Mc"})  # combining marks, spacing marks included (GB9, GB9a)
_JOINS_PREVIOUS = frozenset("\u200c\u200d\u0e33\u0eb3")  # ZWNJ, ZWJ; Thai and Lao AM
_PREPEND = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")


def _is_regional(c: str) -> bool:
    return "\U0001f1e6" <= c <= "\U0001f1ff"


def _hangul(c: str) -> str:
    """Hangul_Syllable_Type: L, V, T, LV, LVT, or "" for any other character."""
    o = ord(c)
    if 0x1100 <= o <= 0x115F or 0xA960 <= o <= 0xA97C:
        return "L"
    if 0x1160 <= o <= 0x11A7 or 0xD7B0 <= o <= 0xD7C6:
        return "V"
    if 0x11A8 <= o <= 0x11FF or 0xD7CB <= o <= 0xD7FB:
        return "T"
    if 0xAC00 <= o <= 0xD7A3:
        return "LV" if (o - 0xAC00) % 28 == 0 else "LVT"
    return ""


def _joined(text: str, i: int) -> bool:
    """Whether ``text[i - 1]`` and ``text[i]`` belong to one grapheme cluster (``0 < i < len``)."""
    before, c = text[i - 1], text[i]
    o = ord(c)
    if c in _JOINS_PREVIOUS or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F:
        return True  # joiners, emoji skin tones, emoji tag sequences (subdivision flags)
    category = unicodedata.category(c)
    if category in _EXTEND or (before == "\r" and c == "\n") or before in _PREPEND:
        return True
    if before == "\u200d" and (category == "So" or 0x1F000 <= o <= 0x1FAFF):
        return True  # ZWJ emoji sequences (GB11), e.g. a family
    if category == "Lo":  # Indic conjuncts (GB9c): a consonant after a virama, or virama + ZWJ
        virama = text[i - 2] if before == "\u200d" and i >= 2 else before
        if unicodedata.combining(virama) == 9:
            return True
    if _is_regional(c) and _is_regional(before):  # flags are pairs: odd one out joins
        j = i - 1
        while j >= 0 and _is_regional(text[j]):
            j -= 1
        return (i - 1 - j) % 2 == 1
    h, hb = _hangul(c), _hangul(before) if before >= "\u1100" else ""
    return bool(h and hb) and (
        (hb == "L" and h != "T")
        or (hb in ("LV", "V") and h in ("V", "T"))
        or (hb in ("LVT", "T") and h == "T")
    )


def _grapheme_floor(text: str, i: int) -> int:
    """``i``, or the start of the grapheme cluster it falls inside."""
    j, stop = i, max(i - _MAX_CLUSTER, 0)
    while 0 < j < len(text) and _joined(text, j):
        if j == stop:
            return i  # no edge near: not a cluster a reader sees as one character
        j -= 1
    return j


def _grapheme_ceil(text: str, i: int) -> int:
    """``i``, or the end of the grapheme cluster it falls inside."""
    j, stop = i, min(i + _MAX_CLUSTER, len(text))
    while 0 < j < len(text) and _joined(text, j):
        if j == stop:
            return i
        j += 1
    return j
