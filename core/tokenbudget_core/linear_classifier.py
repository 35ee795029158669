"""A complexity classifier that learns weights for wording and the heuristic's own signals.

:class:`LinearComplexityClassifier` is multinomial logistic regression (softmax, L2) over two
blocks of standardised features: the prompt's embedding (any embedder
:func:`~tokenbudget_core.embeddings.as_embedder` accepts; the dependency-free
:class:`~tokenbudget_core.embeddings.HashingEmbedder` by default) and the signals the
:class:`~tokenbudget_core.complexity.HeuristicClassifier` reads (which rules fire, its score,
length, questions, code, numbers, lines, list items, a pasted text with a short instruction).
It is fitted in numpy by a fixed number of accelerated full-batch gradient steps: the same
examples always give the same weights.

Under-routing a hard prompt (a cheap model answers it badly) usually costs more than
over-routing an easy one (a few cents). ``under_routing_penalty`` says how many times more: the
classifier picks the tier with the lowest expected cost, so a penalty above 1 moves borderline
prompts up a tier.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .attribution import overhead
from .complexity import DEFAULT_RULES, Classification, HeuristicClassifier, Rule
from .embeddings import Embedder, Vectors, as_embedder, checked_rows
from .encodings import get_encoding
from .errors import InvalidInputError
from .learned_classifier import _examples, _tier_labels

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["LinearComplexityClassifier"]

Matrix = npt.NDArray[np.float64]

_SIGNALS = (
    "heuristic score",
    "length",
    "questions",
    "code",
    "numbers",
    "lines",
    "list",
    "pasted text",
    "instruction length",
)
# A list item's start, on its marker's own line (``[^\S\n]*``, not ``\s*``, so a run of blank
# lines is not rescanned from each of them); finds as many items as ``(?m)^\s*(?:...)\s+\S``.
_LIST_ITEM = re.compile(r"(?m)^[^\S\n]*+(?:\d++[.)]|[-*•])\s++\S")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _number(value: object, name: str, low: float, high: float, *, integer: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if integer:
        ok = ok and isinstance(value, int)
    if not ok or not low <= value <= high:  # type: ignore[operator]
        kind = "an integer" if integer else "a number"
        raise InvalidInputError(name, f"must be {kind} in [{low:g}, {high:g}]", value=value)
    return float(value)  # type: ignore[arg-type]


class _Signals:
    """The heuristic's signals for one prompt, as numbers (rule hits are 0/1)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.heuristic = HeuristicClassifier(rules=rules)
        self.names = tuple(r.name for r in self.heuristic.rules) + _SIGNALS
        self._enc = get_encoding("o200k_base")

    def _tokens(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text)) if len(text) < 200_000 else len(text) // 4

    def __call__(self, text: str) -> list[float]:
        verdict = self.heuristic.classify(text)
        fired = set(verdict.rules)
        paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
        longest = max((self._tokens(p) for p in paragraphs), default=0)
        instruction = self._tokens(paragraphs[-1]) if paragraphs else 0
        if len(paragraphs) > 1 and self._tokens(paragraphs[0]) < longest:
            instruction = min(instruction, self._tokens(paragraphs[0]))
        pasted = len(paragraphs) > 1 and longest >= 60 and instruction < longest
        return [
            *(1.0 if r.name in fired else 0.0 for r in self.heuristic.rules),
            verdict.score,
            math.log1p(self._tokens(text)),
            float(min(text.count("?"), 5)),
            1.0 if "```" in text else 0.0,
            math.log1p(len(_NUMBER.findall(text))),
            math.log1p(text.count("\n")),
            math.log1p(len(_LIST_ITEM.findall(text))),
            1.0 if pasted else 0.0,
            math.log1p(instruction if pasted else self._tokens(text)),
        ]


def _softmax(z: Matrix) -> Matrix:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Matrix = e / e.sum(axis=1, keepdims=True)
    return out


def _fit_softmax(
    x: Matrix, y: npt.NDArray[np.int64], classes: int, *, l2: float, iterations: int, balanced: bool
) -> tuple[Matrix, Matrix]:
    """L2-regularised softmax regression by Nesterov-accelerated full-batch gradient descent."""
    n, d = x.shape
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), y] = 1.0
    counts = onehot.sum(axis=0)
    if balanced:  # each seen class weighs the same in total, however few examples it has
        present = counts > 0
        per_class = np.where(present, n / (present.sum() * np.maximum(counts, 1.0)), 0.0)
        sample = per_class[y]
    else:
        sample = np.ones(n)
    xb = np.hstack([x, np.ones((n, 1))])
    # Lipschitz constant of the gradient: the softmax Hessian is at most 1/2 per logit
    smooth = 0.5 * float(sample.max()) * float(np.linalg.norm(xb, 2)) ** 2 / n + l2
    step = 1.0 / smooth
    momentum = (math.sqrt(smooth) - math.sqrt(l2)) / (math.sqrt(smooth) + math.sqrt(l2))
    reg = np.ones((d + 1, 1))
    reg[-1] = 0.0  # the bias is not shrunk
    w = np.zeros((d + 1, classes))
    ahead = w.copy()
    for _ in range(iterations):
        p = _softmax(xb @ ahead)
        grad = xb.T @ ((p - onehot) * sample[:, None]) / n + l2 * reg * ahead
        nxt = ahead - step * grad
        ahead = nxt + momentum * (nxt - w)
        w = nxt
    return w[:-1], w[-1:]


class LinearComplexityClassifier:
    """Softmax regression over a prompt's embedding and the heuristic's signals.

    Build it with :meth:`fit`. The tier is the one with the lowest expected cost under
    ``under_routing_penalty`` (with the default 1 simply the most probable tier); the score is the
    expected tier position, scaled to ``[0, 1]``; the reason gives the tier's probability and the
    features that pushed hardest toward it (``wording`` is the embedding block as a whole).
    Embedding the prompt being classified runs inside
    :func:`~tokenbudget_core.attribution.overhead` ``("router")``: fitted with a ``ledger``, a
    paid embedding model's calls are recorded there as the package's overhead.

    Example:
        >>> clf = LinearComplexityClassifier.fit(
        ...     [("what is a token", "small"), ("what is a byte", "small"),
        ...      ("design a sharded database and analyze its failure modes", "large"),
        ...      ("design a distributed queue and analyze the trade-offs", "large")]
        ... )
        >>> clf.classify("what is a word?").tier
        'small'
        >>> clf.classify("design a sharded cache and analyze the trade-offs").tier
        'large'
    """

    def __init__(
        self,
        *,
        tiers: tuple[str, ...],
        embedder: Embedder,
        rules: Sequence[Rule],
        mean: Matrix,
        scale: Matrix,
        weights: Matrix,
        bias: Matrix,
        under_routing_penalty: float,
    ) -> None:
        self.tiers = tiers
        self.embedder = embedder
        self.under_routing_penalty = under_routing_penalty
        self._signals = _Signals(rules)
        self._mean, self._scale = mean, scale
        self._weights, self._bias = weights, bias
        span = np.arange(len(tiers))
        # cost[i, j]: the label is tier i, the prompt went to tier j
        self._cost = np.where(span[None, :] < span[:, None], under_routing_penalty, 1.0)
        np.fill_diagonal(self._cost, 0.0)

    @classmethod
    def fit(
        cls,
        examples: Iterable[tuple[str, str]],
        *,
        embedder: object = None,
        tiers: Sequence[str] | None = None,
        rules: Sequence[Rule] | None = None,
        l2: float = 0.05,
        iterations: int = 300,
        balanced: bool = True,
        embedding_weight: float = 1.0,
        under_routing_penalty: float = 1.0,
        ledger: Ledger | None = None,
    ) -> LinearComplexityClassifier:
        """Fit the weights on labelled prompts.

        Args:
            examples: ``(prompt, tier)`` pairs; at least two different tiers.
            embedder: Anything :func:`~tokenbudget_core.embeddings.as_embedder` accepts (default
                :class:`~tokenbudget_core.embeddings.HashingEmbedder`).
            tiers: Tier names cheapest first, as the router orders them; required unless the
                labels are among ``small, medium, large`` (then in that order).
            rules: The heuristic rules whose hits are features (default
                :data:`~tokenbudget_core.complexity.DEFAULT_RULES`).
            l2: Regularisation strength (larger: smoother, less fitted to the examples).
            iterations: Gradient steps (the result depends only on the data and these settings).
            balanced: Weigh each tier's examples so every tier counts the same in total.
            embedding_weight: How much the embedding counts against the signals. The embedding's
                many columns are scaled so that, at 1, both blocks carry the same total variance
                (otherwise hundreds of sparse wording columns drown the couple of dozen signals);
                0 leaves the embedding out.
            under_routing_penalty: How many times worse sending a prompt to a cheaper tier than
                it needs is than sending it to a pricier one (1: pick the most probable tier).
            ledger: Record each call of a paid embedding model there, charged to the current
                payer and priced on the embedding model (see
                :func:`~tokenbudget_core.embeddings.as_embedder`): the examples' embedding now, as
                the app's own call, and each classified prompt's later, as overhead (``router``).

        Raises:
            InvalidInputError: No examples, a malformed pair, a label not in ``tiers`` (or labels
                other than small/medium/large without ``tiers``), fewer than two tiers among the
                labels, bad ``rules``, numbers out of range, a bad embedder or ledger.
        """
        pairs = _examples(examples, "examples")
        order, labels = _tier_labels(pairs, tiers)
        if len(set(labels)) < 2:
            raise InvalidInputError(
                "examples",
                f"every example is labelled {pairs[0][1]!r}: a classifier needs at least two tiers",
                fix="add examples of the other tiers, or route everything to that tier",
            )
        l2 = _number(l2, "l2", 1e-6, 1e3)
        steps = int(_number(iterations, "iterations", 1, 100_000, integer=True))
        if not isinstance(balanced, bool):
            raise InvalidInputError("balanced", "must be True or False", value=balanced)
        penalty = _number(under_routing_penalty, "under_routing_penalty", 0.01, 100.0)
        wording = _number(embedding_weight, "embedding_weight", 0.0, 100.0)
        chosen = DEFAULT_RULES if rules is None else HeuristicClassifier._check_rules(rules)
        emb = as_embedder(embedder, ledger=ledger)
        texts = [p for p, _ in pairs]
        signals = _Signals(chosen)
        raw = np.hstack(
            [
                checked_rows(emb.embed(texts), len(texts), "embed()", np.float64),
                np.array([signals(t) for t in texts]),
            ]
        )
        mean = raw.mean(axis=0, keepdims=True)
        scale = raw.std(axis=0, keepdims=True)
        scale[scale < 1e-9] = 1.0
        dim = raw.shape[1] - len(signals.names)
        varying = max(int((raw[:, :dim].std(axis=0) > 1e-9).sum()), 1)
        # both blocks carry the same total variance, the wording's times embedding_weight squared
        scale[:, :dim] *= math.sqrt(varying / len(signals.names)) / wording if wording else np.inf
        weights, bias = _fit_softmax(
            (raw - mean) / scale,
            np.asarray(labels, dtype=np.int64),
            len(order),
            l2=l2,
            iterations=steps,
            balanced=balanced,
        )
        return cls(
            tiers=order,
            embedder=emb,
            rules=chosen,
            mean=mean,
            scale=scale,
            weights=weights,
            bias=bias,
            under_routing_penalty=penalty,
        )

    @staticmethod
    def _check(text: object) -> str:
        if not isinstance(text, str):
            raise InvalidInputError("text", f"must be a string, got {type(text).__name__}", value=text)
        return text

    def _row(self, text: str, vector: Vectors) -> Matrix:
        raw = np.concatenate([np.asarray(vector, dtype=np.float64), self._signals(text)])[None, :]
        if raw.shape[1] != self._mean.shape[1]:
            raise InvalidInputError(
                "embedder", f"returned {vector.shape[0]} dimensions, the classifier was fitted on others"
            )
        out: Matrix = (raw - self._mean) / self._scale
        return out

    def _decide(self, x: Matrix) -> Classification:
        probs = _softmax(x @ self._weights + self._bias)[0]
        expected = probs @ self._cost  # expected cost of each choice
        best = float(expected.min())
        index = max(j for j, c in enumerate(expected) if c <= best + 1e-12)  # ties: the pricier tier
        span = max(len(self.tiers) - 1, 1)
        score = float(probs @ np.arange(len(self.tiers))) / span
        push = x[0] * (self._weights[:, index] - self._weights.mean(axis=1))
        dim = self._mean.shape[1] - len(self._signals.names)
        named = [("wording", float(push[:dim].sum()))]
        named += [(n, float(v)) for n, v in zip(self._signals.names, push[dim:], strict=True)]
        top = [n for n, v in sorted(named, key=lambda nv: -nv[1])[:3] if v > 0]
        tier = self.tiers[index]
        return Classification(
            tier=tier,
            score=round(min(max(score, 0.0), 1.0), 4),
            reason=f"p({tier})={probs[index]:.2f} ({', '.join(top) or 'no strong signal'})",
            rules=("linear",),
        )

    def probabilities(self, text: str) -> dict[str, float]:
        """Each tier's probability for ``text`` (before the under-routing penalty).

        Raises:
            InvalidInputError: ``text`` is not a string, or the embedder returned no finite vector
                of the fitted size (named ``embedder``).
        """
        with overhead("router"):
            vector = checked_rows(self.embedder.embed([self._check(text)]), 1, "embed()", np.float64)[0]
        probs = _softmax(self._row(text, vector) @ self._weights + self._bias)[0]
        return {t: float(p) for t, p in zip(self.tiers, probs, strict=True)}

    def classify(self, text: str) -> Classification:
        """The tier for ``text``.

        Raises:
            InvalidInputError: ``text`` is not a string, or the embedder returned no finite vector
                of the fitted size (named ``embedder``).
        """
        with overhead("router"):
            vector = checked_rows(self.embedder.embed([self._check(text)]), 1, "embed()", np.float64)[0]
        return self._decide(self._row(text, vector))

    async def aclassify(self, text: str) -> Classification:
        """Async twin of :meth:`classify` (the embedder's async path)."""
        with overhead("router"):
            raw = await self.embedder.aembed([self._check(text)])
            vector = checked_rows(raw, 1, "aembed()", np.float64)[0]
        return self._decide(self._row(text, vector))
