"""The semantic cache's guard: two similar prompts that differ in what matters are not the same question.

Embeddings rate "Is aspirin safe for children?" and "Is aspirin not safe for children?", or
"refund order 1234" and "refund order 1235", or "flights to Paris" and "flights to London"
as near-identical. :func:`guard_features` reads what an embedding blurs, and :func:`compare`
refuses a match when the two prompts differ in

* **negation**: each negation cue (English ``not``, ``no``, ``never``, ``n't``, ``without``...;
  German ``nicht``, ``kein``, ``nie``, ``ohne``; French ``ne``/``n'``, ``pas``, ``jamais``,
  ``sans``; Spanish, Italian, Portuguese ``no``/``non``/``não``, ``nunca``, ``sin``...; Dutch,
  Scandinavian, Polish, Russian and Chinese cues) is tied to the content word it negates (the next
  one, else the previous one). Both prompts must have as many cues, negating the same words:
  "with food and *not* on an empty stomach" is not "*not* with food and on an empty stomach".
  A contracted English negation (``isn't``, ``can't``) may negate either of the next two content
  words, so "Isn't aspirin safe?" still matches "Is aspirin not safe?". A negation moved to
  another clause negating the same word is moved too: each cue is also tied to the content words of
  its clause (up to punctuation or ``and`` / ``or`` / ``but``..., at most eight on each side of
  the cue), and two paired cues whose clauses each have a content word the other lacks differ
  ("Do not delete the backup, delete the logs" is not "Delete the backup, do not delete the
  logs"); a word added to or dropped from the clause is not;
* **numbers**: the sequence of numbers, in the order written (``2025-03-04`` is not
  ``2025-04-03``, "from 3 pm to 5 pm" not "from 5 pm to 3 pm"), digits as written but for
  thousands separators (``1,000`` = ``1000``; ``3.10`` is not ``3.1``, ``2.0`` not ``2``), with
  their sign (an en dash or a minus sign ``U+2212`` before the digits is a minus too), also
  when glued to letters (``v2.1`` is not ``v2.2``, ``python3.10`` not ``python3.12``), and English
  number words (``three``, ``dozen``, ``first``...);
* **symbols**: the multiset of the characters that are neither letters, digits nor whitespace
  (``+`` / ``*``, ``$`` / ``€``, ``>`` / ``<``, ``%``, ``#``, ``^``, ``~``, brackets...), leaving
  out sentence punctuation (``. , ! ? ; :``, quotes and apostrophes, ``¿ ¡ …``, dashes) and a
  hyphen inside a word (``e-mail``, ``GPT-4``): "What is 12 + 7?" is not "What is 12 * 7?";
* **named entities**: capitalised words (not at a sentence start unless uncommon), acronyms and
  words mixing letters and digits (``GPT4``, ``A100``); every entity of either prompt must
  occur, in any casing, in the other;
* **content words**: the words that are not function words (articles, pronouns, auxiliaries,
  prepositions, polite filler, in English, German, French, Spanish, Italian, Portuguese and
  Dutch), plurals and ``-ing``/``-ed`` forms folded together. Each prompt having a content word
  the other lacks is a *substitution* ("premium plan" / "basic plan", "cancel" / "renew",
  "travelling to france" / "to russia", "where" / "when"): refused. So is a content word standing,
  in one prompt, where the other has a word it lacks, even a function word ("7 *am*" / "7 *pm*",
  "plan *a*" / "plan *b*", "shipping to *us*" / "to *uk*"; the two prompts' words are aligned
  and only a one-for-one swap counts). Adding or dropping words ("please", "What is the way
  to...", "...to the app") is not;
* **word roles**: words swapped around ``from`` / ``to`` / ``into`` / ``than`` / ``vs`` (and
  ``von`` / ``nach``, ``de`` / ``vers``, ``desde`` / ``hacia``...): "from checking to savings" is
  not "from savings to checking", "usd to eur" not "eur to usd". A role word's whole span counts
  (its content words, numbers and one-letter names up to the next role word or punctuation), so
  "from account 1234 to account 5678" is not "from account 5678 to account 1234", nor "from
  folder A to folder B" "from folder B to folder A";
* **direction**: each prompt having a direction word the other lacks, of opposite sides
  (``to`` / ``from`` and the role words above, ``in`` / ``into`` / ``out``, ``before`` / ``after``,
  ``over`` / ``above`` / ``more`` / ``under`` / ``below`` / ``less``, ``up`` / ``down``,
  ``on`` / ``off``), or two verb particles (``up`` / ``in`` / ``out`` / ``on`` / ``off`` /
  ``down``, opposite or not): "migrate to Postgres" is not "migrate from Postgres", "log in" not
  "log out", "sign up" not "sign in".
  Adding or dropping one ("How to reset my password" / "How do I reset my password") is not;
* **code**: in code, case, indentation and a ``:`` carry meaning (``x[:2]`` / ``x[::2]``,
  ``Total`` / ``total``) that the embedder and the checks above fold away. A prompt with code in
  it matches only a prompt with the same code, as written (each line's trailing whitespace
  aside): the fenced blocks and backtick spans, or, when the prose around them still looks like
  code (an indented line, a call or an index such as ``print(`` / ``x[``, a bracket holding a
  ``:``, an operator such as ``==`` / ``::`` / ``+=``), the whole prompt: an answer about code
  is served only for the same code;

What it cannot catch, and what it costs:

* A qualifier added or dropped ("Is ibuprofen safe *for children*?"), a change spread over
  reworded text, or a swap of function words ("must I" / "may I") is served when the embedding
  scores it above the threshold: keep the threshold high for questions where that matters.
* Meaning carried by word order alone, beyond the role words and numbers above ("dog bites
  man"); and the order of numbers counts even where it does not matter ("3 times 5" / "5 times
  3" is a miss).
* Code the markers above do not spot (identifiers or an assignment in prose, "when x = 3", code
  without brackets, operators or indentation) is compared as prose: its case is folded.
* Negations it does not list (Japanese, Korean, Arabic, Hindi...); in scripts written without
  spaces a whole run of characters is one word, so any change in it is a substitution.
* Synonyms are known only for a few common verbs and nouns of support questions ("buy" /
  "purchase", "delete" / "remove", "change" / "update", "error" / "problem"...); any other
  swap ("shipping time" / "how long does shipping take") is a substitution and refused, like an
  antonym: sentence-embedding models rate "enable" / "disable" or "premium" / "basic" as close as
  true synonyms, so no threshold tells them apart. A refused paraphrase costs a model call,
  never a wrong answer.

The features are kept as truncated SHA-256 hashes of the words, so an entry stored with
hashed prompts keeps no plaintext and can still be guarded. An entry stored by an earlier
version of the guard (without word positions) is not trusted: :meth:`GuardFeatures.from_json`
refuses it and the cache treats it as a miss.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from .errors import InvalidInputError

__all__ = ["GuardFeatures", "compare", "guard_features"]

FORMAT = 5
"""The version of :meth:`GuardFeatures.to_json`; entries of another version are refused (version 2
read no symbols and folded ``3.10`` into ``3.1``; version 3 compared numbers in any order, dropped
a number's decimals after a letter, kept one word per role and no word sequence nor code; version 4
kept no negation's clause and read a dash before a number as no minus)."""

# A number anywhere, also glued to letters ("v2.1", "python3.10": the digits after the dot are
# what differs between two versions); a sign only where it cannot be a hyphen ("GPT-4"), also a
# dash standing for a minus (word processors turn "-5" into "\u20135", an en dash).
_MINUS_SIGNS = "\u2012\u2013\u2014\u2212\ufe63\uff0d"
"""Dashes read as a minus sign before a number (figure, en and em dash, minus, small and wide
hyphen-minus)."""
_AS_MINUS = str.maketrans(dict.fromkeys(_MINUS_SIGNS, "-"))
_NUMBER = re.compile(rf"(?:(?<![\w.])[-+{_MINUS_SIGNS}])?(?<!\d)\d+(?:[.,]\d+)*")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")
# A word; a dotted number, with any letters glued to it, is one word ("v2.1", "3.10").
_TOKEN = re.compile(r"\w*\d(?:[.,]\d+)+\w*|\w+(?:'\w+)*")
_BREAKS = frozenset(".,;:!?…。、\n")
"""Punctuation ending the span of a role word ("from A, to B")."""
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "`": "'"})
_SYMBOL = re.compile(r"[^\w\s]")
_SENTENCE_PUNCTUATION = frozenset(
    ".,!?;:'\"¿¡…“”„‟«»。、\u2018\u2019\u201a\u201b\u2039\u203a\u2013\u2014"  # (quotes, en and em dash)
)
"""Punctuation of prose, not of what is asked: left out of the symbols compared."""


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
    compare define calculate convert generate suggest recommend any some all every each
    isn aren wasn weren don doesn didn won wouldn shouldn couldn hasn haven hadn mustn needn"""
)
"""Words whose capital at a sentence start does not make them a named entity (nor "I" anywhere)."""

_NEGATIONS = _words(
    """not no never none nobody nothing neither nor nowhere without cannot cant dont doesnt didnt isnt
    arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt neednt
    nicht kein keine keinen keinem keiner keines nie niemals nichts niemand nirgends ohne weder
    ne pas jamais rien aucun aucune sans ni non
    nunca jamás nada nadie ningún ninguno ninguna sin tampoco
    mai niente nulla nessuno nessuna senza né
    não nenhum nenhuma ninguém sem nem
    niet geen nooit niets zonder
    inte ej ikke ingen aldrig aldri utan uden
    nie nigdy żaden bez
    не нет ни никогда ничего никто без
    unable impossible"""
)
_AUX_NEGATIONS = _words(
    """cannot cant dont doesnt didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent
    hadnt mustnt neednt unable impossible"""
)
"""Negations that may stand a word away from what they negate ("Isn't it safe?", "unable to log in")."""
_CJK_NEGATIONS = frozenset("不没沒无無非未别別勿莫")

_FUNCTION_WORDS = _COMMON - {"where", "when", "why", "who", "whom", "whose"} | _words(
    """me us him them mine yours ours theirs myself yourself itself also just only very really too
    much many such same own than get got im ive id youre would like want need able possible way
    der das den dem des ein eine einen einem einer eines ich du er sie es wir ihr mein meine meinen
    meinem meiner dein deine ihre unser unsere ist sind bin kann können könnte möchte wollen soll
    sollte muss und oder aber wenn dann im am auf für mit von zu zum zur bei aus nach über um wie was
    bitte ja auch noch schon gibt
    le la les un une des du de au aux je tu il elle nous vous ils elles mon ma mes ton ta tes sa ses
    notre votre leur leurs est sont suis ai avons avez ont et ou mais si que qui quoi comment ce cet
    cette ces en dans sur pour par avec peux peut pouvez veux voudrais plaît plait
    el los las unos unas yo tú él ella usted ustedes mi mis su sus es está están estoy soy puedo
    puede pueden quiero y o pero qué como cómo del al con por para se te lo nos hay favor
    lo gli uno è sono io mio mia di da della che può posso
    os um uma eu meu minha é são do dos das em na com pode
    het een mijn zijn en van voor met op hoe wat wil"""
)
"""Function words: swapping one for another ("How do I" / "How can I") is not a new question.
(Words that are also English content words, "die", "son", "war", "hat", "man", are left out.)"""
_WH_WORDS = ("where", "when", "why", "who", "whom", "whose")
"""Question words: content words (one swapped for another asks another thing) that still may stand
for "how" or "what" in a paraphrase."""

_CLAUSE_BREAKS = frozenset(
    f"f:{w}" for w in ("and", "or", "but", "und", "oder", "aber", "et", "ou", "mais", "pero")
)
"""Conjunctions ending a negation's clause, as :func:`_read` writes function words ("do not take
aspirin *and* take ibuprofen"); punctuation ends one too."""

_CLAUSE_REACH = 8
"""Content words of a negation's clause kept at most on each side of it."""
_CUT = "\x00cut"
"""Marks a clause with more content words than :data:`_CLAUSE_REACH` on a side: its kept words
shift when a word is added near the negation, so a cut clause is never told apart by them."""

_ROLES = {
    **dict.fromkeys(("from", "von", "aus", "depuis", "desde", "uit"), "src"),
    **dict.fromkeys(("to", "into", "onto", "toward", "towards", "nach", "vers", "hacia", "naar"), "dst"),
    **dict.fromkeys(("than", "vs", "versus"), "cmp"),
}
"""Words that give the next content word a role: a word swapped between roles changes the question."""

_DIRECTIONS: dict[str, tuple[str, ...]] = {
    **{w: ("to",) for w, role in _ROLES.items() if role == "dst" and w != "into"},
    **{w: ("from",) for w, role in _ROLES.items() if role == "src"},
    "into": ("to", "in"),
    **dict.fromkeys(("in", "inside"), ("in",)),
    **dict.fromkeys(("out", "outside"), ("out",)),
    "before": ("before",),
    "after": ("after",),
    **dict.fromkeys(("over", "above", "more", "greater", "higher"), ("over",)),
    **dict.fromkeys(("under", "below", "less", "fewer", "lower"), ("under",)),
    "up": ("up",),
    "down": ("down",),
    "on": ("on",),
    "off": ("off",),
}
"""Direction words, by the side they stand for: a prompt trading one side for the opposite one asks
the opposite thing ("migrate to" / "migrate from", "log in" / "log out", "before" / "after")."""
_OPPOSITES = (
    ("to", "from"),
    ("in", "out"),
    ("before", "after"),
    ("over", "under"),
    ("up", "down"),
    ("on", "off"),
)

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_CODE_MARKERS = re.compile(
    r"""\n[ \t]+\S                              # an indented line
    | (?<!\w)[A-Za-z_]\w*(?:\((?!e?s\))|\[)    # a call or an index: print(, x[ (not "file(s)")
    | ==|!=|<=|>=|=>|::|&&|\|\||:=|[-+*/%]=      # code operators (not "->": an arrow of prose)
    """,
    re.X,
)
"""What makes prose look like code (with a bracket holding a colon, :func:`_bracket_holds_colon`):
then the whole prompt is compared as written. (Linear on any text: a name is matched from a
word's start only.)"""
_REACH = 200
"""Characters at most from a bracket to its colon, and from the colon to the closing bracket."""
_CLOSERS = re.compile(r"[\]}\n]")
_BRACKET_OR_COLON = re.compile(r"[\[{:]")


def _bracket_holds_colon(text: str) -> bool:
    """Whether a ``[`` or ``{`` holds a ``:`` before its ``]`` or ``}`` on the same line (``x[::2]``,
    ``{"a": 1}``), with at most :data:`_REACH` characters before and after the colon.

    Linear (a regex matching the same backtracks ``_REACH`` squared steps per bracket): the colon
    stands at most ``_REACH + 1`` characters before the closing bracket and the opening one at most
    as far before the colon, so only that much of the text before each closing bracket is read.
    """
    start = 0  # where the text since the last closing bracket or line break starts
    for close in _CLOSERS.finditer(text):
        end = close.start()
        if text[end] != "\n":
            opened = -1  # the last bracket seen: the nearest one before a colon
            for m in _BRACKET_OR_COLON.finditer(text, max(start, end - 2 * _REACH - 2), end):
                if m.group() != ":":
                    opened = m.start()
                elif opened >= 0 and m.start() - opened <= _REACH + 1 and end - m.start() <= _REACH + 1:
                    return True
        start = end + 1
    return False


_HASH_CHARS = 16


def _h(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


_CUT_HASH = _h(_CUT)
"""A cut clause's mark, as :func:`guard_features` hashes it."""
_OPPOSITE_HASHES = tuple((_h(f"dir:{x}"), _h(f"dir:{y}")) for x, y in _OPPOSITES)
"""The features of each pair of opposite sides (as :func:`guard_features` hashes them)."""
_PARTICLE_HASHES = frozenset(_h(f"dir:{x}") for x in ("in", "out", "up", "down", "on", "off"))
"""Verb particles: "sign up" / "sign in", "set up" / "set off", "back up" / "back out" ask
different things, opposite or not."""


def _number(raw: str) -> str:
    """A number as written, but for a leading ``+``, a dash for a minus (an en dash before ``5`` is
    ``-5``) and thousands separators (``1,000`` = ``1000``): ``3.10`` is not ``3.1`` (a version),
    ``1.000`` not ``1``."""
    text = raw.lstrip("+").translate(_AS_MINUS)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    return text


def _symbols(text: str) -> list[str]:
    """The symbols of ``text`` (see the module doc): neither sentence punctuation nor a hyphen
    joining two words (``e-mail``, ``GPT-4``; between two digits it is a minus); a dash standing
    for a minus before a number is ``-`` (an en dash before 5 reads as ``-5``)."""
    found = []
    for m in _SYMBOL.finditer(text):
        c, i = m.group(), m.start()
        if (
            (c == "-" or c in _MINUS_SIGNS)
            and text[i + 1 : i + 2].isdigit()
            and (i == 0 or not (_WORD.match(text[i - 1]) or text[i - 1] == "."))
        ):
            found.append("-")  # a minus sign, however it is written (as _NUMBER reads it)
            continue
        if c in _SENTENCE_PUNCTUATION:
            continue
        if c == "-" and 0 < i < len(text) - 1:
            before, after = text[i - 1], text[i + 1]
            if _WORD.match(before) and _WORD.match(after) and not (before.isdigit() and after.isdigit()):
                continue
        found.append(c)
    return found


def _code(text: str) -> str | None:
    """The code of a prompt as written (see the module doc), or ``None`` when it has none."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = [m.group() for m in _FENCE.finditer(text)]
    prose = _FENCE.sub("\n", text)
    parts += [m.group() for m in _INLINE_CODE.finditer(prose)]
    prose = _INLINE_CODE.sub(" ", prose)
    if _CODE_MARKERS.search(prose) or _bracket_holds_colon(prose):
        parts = [text]  # code in the prose itself: where it ends is unknown, so all of it
    if not parts:
        return None
    # Trailing whitespace and blank lines around a part are no code; indentation and case are.
    return "\0".join("\n".join(line.rstrip() for line in p.split("\n")).strip("\n") for p in parts)


def _stem(word: str) -> str:
    """Fold plurals, ``-ing`` / ``-ed`` forms and a final ``e`` together (crudely; both prompts alike)."""
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeious":
                word = word[:-1]  # resetting -> reset, cancelled -> cancel
            return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    return word[:-1] if word.endswith("e") and len(word) >= 5 else word  # update(d) -> updat


_SYNONYMS = {
    _stem(word): _stem(group.split()[0])
    for group in (
        "buy purchase",
        "delete remove erase",
        "change update modify edit",
        "contact reach",
        "ship deliver",
        "shipping delivery",
        "get receive obtain",
        "start begin",
        "help assist",
        "fix repair resolve solve",
        "show display view see",
        "find locate",
        "error problem issue",
        "choose pick select",
        "price cost",
        "invoice bill",
        "enable activate",
        "disable deactivate",
    )
    for word in group.split()
}
"""A few common synonyms of support questions, folded together: swapping them is a paraphrase."""

_NOT_SWAPPED_IN_PLACE = frozenset(_h(_SYNONYMS.get(_stem(w), _stem(w))) for w in (*_WH_WORDS, *_DIRECTIONS))
"""Content words (as :func:`guard_features` hashes them) left out of the one-for-one swaps of
:func:`compare`: question words and direction words (``up``, ``off``...), checked on their own."""


_ELISIONS = ("l'", "d'", "j'", "qu'", "s'", "c'", "m'", "t'")
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m")


def _split(token: str) -> tuple[bool, bool, str]:
    """A token as ``(negation, contracted English negation, the word left)``."""
    if token.endswith("n't"):
        return True, True, ""
    if token.startswith("n'"):  # French: n'est, n'ai
        return True, False, token[2:]
    for prefix in _ELISIONS:
        if token.startswith(prefix) and len(token) > len(prefix):
            token = token[len(prefix) :]
            break
    for suffix in _CLITICS:
        if token.endswith(suffix):
            token = token[: -len(suffix)]
            break
    if token in _NEGATIONS:
        return True, token in _AUX_NEGATIONS, ""
    return False, False, token


@dataclass(slots=True)
class _Reading:
    """What :func:`_read` finds in a folded prompt (plain words; :func:`guard_features` hashes them)."""

    negations: list[tuple[str, ...]]
    clauses: list[tuple[str, ...]]
    """Per negation, the content words of its clause."""
    content: list[str]
    roles: set[tuple[str, str]]
    directions: list[str]
    sequence: list[str]
    """Every word in order, as a form: a content word's stem, ``n:`` and a number, ``f:`` and a
    function word, ``neg`` for a negation cue."""


_Token = tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]
"""What one token adds to :func:`_read`'s stream, word sequence and direction sides."""


def _read_token(token: str) -> _Token:
    """The stream items, the word-sequence forms and the direction sides of one folded token."""
    items = [("neg", "") for c in token if c in _CJK_NEGATIONS]
    forms = []
    negation, aux, word = _split(token)
    if negation:
        items.append(("neg", "aux" if aux else ""))
        forms.append("neg")
    if not word:
        return tuple(items), tuple(forms), ()
    sides = _DIRECTIONS.get(word, ())
    if word in _ROLES:
        items.append(("role", _ROLES[word]))
        forms.append(f"f:{word}")
        return tuple(items), tuple(forms), sides
    if word in _NUMBER_WORDS:
        item = ("num", f"n:{word}")
    elif word.isdigit() or _DIGITS.fullmatch(word):
        item = ("num", f"n:{_number(word)}")
    elif word in _FUNCTION_WORDS:
        # A one-letter word may be a name ("folder A", "plan a"): it counts in a role's span.
        item = ("letter" if len(word) == 1 else "f", f"f:{word}")
    else:
        stem = _stem(word)
        item = ("w", _SYNONYMS.get(stem, stem))
    items.append(item)
    forms.append(item[1])
    return tuple(items), tuple(forms), sides


def _read(folded: str) -> _Reading:
    """Negations (each with the content words it may negate), content words, word roles (each role
    word with every term of its span), the sides of its direction words and its word sequence.

    Items of the token stream: a content word, a number, a one-letter function word ("a", "i"),
    another function word, a negation marker, a role marker, a break (punctuation).
    """
    stream: list[tuple[str, str]] = []  # (kind, form); kinds: w num letter f neg role stop
    sequence: list[str] = []
    directions: list[str] = []
    end = 0
    known: dict[str, _Token] = {}  # (a prompt repeats its words: each distinct one is read once)
    for m in _TOKEN.finditer(folded):
        start = m.start()
        if start > end and not _BREAKS.isdisjoint(folded[end:start]):
            stream.append(("stop", ""))
        end = m.end()
        token = m.group()
        read = known.get(token)
        if read is None:
            read = known[token] = _read_token(token)
        stream.extend(read[0])
        sequence.extend(read[1])
        directions.extend(read[2])
    content = [v for k, v in stream if k == "w"]
    # Where each content word stands in the stream: a negation finds the next ones (or the
    # previous one) by bisection, never by reading on to the end of a long run of negations.
    at = [j for j, (kind, _) in enumerate(stream) if kind == "w"]
    # The clause of each item: up to punctuation or a conjunction ("and", "or"...), read once.
    clause_of: list[int] = []
    clause = 0
    for kind, value in stream:
        if kind == "stop" or value in _CLAUSE_BREAKS:
            clause += 1
        clause_of.append(clause)
    negations: list[tuple[str, ...]] = []
    clauses: list[tuple[str, ...]] = []
    roles: set[tuple[str, str]] = set()
    for i, (kind, value) in enumerate(stream):
        if kind == "role":
            roles.update((value, term) for term in _span(stream, i))
        elif kind == "neg":
            k = bisect_right(at, i)  # the content words from at[k] on stand after the negation
            negated = [stream[j][1] for j in at[k : k + (2 if value == "aux" else 1)]]
            if not negated and k:
                negated = [stream[at[k - 1]][1]]  # none after it: the one before it
            negations.append(tuple(sorted(negated)))
            # Its clause's content words, as many as _CLAUSE_REACH on each side of it: a long
            # clause of many negations is not read (nor kept) once per negation.
            here = clause_of[i]
            low, high = max(k - _CLAUSE_REACH, 0), k + _CLAUSE_REACH
            near = [stream[j][1] for j in at[low:high] if clause_of[j] == here]
            cut = (low > 0 and clause_of[at[low - 1]] == here) or (
                high < len(at) and clause_of[at[high]] == here
            )
            clauses.append((*near, _CUT) if cut else tuple(near))
    return _Reading(negations, clauses, content, roles, directions, sequence)


def _span(stream: Sequence[tuple[str, str]], i: int) -> list[str]:
    """The terms a role word at ``i`` governs: its words and numbers up to the next role word or
    punctuation ("from account 1234", "to folder B"), function words included: a place may be
    spelled like one ("from NYC to LA": ``la`` is an article elsewhere)."""
    terms = []
    for j in range(i + 1, len(stream)):  # (no slice: spans are disjoint, reading them all is linear)
        kind, value = stream[j]
        if kind in ("role", "stop"):
            break
        if kind in ("w", "num", "letter", "f"):
            terms.append(value)
    return terms


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardFeatures:
    """What the guard compares, hashed: negations, numbers, symbols, entities, words, content words,
    roles, directions, the word sequence and the code."""

    negations: tuple[tuple[str, ...], ...]
    """Per negation cue, hashes of the content words it may negate (sorted)."""
    clauses: tuple[tuple[str, ...], ...]
    """Per negation cue (in the order of :attr:`negations`), hashes of the content words of its
    clause (sorted, distinct)."""
    numbers: tuple[str, ...]
    """Hashes of its numbers, in the order written (a sequence: ``3 ... 5`` is not ``5 ... 3``)."""
    symbols: tuple[str, ...]
    """Hashes of its symbols (not sentence punctuation), sorted (a multiset)."""
    entities: frozenset[str]
    """Hashes of its named entities (casefolded)."""
    words: frozenset[str]
    """Hashes of all its words (casefolded)."""
    content: tuple[str, ...]
    """Hashes of its content words (folded, see :func:`guard_features`), sorted (a multiset)."""
    roles: frozenset[tuple[str, str]]
    """``(role, term hash)``: each term (content word, number, one-letter word) of the span of a
    ``from`` (``src``), ``to`` (``dst``), ``than`` (``cmp``)."""
    directions: tuple[str, ...]
    """Hashes of the sides of its direction words (``to``, ``from``, ``before``...), sorted (a
    multiset)."""
    sequence: tuple[str, ...]
    """Hashes of all its words in order (content words folded, numbers as written, function words,
    negation cues): where a word stands, for the one-for-one swaps of :func:`compare`."""
    code: str | None
    """Hash of its code as written (see the module doc), ``None`` when it has none."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for a cache entry (the sequence as indexes into its sorted distinct hashes)."""
        forms = sorted(set(self.sequence))
        index = {h: i for i, h in enumerate(forms)}
        return {
            "v": FORMAT,
            "neg": [list(n) for n in self.negations],
            "clauses": [list(c) for c in self.clauses],
            "num": list(self.numbers),
            "sym": list(self.symbols),
            "ent": sorted(self.entities),
            "words": sorted(self.words),
            "content": list(self.content),
            "roles": sorted([role, word] for role, word in self.roles),
            "dir": list(self.directions),
            "forms": forms,
            "seq": [index[h] for h in self.sequence],
            "code": self.code,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GuardFeatures:
        """Read :meth:`to_json` back.

        Raises:
            InvalidInputError: Not guard features, or features of an earlier version of the guard.
        """
        if not isinstance(data, Mapping) or data.get("v") != FORMAT:
            raise InvalidInputError(
                "guard",
                f"is not guard features of version {FORMAT}",
                fix="entries stored by an earlier version are not trusted: they expire with their TTL",
            )
        try:
            neg, num, ent, words = data["neg"], data["num"], data["ent"], data["words"]
            content, roles, sym, dirs = data["content"], data["roles"], data["sym"], data["dir"]
            forms, seq, code = data["forms"], data["seq"], data["code"]
            clauses = data["clauses"]
        except KeyError as e:
            raise InvalidInputError("guard", f"is missing {e.args[0]!r}") from e
        # The two lists of lists are checked before they are unpacked: a stored entry of any
        # other shape (null, a number, a string) is no guard features, never a TypeError.
        if not (isinstance(neg, list) and isinstance(roles, list) and isinstance(clauses, list)):
            raise InvalidInputError("guard", "is not guard features")
        if len(clauses) != len(neg):
            raise InvalidInputError("guard", "must have one clause per negation")
        lists = (num, ent, words, content, sym, dirs, forms, *neg, *roles, *clauses)
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists):
            raise InvalidInputError("guard", "is not guard features")
        if not all(len(r) == 2 for r in roles):
            raise InvalidInputError("guard", "roles must be [role, word] pairs")
        if not (
            isinstance(seq, list)
            and all(type(i) is int and 0 <= i < len(forms) for i in seq)
            and (code is None or isinstance(code, str))
        ):
            raise InvalidInputError("guard", "is not guard features")
        return cls(
            negations=tuple(tuple(n) for n in neg),
            clauses=tuple(tuple(c) for c in clauses),
            numbers=tuple(num),
            symbols=tuple(sym),
            entities=frozenset(ent),
            words=frozenset(words),
            content=tuple(content),
            roles=frozenset((r[0], r[1]) for r in roles),
            directions=tuple(dirs),
            sequence=tuple(forms[i] for i in seq),
            code=code,
        )


def guard_features(text: str) -> GuardFeatures:
    """Read the negations, numbers, symbols, named entities, content words, word roles, direction
    words, word sequence and code of a prompt (hashed).

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
    code = _code(text)  # (before backticks are read as apostrophes)
    text = text.translate(_APOSTROPHES)
    reading = _read(text.casefold())
    numbers = [(m.start(), _number(m.group())) for m in _NUMBER.finditer(text)]
    words: set[str] = set()
    entities: set[str] = set()
    known: dict[str, tuple[str, int]] = {}  # (each distinct word is judged once)
    for m in _WORD.finditer(text):
        token = m.group()
        judged = known.get(token)
        if judged is None:
            judged = known[token] = _judge(token)
        low, kind = judged
        words.add(low)
        if kind == _NUMBER_WORD:
            numbers.append((m.start(), low))
        elif kind == _ENTITY:
            entities.add(low)
        elif kind == _ENTITY_BUT_INITIAL:
            j = m.start() - 1  # the last character before the word but whitespace (no slice: linear)
            while j >= 0 and text[j].isspace():
                j -= 1
            if not (j < 0 or text[j] in ".!?:\n¿¡" or text[j] in "\"'(["):
                entities.add(low)
    numbers.sort()  # (in the order written: digits and number words interleaved)
    hashes: dict[str, str] = {}

    def h(token: str) -> str:
        found = hashes.get(token)
        if found is None:
            found = hashes[token] = _h(token)
        return found

    pairs: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for n, c in zip(reading.negations, reading.clauses, strict=True):
        if (n, c) not in pairs:
            pairs[n, c] = (tuple(sorted(h(w) for w in n)), tuple(sorted({h(w) for w in c})))
    negations = sorted(pairs[key] for key in zip(reading.negations, reading.clauses, strict=True))
    return GuardFeatures(
        negations=tuple(n for n, _ in negations),
        clauses=tuple(c for _, c in negations),
        numbers=tuple(h(n) for _, n in numbers),
        symbols=tuple(sorted(h(c) for c in _symbols(text))),
        entities=frozenset(h(e) for e in entities),
        words=frozenset(h(w) for w in words),
        content=tuple(sorted(h(w) for w in reading.content)),
        roles=frozenset((role, h(w)) for role, w in reading.roles),
        directions=tuple(sorted(h(f"dir:{side}") for side in reading.directions)),
        sequence=tuple(h(w) for w in reading.sequence),
        code=None if code is None else _h(f"code:{code}"),
    )


_NUMBER_WORD, _ENTITY, _ENTITY_BUT_INITIAL, _WORD_ONLY = range(4)


def _judge(token: str) -> tuple[str, int]:
    """A word of the prompt (as written) folded, and what it is: a number word, a named entity, a
    named entity unless it starts a sentence (a capitalised common word, "What"), or only a word."""
    low = token.casefold()
    if low in _NUMBER_WORDS:
        return low, _NUMBER_WORD
    if token.isdigit():
        return low, _WORD_ONLY
    if (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)) or any(
        c.isupper() for c in token[1:]
    ):
        return low, _ENTITY
    if token[0].isupper() and token != "I":
        return low, _ENTITY_BUT_INITIAL if low in _COMMON else _ENTITY
    return low, _WORD_ONLY


def compare(a: GuardFeatures, b: GuardFeatures) -> str | None:
    """Why two prompts must not share an answer (``None`` when the guard lets them).

    Returns ``"negation differs"``, ``"numbers differ"``, ``"symbols differ"``,
    ``"named entities differ"``, ``"content words differ"``, ``"word roles differ"``,
    ``"direction differs"`` or ``"code differs"``.

    Raises:
        InvalidInputError: ``a`` or ``b`` is not :class:`GuardFeatures`.
    """
    for field, features in (("a", a), ("b", b)):
        if not isinstance(features, GuardFeatures):
            raise InvalidInputError(
                field,
                "must be GuardFeatures",
                value=type(features).__name__,
                fix="pass guard_features(text) or GuardFeatures.from_json(data)",
            )
    if not _same_negations(a, b):
        return "negation differs"
    if a.numbers != b.numbers:
        return "numbers differ"
    if a.symbols != b.symbols:
        return "symbols differ"
    if not (a.entities <= b.words and b.entities <= a.words):
        return "named entities differ"
    mine, theirs = Counter(a.content), Counter(b.content)
    if (mine - theirs and theirs - mine) or _swapped_in_place(a, b):
        return "content words differ"
    if _roles_swapped(a, b):
        return "word roles differ"
    if _direction_flipped(a.directions, b.directions):
        return "direction differs"
    if a.code != b.code:  # (last: any other difference is the better reason)
        return "code differs"
    return None


def _same_negations(a: GuardFeatures, b: GuardFeatures) -> bool:
    """As many negations, each paired with one of the other prompt negating a same word, in a
    clause that is not another one (each clause having a content word the other lacks)."""
    if len(a.negations) != len(b.negations):
        return False
    # The negations alike in both (word and clause) first, the others paired greedily: one alike
    # is never taken by a negation it would fit less well (nor read again).
    mine = Counter(zip(a.negations, a.clauses, strict=True))
    theirs = Counter(zip(b.negations, b.clauses, strict=True))
    alike = mine & theirs
    left = list((theirs - alike).elements())
    tried = 0
    for negated, clause in (mine - alike).elements():
        for j, (other, other_clause) in enumerate(left):
            if _overlap(negated, other) and not _both_lack(clause, other_clause):
                del left[j]
                break
        else:
            return False
        tried += j + 1
        if tried > _MAX_PAIRED:
            return False  # too many negations unlike one another to pair cheaply: not served
    return True


_MAX_PAIRED = 100_000
"""Pairs of unlike negations tried at most (the greedy pairing is quadratic): beyond it, prompts
with so many negations reworded or moved are not served as one another."""


def _both_lack(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Each of ``a`` and ``b`` having a word the other lacks (never for a clause cut at
    :data:`_CLAUSE_REACH`: a word added near its negation pushes a far one out of what is kept)."""
    mine, theirs = set(a), set(b)
    if _CUT_HASH in mine or _CUT_HASH in theirs:
        return False
    return bool(mine - theirs and theirs - mine)


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return bool(set(a) & set(b)) or (not a and not b)


def _swapped_in_place(a: GuardFeatures, b: GuardFeatures) -> bool:
    """A content word of one prompt standing where the other has a word the first lacks, even a
    function word ("7 am" / "7 pm", "plan a" / "plan b", "to us" / "to uk").

    The word sequences are aligned (:class:`difflib.SequenceMatcher`); only a replaced run of
    as many words on both sides pairs words one for one, so rewording ("How do I" / "What is the
    way to") and added or dropped words are not swaps. Two function words swapped ("must" /
    "may") are not either (see the module doc), nor a question word for a function word ("How do
    I" / "Where can I track my order?"): two question words swapped are a content-word swap. Nor
    are direction words ("up" / "in"): the direction check tells them apart.
    """
    in_a, in_b = set(a.sequence), set(b.sequence)
    content = (set(a.content) | set(b.content)) - _NOT_SWAPPED_IN_PLACE
    sa, sb = _differing_middle(a.sequence, b.sequence)
    if len(sa) > _MAX_ALIGNED or len(sb) > _MAX_ALIGNED:
        return True  # too far apart to align cheaply (quadratic): not served, as the guard errs
    matcher = SequenceMatcher(None, sa, sb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace" or i2 - i1 != j2 - j1:
            continue
        for x, y in zip(sa[i1:i2], sb[j1:j2], strict=True):
            if x not in in_b and y not in in_a and (x in content or y in content):
                return True
    return False


_MAX_ALIGNED = 2_000
"""Words of two prompts' differing middles aligned at most (the alignment is quadratic): beyond
it they differ too much to be served as one another anyway."""


def _differing_middle(a: Sequence[str], b: Sequence[str]) -> tuple[Sequence[str], Sequence[str]]:
    """``a`` and ``b`` without the words they start and end with alike (linear): two long prompts
    differing in one place align in that place alone."""
    start, limit = 0, min(len(a), len(b))
    while start < limit and a[start] == b[start]:
        start += 1
    end = 0
    while end < limit - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return a[start : len(a) - end], b[start : len(b) - end]


def _roles_swapped(a: GuardFeatures, b: GuardFeatures) -> bool:
    """A term in a role in one prompt, present but not in that role in the other, and vice versa
    (the terms of a role's span: "from account 1234" / "from account 5678")."""
    in_a, in_b = set(a.sequence) | set(a.content), set(b.sequence) | set(b.content)
    for role in {r for r, _ in a.roles | b.roles}:
        ra = {w for r, w in a.roles if r == role}
        rb = {w for r, w in b.roles if r == role}
        if (ra - rb) & in_b and (rb - ra) & in_a:
            return True
    return False


def _direction_flipped(a: Sequence[str], b: Sequence[str]) -> bool:
    """Each prompt having a direction word the other lacks, of opposite sides (``to`` / ``from``)
    or both verb particles (``up`` / ``in`` / ``out`` / ``on`` / ``off`` / ``down``)."""
    mine, theirs = Counter(a), Counter(b)
    if any(mine[h] > theirs[h] for h in _PARTICLE_HASHES) and any(
        theirs[h] > mine[h] for h in _PARTICLE_HASHES
    ):
        return True
    for hx, hy in _OPPOSITE_HASHES:
        if (mine[hx] > theirs[hx] and theirs[hy] > mine[hy]) or (
            mine[hy] > theirs[hy] and theirs[hx] > mine[hx]
        ):
            return True
    return False
