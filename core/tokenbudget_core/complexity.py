"""How hard a request is: the classifier that picks a model tier.

A :class:`ComplexityClassifier` maps a prompt to one of its tiers (ordered cheapest to premium)
with a score in ``[0, 1]`` and a human-readable reason. :class:`HeuristicClassifier`, the
default, needs nothing fitted: a base score, plus the weights of the :class:`Rule` patterns the
prompt matches (lookups and rewrites push down; analysis, design, debugging, implementation and
multi-part requests push up), plus a length term, cut into tiers at ``thresholds``. The learned
alternative, :class:`~tokenbudget_core.learned_classifier.NearestNeighbourClassifier`, is fitted
from labelled examples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .encodings import get_encoding
from .errors import InvalidInputError

__all__ = [
    "DEFAULT_RULES",
    "Classification",
    "ComplexityClassifier",
    "HeuristicClassifier",
    "Rule",
    "check_tiers",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Classification:
    """What a classifier decided for one prompt."""

    tier: str
    """One of the classifier's tiers (ordered cheapest -> premium)."""
    score: float
    """Complexity in ``[0, 1]``."""
    reason: str
    """The rule(s) or neighbours that decided, human-readable."""
    rules: tuple[str, ...] = field(default=())
    """Names of the rules that fired (heuristic), or ``("knn",)`` for the learned classifier."""


@runtime_checkable
class ComplexityClassifier(Protocol):
    """The injection seam: anything that maps a prompt to a tier."""

    tiers: tuple[str, ...]
    """Tier names, ordered cheapest -> premium."""

    def classify(self, text: str) -> Classification:
        """The tier for ``text``."""
        ...

    async def aclassify(self, text: str) -> Classification:
        """Async twin of :meth:`classify`."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One configurable heuristic signal: a regex and how far a match moves the score.

    Args:
        name: Shown in reasons (``analyze``, ``lookup``...).
        pattern: A regular expression, matched case-insensitively anywhere in the prompt.
        weight: Added to the score on a match: positive pushes toward premium, negative toward cheap.

    Raises:
        InvalidInputError: An empty name, a pattern that does not compile, a weight that is not
            a finite number in ``[-1, 1]``.

    Example:
        >>> Rule(name="legal", pattern=r"\\b(contract|liability|indemnif)", weight=0.3).weight
        0.3
    """

    name: str
    pattern: str
    weight: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidInputError("rule.name", "must be a non-empty string", value=self.name)
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidInputError(
                f"rules[{self.name!r}].pattern", "must be a non-empty regex", value=self.pattern
            )
        try:
            re.compile(self.pattern)
        except (re.error, OverflowError, RecursionError) as e:  # (a repeat count too large overflows)
            raise InvalidInputError(
                f"rules[{self.name!r}].pattern", f"is not a valid regular expression: {e}", value=self.pattern
            ) from e
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not -1 <= w <= 1:
            raise InvalidInputError(f"rules[{self.name!r}].weight", "must be a number in [-1, 1]", value=w)


DEFAULT_RULES: tuple[Rule, ...] = (
    # Lookups and rewrites (translate, proofread, extract...): a small model does them well,
    # however long the pasted text. Tasks that produce something push toward the middle;
    # analysis, design, debugging, open-ended "how would you / what should we" questions about
    # a real situation with figures push toward premium.
    Rule(
        name="lookup",
        pattern=r"^\W*(what(?:'s| is| are| was| does)|who (?:is|was|wrote|painted)|when (?:is|was|did|does)"
        r"|where (?:is|can|do)|define|definition of|how (?:many|much|long|old|do i)|is there|can i|list"
        r"|name|which)\b",
        weight=-0.15,
    ),
    Rule(
        name="rewrite",
        pattern=r"\b(translate|rephrase|reword|paraphrase|proofread|fix (?:any |the )?(?:typos|grammar"
        r"|spelling)"
        r"|correct (?:the )?grammar|shorten|tl;?dr|convert (?:this|these|it|the)|format (?:this|these|it"
        r"|as)|lowercase|uppercase"
        r"|extract (?:every|the|all)|capitali[sz]e|spell(?:ed)?|synonym|rhymes?|give (?:this|it) a title"
        r"|bullet points"
        r"|to (?:french|spanish|german|english|japanese|italian))\b",
        weight=-0.25,
    ),
    Rule(
        name="task",
        pattern=r"\b(write|draft|create|generate|explain|describe|compose|suggest|calculate|compute"
        r"|summari[sz]e"
        r"|outline|interpret|turn (?:these|this) into|reply to|give me a (?:\w+ )?plan)\b",
        weight=0.15,
    ),
    Rule(
        name="analyze",
        pattern=r"\b(analy[sz]e|analysis|evaluate|assess|critique|critically|compare|reconcile|trade-?offs?"
        r"|pros and cons|implications?|root cause|investigat\w+|diagnos\w+|decompose|second-order)\b",
        weight=0.2,
    ),
    Rule(
        name="design",
        pattern=r"\b(design|architect(?:ure)?|strategy|roadmap|migrat\w+|propose|threat model|schema|pipeline"
        r"|program|framework|governance|prioriti[sz]ed)\b",
        weight=0.2,
    ),
    Rule(
        name="debug",
        pattern=r"\b(debug|traceback|exception|segfault|race condition|deadlock|leaks?|crash\w*"
        r"|doesn'?t work|not working|fails?|failing|flaky|bug|hangs?|double-\w+|twice)\b",
        weight=0.15,
    ),
    Rule(
        name="implement",
        pattern=r"\b(implement|refactor|optimi[sz]e|redesign|build|concurren\w+|algorithm|lock-free|at scale"
        r"|distributed|shard\w*|replica\w*|consisten\w+)\b",
        weight=0.15,
    ),
    Rule(
        name="open_ended",
        pattern=r"\b(how would you|how should (?:we|i)|what should (?:we|i|our)|walk (?:me )?through"
        r"|approach|what'?s going on|what could|why (?:does|is|did|would|might|do|can'?t)|figure out"
        r"|help me (?:figure|decide)"
        r"|should (?:i|we)|tell me what'?s wrong|which (?:one|of)|is (?:this|it) (?:acceptable|enough"
        r"|a good)|argue|how do we)\b",
        weight=0.2,
    ),
    Rule(
        name="situation",
        pattern=r"\b(our|we'?re|we have|we need|my team|in production|customers)\b",
        weight=0.1,
    ),
    Rule(
        name="quantified",
        # A run of digits, commas and dots holding a digit, then a unit. Tried only where such a
        # run starts, with possessive repeats, so a long run (a JSON array of numbers) is read
        # once rather than once per digit: linear, and true for the same texts as
        # ``\d[\d,.]*\s?(?:...)``.
        pattern=r"(?<![\d,.])[,.]*+\d[\d,.]*+\s?(?:%|k\b|ms\b|mb\b|gb\b|x\b|million|billion|writes|requests"
        r"|users|customers|engineers|teams|servers|services|endpoints|skus|tests|buildings|clinics)",
        weight=0.1,
    ),
    Rule(
        name="reasoning",
        pattern=r"\b(prove|derive|step[- ]by[- ]step|justify|reason about|edge cases|formal|rigorous"
        r"|counter-?example|both sides|sufficient)\b",
        weight=0.15,
    ),
    Rule(
        name="long_form",
        # ``\b\d[\d,]*[- ](?:words?|pages?)``, tried once per run of digits and commas (which
        # must hold a digit at a word boundary) rather than once per digit in it.
        pattern=r"\b(?:chapter|essay|proposal|guide|postmortem|plan)\b"
        r"|(?<![\d,])(?:\b\d|\d*+,++\d)[\d,]*+[- ](?:words?|pages?)\b",
        weight=0.15,
    ),
    Rule(
        name="code",
        # SELECT ... FROM on one line, tried from the line's first SELECT only (``(?<![^\n])`` is
        # a line start), so a line of many SELECTs is not rescanned from each of them.
        pattern=r"```|\bdef \w+\(|\bclass \w+|(?<![^\n])(?:(?!\bSELECT\b).)*+\bSELECT\b.+\bFROM\b|=>"
        r"|\bfunc \w+\(",
        weight=0.05,
    ),
    Rule(
        name="multi_part",
        # Three or more list items in a row, blank lines allowed between them. The first item
        # starts on its marker's own line (``[^\S\n]*``, not ``\s*``, which would rescan every
        # blank line before it from each of them) and every repeat is possessive: linear, and
        # true for the same texts as ``(?m)(?:^\s*(?:\d+[.)]|[-*•])\s+\S.*\n){3,}``.
        pattern=r"(?m)^[^\S\n]*+(?:\d++[.)]|[-*•])\s++\S.*+\n(?:\s*+(?:\d++[.)]|[-*•])\s++\S.*+\n){2,}",
        weight=0.1,
    ),
)


def check_tiers(tiers: object, field_name: str = "tiers") -> tuple[str, ...]:
    """Validate tier names: a non-empty sequence of distinct non-empty strings.

    Raises:
        InvalidInputError: Empty, not strings, or repeated.
    """
    if isinstance(tiers, str) or not isinstance(tiers, Sequence) or not tiers:
        raise InvalidInputError(
            field_name,
            "must be a non-empty sequence of tier names, cheapest first",
            value=tiers,
            fix='e.g. ("small", "medium", "large")',
        )
    out = tuple(tiers)
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t:
            raise InvalidInputError(f"{field_name}[{i}]", "a tier name must be a non-empty string", value=t)
    if len(set(out)) != len(out):
        raise InvalidInputError(field_name, "tier names must be distinct", value=out)
    return out


def _default_thresholds(n: int) -> tuple[float, ...]:
    if n == 3:
        return (0.4, 0.6)
    return tuple(round(i / n, 6) for i in range(1, n))


class HeuristicClassifier:
    """The default classifier: rules, length and thresholds, nothing to fit.

    ``score = base + sum(weights of matching rules) + length term``, clamped to ``[0, 1]``; the
    length term grows with the prompt's tokens up to ``length_weight`` at ``long_prompt_tokens``.
    The tier is the first whose threshold the score stays below.

    Args:
        tiers: Tier names, cheapest first.
        rules: The signals (default :data:`DEFAULT_RULES`); pass your own list to replace them,
            or ``[*DEFAULT_RULES, Rule(...)]`` to add to them.
        thresholds: ``len(tiers) - 1`` increasing cut points in ``(0, 1)``: a score below
            ``thresholds[0]`` goes to the first tier, and so on (default ``(0.4, 0.6)`` for three
            tiers, evenly spaced otherwise).
        long_prompt_tokens: Prompt length (o200k tokens) at which the length term is full.
        base: Score of a prompt that matches nothing and is short.
        length_weight: The most the length term adds.

    Raises:
        InvalidInputError: Bad tiers, rules, thresholds or numbers (named).

    Example:
        >>> c = HeuristicClassifier()
        >>> c.classify("What is a token?").tier
        'small'
        >>> c.classify("Design a sharded rate limiter and analyze its failure modes.").tier
        'large'
    """

    def __init__(
        self,
        *,
        tiers: Sequence[str] = ("small", "medium", "large"),
        rules: Sequence[Rule] | None = None,
        thresholds: Sequence[float] | None = None,
        long_prompt_tokens: int = 400,
        base: float = 0.3,
        length_weight: float = 0.25,
    ) -> None:
        self.tiers = check_tiers(tiers)
        self.rules = tuple(DEFAULT_RULES if rules is None else self._check_rules(rules))
        cuts = _default_thresholds(len(self.tiers)) if thresholds is None else thresholds
        self.thresholds = self._check_thresholds(cuts)
        if (
            isinstance(long_prompt_tokens, bool)
            or not isinstance(long_prompt_tokens, int)
            or long_prompt_tokens < 1
        ):
            raise InvalidInputError(
                "long_prompt_tokens", "must be a positive integer", value=long_prompt_tokens
            )
        self.long_prompt_tokens = long_prompt_tokens
        for name, v in (("base", base), ("length_weight", length_weight)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise InvalidInputError(name, "must be a number in [0, 1]", value=v)
        self.base, self.length_weight = float(base), float(length_weight)
        self._compiled = [(r, re.compile(r.pattern, re.IGNORECASE)) for r in self.rules]
        self._enc = get_encoding("o200k_base")

    @staticmethod
    def _check_rules(rules: object) -> list[Rule]:
        if isinstance(rules, str) or not isinstance(rules, Sequence):
            raise InvalidInputError("rules", "must be a list of Rule objects", value=rules)
        for i, r in enumerate(rules):
            if not isinstance(r, Rule):
                raise InvalidInputError(
                    f"rules[{i}]", "must be a Rule", value=r, fix="Rule(name=..., pattern=..., weight=...)"
                )
        return list(rules)

    def _check_thresholds(self, cuts: object) -> tuple[float, ...]:
        need = len(self.tiers) - 1
        if isinstance(cuts, str) or not isinstance(cuts, Sequence) or len(cuts) != need:
            raise InvalidInputError(
                "thresholds",
                f"{len(self.tiers)} tiers need {need} increasing cut points in (0, 1)",
                value=cuts,
            )
        out: list[float] = []
        for i, c in enumerate(cuts):
            if isinstance(c, bool) or not isinstance(c, int | float) or not 0 < c < 1:
                raise InvalidInputError(f"thresholds[{i}]", "must be a number in (0, 1)", value=c)
            if out and c <= out[-1]:
                raise InvalidInputError("thresholds", "cut points must increase", value=tuple(cuts))
            out.append(float(c))
        return tuple(out)

    def classify(self, text: str) -> Classification:
        """The tier for ``text``, with the rules that fired in the reason.

        Raises:
            InvalidInputError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise InvalidInputError("text", f"must be a string, got {type(text).__name__}", value=text)
        score = self.base
        fired: list[str] = []
        for rule, rx in self._compiled:
            if rx.search(text):
                score += rule.weight
                fired.append(rule.name)
        tokens = len(self._enc.encode_ordinary(text)) if len(text) < 200_000 else len(text) // 4
        length = self.length_weight * min(tokens / self.long_prompt_tokens, 1.0)
        # rounded once, before the tier is chosen: float sums land just under a cut point
        # (0.3 + 0.05 + 0.05 < 0.4), and the tier must be the one the reported score names
        score = round(min(max(score + length, 0.0), 1.0), 4)
        index = sum(1 for cut in self.thresholds if score >= cut)
        notes = [*fired]
        if tokens >= self.long_prompt_tokens:
            notes.append("long prompt")
        detail = ", ".join(notes) if notes else "no signals"
        return Classification(
            tier=self.tiers[index],
            score=score,
            reason=f"score {score:.2f} ({detail})",
            rules=tuple(fired),
        )

    async def aclassify(self, text: str) -> Classification:
        """Async twin of :meth:`classify` (pure CPU, runs inline)."""
        return self.classify(text)
