"""The semantic cache's guard: two similar prompts that differ in what matters are not the same question.

Embeddings rate "Is aspirin safe for children?" and "Is aspirin not safe for children?", or
"refund order 1234" and "refund order 1235", or "flights to Paris" and "flights to London"
as near-identical. :func:`guard_features` reads what an embedding blurs, and :func:`compare`
refuses a match when the two prompts differ in

* **negation**: the number of negation cues (``not``, ``no``, ``never``, ``n't``, ``without``...);
* **numbers**: the multiset of numbers, digits (``1,000`` = ``1000``, ``2.50`` = ``2.5``) and
  number words (``three``, ``dozen``, ``first``...);
* **named entities**: capitalised words (not at a sentence start unless uncommon), acronyms and
  words mixing letters and digits (``GPT4``, ``A100``); every entity of either prompt must
  occur, in any casing, in the other.

The features are kept as truncated SHA-256 hashes of the words, so an entry stored with
hashed prompts keeps no plaintext and can still be guarded.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError

__all__ = ["GuardFeatures", "compare", "guard_features"]

_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nobody|nothing|neither|nor|nowhere|without|cannot|cant|dont|doesnt|didnt|"
    r"isnt|arent|wasnt|werent|wont|wouldnt|shouldnt|couldnt|hasnt|havent|hadnt|mustnt|neednt)\b"
    r"|n[\'\u2019]t\b"
)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NUMBER_WORDS = _words(
    """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand million billion trillion dozen half quarter twice double triple first second third fourth
    fifth sixth seventh eighth ninth tenth once"""
)
_COMMON = _words(
    """a an the i you we they he she it my your our their his her its this that these those what which
    who whom whose when where why how is are was were be been am do does did can could should would
    will shall may might must have has had please tell give show list explain describe write summarize
    summarise translate find make create help let in on at for from to of by with and or but if then
    so as about into over after before between there here hi hello hey thanks thank yes ok okay dear
    compare define calculate convert generate suggest recommend any some all every each"""
)
_HASH_CHARS = 16


def _h(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _number(raw: str) -> str:
    text = raw.lstrip("+")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    text = text.replace(",", ".") if text.count(",") == 1 and "." not in text else text
    if "." in text and re.fullmatch(r"-?\d+\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardFeatures:
    """What the guard compares, hashed: negation count, numbers, entities and all words."""

    negations: int
    """How many negation cues the prompt has."""
    numbers: tuple[str, ...]
    """Hashes of its numbers, sorted (a multiset)."""
    entities: frozenset[str]
    """Hashes of its named entities (casefolded)."""
    words: frozenset[str]
    """Hashes of all its words (casefolded)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for a cache entry."""
        return {
            "neg": self.negations,
            "num": list(self.numbers),
            "ent": sorted(self.entities),
            "words": sorted(self.words),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardFeatures:
        """Read :meth:`to_json` back.

        Raises:
            InvalidInputError: Not guard features.
        """
        try:
            neg, num, ent, words = data["neg"], data["num"], data["ent"], data["words"]
        except (KeyError, TypeError) as e:
            raise InvalidInputError("guard", "is not guard features") from e
        if not isinstance(neg, int) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in (num, ent, words)
        ):
            raise InvalidInputError("guard", "is not guard features")
        return cls(negations=neg, numbers=tuple(num), entities=frozenset(ent), words=frozenset(words))


def guard_features(text: str) -> GuardFeatures:
    """Read the negations, numbers and named entities of a prompt (hashed).

    Raises:
        InvalidInputError: ``text`` is not a string.

    Example:
        >>> a, b = guard_features("Refund order 1234"), guard_features("refund ORDER 1234!")
        >>> compare(a, b) is None, compare(a, guard_features("Refund order 1235"))
        (True, 'numbers differ')
    """
    if not isinstance(text, str):
        raise InvalidInputError("text", "must be a string", value=type(text).__name__)
    text = unicodedata.normalize("NFKC", text)
    folded = text.casefold()
    negations = len(_NEGATION.findall(folded))
    numbers = [_number(m.group()) for m in _NUMBER.finditer(text)]
    words: set[str] = set()
    entities: set[str] = set()
    for m in _WORD.finditer(text):
        token = m.group()
        low = token.casefold()
        words.add(low)
        if low in _NUMBER_WORDS:
            numbers.append(low)
            continue
        if token.isdigit():
            continue
        before = text[: m.start()].rstrip()
        initial = not before or before[-1] in ".!?:\n" or before[-1] in "\"'(["
        has_digit = any(c.isdigit() for c in token)
        inner_upper = any(c.isupper() for c in token[1:])
        if (
            (has_digit and any(c.isalpha() for c in token))
            or inner_upper
            or (token[0].isupper() and (not initial or low not in _COMMON))
        ):
            entities.add(low)
    return GuardFeatures(
        negations=negations,
        numbers=tuple(sorted(_h(n) for n in numbers)),
        entities=frozenset(_h(e) for e in entities),
        words=frozenset(_h(w) for w in words),
    )


def compare(a: GuardFeatures, b: GuardFeatures) -> str | None:
    """Why two prompts must not share an answer (``None`` when the guard lets them).

    Returns ``"negation differs"``, ``"numbers differ"`` or ``"named entities differ"``.
    """
    if a.negations != b.negations:
        return "negation differs"
    if a.numbers != b.numbers:
        return "numbers differ"
    if not (a.entities <= b.words and b.entities <= a.words):
        return "named entities differ"
    return None
