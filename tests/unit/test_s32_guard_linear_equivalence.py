"""The semantic guard made linear (review s32) reads every prompt as it did before.

The guard was quadratic or slow on long or crafted prompts: it copied the text before every word
(to find whether the word starts a sentence), read on to the end (or the start) of the prompt for
every negation with no content word near it, and its "bracket holding a colon" regex backtracked
about 200 x 200 steps per bracket. The fix reads each character a bounded number of times; what it
finds must not change. This module keeps a frozen copy of the functions as they were before the
fix (the helpers they call, unchanged by it, are imported) and checks that the guard gives exactly
the same features, and :func:`compare` the same verdicts, on a few thousand generated prompts and
pairs. (How fast it is now is measured by the reviewer's scripts, never asserted here.)

Two changes of reading were meant, in the same review, and are left out: a dash before a digit
is a minus sign (test_s32_guard_dash_minus.py: the prompts holding one are not generated), and each
negation carries its clause (test_s32_guard_negation_clause.py): the frozen copy reads none, so the
features are compared but for their clauses, and :func:`compare`'s verdicts are the same but where
a negation moved to another clause is now refused.
"""

from __future__ import annotations

import dataclasses
import random
import re
import unicodedata
from collections.abc import Sequence
from itertools import islice

import pytest

from tokenbudget_core.semantic_guard import (
    _APOSTROPHES,
    _BREAKS,
    _CJK_NEGATIONS,
    _COMMON,
    _DIGITS,
    _DIRECTIONS,
    _FENCE,
    _FUNCTION_WORDS,
    _INLINE_CODE,
    _NUMBER_WORDS,
    _ROLES,
    _SYNONYMS,
    _TOKEN,
    _WORD,
    GuardFeatures,
    _bracket_holds_colon,
    _h,
    _Reading,
    _span,
    _split,
    _stem,
    _symbols,
    compare,
    guard_features,
)

# -- the guard before the fix (frozen copy) ------------------------------------------------------

_OLD_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?<!\d)\d+(?:[.,]\d+)*")
_OLD_BRACKET = r"[\[{][^\]}\n]{0,200}?:[^\]}\n]{0,200}[\]}]"
_OLD_CODE_MARKERS = re.compile(
    r"""\n[ \t]+\S                              # an indented line
    | (?<!\w)[A-Za-z_]\w*(?:\((?!e?s\))|\[)    # a call or an index: print(, x[ (not "file(s)")
    | [\[{][^\]}\n]{0,200}?:[^\]}\n]{0,200}[\]}]  # a bracket holding a colon: x[::2], {"a": 1}
    | ==|!=|<=|>=|=>|::|&&|\|\||:=|[-+*/%]=      # code operators (not "->": an arrow of prose)
    """,
    re.X,
)


def _old_number(raw: str) -> str:
    text = raw.lstrip("+")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    return text


def _old_code(text: str) -> str | None:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = [m.group() for m in _FENCE.finditer(text)]
    prose = _FENCE.sub("\n", text)
    parts += [m.group() for m in _INLINE_CODE.finditer(prose)]
    prose = _INLINE_CODE.sub(" ", prose)
    if _OLD_CODE_MARKERS.search(prose):
        parts = [text]
    if not parts:
        return None
    return "\0".join("\n".join(line.rstrip() for line in p.split("\n")).strip("\n") for p in parts)


def _old_content_after(stream: Sequence[tuple[str, str]], i: int, n: int) -> list[str]:
    return list(islice((stream[j][1] for j in range(i + 1, len(stream)) if stream[j][0] == "w"), n))


def _old_content_before(stream: Sequence[tuple[str, str]], i: int) -> list[str]:
    return list(islice((stream[j][1] for j in range(i - 1, -1, -1) if stream[j][0] == "w"), 1))


def _old_read(folded: str) -> _Reading:
    stream: list[tuple[str, str]] = []
    sequence: list[str] = []
    directions: list[str] = []
    end = 0
    for m in _TOKEN.finditer(folded):
        if any(c in _BREAKS for c in folded[end : m.start()]):
            stream.append(("stop", ""))
        end = m.end()
        token = m.group()
        stream.extend(("neg", "") for c in token if c in _CJK_NEGATIONS)
        negation, aux, word = _split(token)
        if negation:
            stream.append(("neg", "aux" if aux else ""))
            sequence.append("neg")
        if not word:
            continue
        directions.extend(_DIRECTIONS.get(word, ()))
        if word in _ROLES:
            stream.append(("role", _ROLES[word]))
            sequence.append(f"f:{word}")
            continue
        if word in _NUMBER_WORDS:
            item = ("num", f"n:{word}")
        elif word.isdigit() or _DIGITS.fullmatch(word):
            item = ("num", f"n:{_old_number(word)}")
        elif word in _FUNCTION_WORDS:
            item = ("letter" if len(word) == 1 else "f", f"f:{word}")
        else:
            stem = _stem(word)
            item = ("w", _SYNONYMS.get(stem, stem))
        stream.append(item)
        sequence.append(item[1])
    content = [v for k, v in stream if k == "w"]
    negations: list[tuple[str, ...]] = []
    roles: set[tuple[str, str]] = set()
    for i, (kind, value) in enumerate(stream):
        if kind == "role":
            roles.update((value, term) for term in _span(stream, i))
        elif kind == "neg":
            negated = _old_content_after(stream, i, 2 if value == "aux" else 1)
            if not negated:
                negated = _old_content_before(stream, i)
            negations.append(tuple(sorted(negated)))
    return _Reading(negations, [() for _ in negations], content, roles, directions, sequence)


def _old_guard_features(text: str) -> GuardFeatures:
    text = unicodedata.normalize("NFKC", text)
    code = _old_code(text)
    text = text.translate(_APOSTROPHES)
    reading = _old_read(text.casefold())
    numbers = [(m.start(), _old_number(m.group())) for m in _OLD_NUMBER.finditer(text)]
    words: set[str] = set()
    entities: set[str] = set()
    for m in _WORD.finditer(text):
        token = m.group()
        low = token.casefold()
        words.add(low)
        if low in _NUMBER_WORDS:
            numbers.append((m.start(), low))
            continue
        if token.isdigit():
            continue
        before = text[: m.start()].rstrip()
        initial = not before or before[-1] in ".!?:\n¿¡" or before[-1] in "\"'(["
        has_digit = any(c.isdigit() for c in token)
        inner_upper = any(c.isupper() for c in token[1:])
        if (
            (has_digit and any(c.isalpha() for c in token))
            or inner_upper
            or (token[0].isupper() and (not initial or low not in _COMMON) and token != "I")
        ):
            entities.add(low)
    numbers.sort()
    negations = tuple(sorted(tuple(sorted(_h(w) for w in n)) for n in reading.negations))
    return GuardFeatures(
        negations=negations,
        clauses=tuple(() for _ in negations),  # (no clause: negations paired as before)
        numbers=tuple(_h(n) for _, n in numbers),
        symbols=tuple(sorted(_h(c) for c in _symbols(text))),
        entities=frozenset(_h(e) for e in entities),
        words=frozenset(_h(w) for w in words),
        content=tuple(sorted(_h(w) for w in reading.content)),
        roles=frozenset((role, _h(w)) for role, w in reading.roles),
        directions=tuple(sorted(_h(f"dir:{side}") for side in reading.directions)),
        sequence=tuple(_h(w) for w in reading.sequence),
        code=None if code is None else _h(f"code:{code}"),
    )


# -- generated prompts ---------------------------------------------------------------------------

_WORDS = """
    how do i reset my password please tell me what is the way to cancel renew premium basic plan
    refund order account from to into than vs versus in out up down on off before after over under
    more less sign log migrate postgres mysql flights paris london aspirin ibuprofen safe children
    take food empty stomach with without not no never none nobody don't isn't can't won't doesn't
    n'est pas jamais sans nicht kein ohne nunca sin non niet geen inte ikke nie не нет 不 没有
    unable impossible the a an I It What When Where Why Who How Is Are Please Thanks GPT4 A100
    iPhone NYC LA SF McDonald python3.10 v2.1 v2.2 3.10 3.1 1,000 1000 2025-03-04 -5 +3 12 7 am pm
    three dozen first half twice buy purchase delete remove change update error problem cost price
    l'avion d'accord qu'il it's you're we've they'll he'd I'm folder file(s) print( x[ y[1:2]
    {"a": 1} [::2] == != <= >= => :: && || := += -= *= /= %= -> $ € % # ^ ~ + * / < > @ & |
    e-mail GPT-4 … \u2014 \u2013 ¿ ¡ « » \u201c \u201d \u2019 ` ``` ( ) [ ] { } : ; , . ! ?
"""
_VOCABULARY = _WORDS.split()
_GLUE = [" ", " ", " ", " ", "  ", "\n", "\n    ", "\t", "\u00a0", "\u2003", ", ", ". ", ": ", "! ", "? ", ""]


def _prompt(rng: random.Random) -> str:
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(0, 40))]
    text = "".join(w + rng.choice(_GLUE) for w in words)
    if rng.random() < 0.15:  # a long bracket around the 200-character reach of its colon
        inside = "".join(rng.choice("ab :[{ ") for _ in range(rng.randint(150, 450)))
        text += rng.choice("[{") + inside + rng.choice("]}\n")
    if rng.random() < 0.1:
        text = text.upper() if rng.random() < 0.5 else text.capitalize()
    return text


def _variant(rng: random.Random, text: str) -> str:
    """A near-duplicate of ``text``: a word dropped, swapped, added, moved, or a change of case."""
    words = text.split(" ")
    i = rng.randrange(len(words))
    how = rng.randrange(5)
    if how == 0 and len(words) > 1:
        del words[i]
    elif how == 1:
        words[i] = rng.choice(_VOCABULARY)
    elif how == 2:
        words.insert(i, rng.choice(_VOCABULARY))
    elif how == 3:
        words.insert(rng.randrange(len(words) + 1), words.pop(i))
    else:
        words[i] = words[i].swapcase()
    return " ".join(words)


_DASH_FOR_MINUS = re.compile("[\u2012\u2013\u2014\u2212\ufe63\uff0d]\\d")
"""A dash before a digit: a minus sign since this review (see test_s32_guard_dash_minus.py), the
one change of reading meant; the prompts holding one are left out of the comparisons below."""
_PROMPTS = [
    text
    for text in (_prompt(random.Random(seed)) for seed in range(3100))
    if not _DASH_FOR_MINUS.search(unicodedata.normalize("NFKC", text))
][:3000]


@pytest.mark.parametrize("chunk", range(10))
def test_the_guard_reads_every_prompt_as_before(chunk: int) -> None:
    assert len(_PROMPTS) == 3000
    for text in _PROMPTS[chunk::10]:
        assert _as_before(guard_features(text)) == _old_guard_features(text), text


def _as_before(features: GuardFeatures) -> GuardFeatures:
    """``features`` without the clauses of its negations (which the frozen copy does not read)."""
    return dataclasses.replace(features, clauses=tuple(() for _ in features.negations))


def test_compare_gives_the_same_verdicts_as_before_on_near_duplicate_pairs() -> None:
    rng = random.Random(32)
    verdicts = set()
    moved = 0
    for text in _PROMPTS[:2000]:
        other = _variant(rng, text)
        if _DASH_FOR_MINUS.search(unicodedata.normalize("NFKC", other)):
            continue
        new = compare(guard_features(text), guard_features(other))
        old = compare(_old_guard_features(text), _old_guard_features(other))
        if new != old:  # only a negation now read in another clause
            assert new == "negation differs", (text, other, old)
            moved += 1
        verdicts.add(new)
    assert moved < 100, moved  # (a word moved across a negation's clause: rare in these pairs)
    assert None in verdicts
    assert len(verdicts) >= 6  # (the pairs reach most of the checks)


def test_prompts_a_sentence_start_decides_read_as_before() -> None:
    # A capitalised common word is a named entity only inside a sentence; whitespace of any kind,
    # and many words of it, may stand between it and what ends the sentence before it.
    for text in (
        "What is it?   What is it",
        "Hello.\u00a0\u2003\tWhat now",
        "say What now",
        '"What now',
        "(What now",
        "What",
        "   What",
        "x \n\n What",
        "It is " + "it " * 500 + "It",
    ):
        assert _as_before(guard_features(text)) == _old_guard_features(text), text


def test_negations_far_from_any_content_word_read_as_before() -> None:
    for text in (
        "no " * 300,
        "safe " + "no " * 300,
        "no " * 300 + "safe",
        "isn't " * 50 + "aspirin safe",
        "aspirin safe " + "not " * 100,
        "不" * 50 + " safe",
        "not",
        "",
    ):
        assert _as_before(guard_features(text)) == _old_guard_features(text), text


def test_a_bracket_holding_a_colon_is_found_exactly_where_the_old_regex_found_it() -> None:
    # The old regex, alone, against its linear replacement, on short alphabets that make brackets,
    # colons and closings frequent and contents both shorter and longer than its 200 reach.
    old = re.compile(_OLD_BRACKET)
    rng = random.Random(200)
    found = 0
    for _ in range(3000):
        alphabet = rng.choice(("[{:]}\nab", "[:]a", "{:}" + "a" * 20, "[:]" + "a" * 200, "[:]\n" + "a" * 60))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 700)))
        expected = old.search(text) is not None
        assert _bracket_holds_colon(text) is expected, text
        found += expected
    for reach_a in (0, 1, 199, 200, 201, 202):
        for reach_b in (0, 1, 199, 200, 201, 202):
            for before in ("", "[", "x" * 300, "{" + "x" * 300):
                text = before + "[" + "a" * reach_a + ":" + "b" * reach_b + "]"
                assert _bracket_holds_colon(text) is (old.search(text) is not None), (reach_a, reach_b)
    assert 0 < found < 3000
