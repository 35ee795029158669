"""A complexity classifier fitted from labelled examples, and how to judge any classifier.

:class:`NearestNeighbourClassifier` embeds labelled prompts once (any embedder
:func:`~tokenbudget_core.embeddings.as_embedder` accepts; the dependency-free
:class:`~tokenbudget_core.embeddings.HashingEmbedder` by default) and labels a new prompt by a
similarity-weighted vote of its ``k`` nearest neighbours. :func:`evaluate` runs a classifier over
a labelled set and reports accuracy, how often it under-routes (a cheaper tier than the label)
and what it would spend against always using the premium tier.

kNN over the hashing embedder is weak on held-out prompts (it matches wording, not difficulty);
:class:`~tokenbudget_core.linear_classifier.LinearComplexityClassifier` learns from the same
examples and does better (``benchmarks/bench_routing.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from .attribution import overhead
from .complexity import Classification, ComplexityClassifier, check_tiers
from .embeddings import Embedder, Vectors, _unit_rows, as_embedder
from .errors import InvalidInputError, UnpricedModelError
from .money import decimal_text
from .pricing import cost_or_none
from .registry import ModelRegistry, check_registry
from .routing import offline_counter
from .usage import Usage

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["Evaluation", "NearestNeighbourClassifier", "evaluate"]


def _examples(examples: object, field: str) -> list[tuple[str, str]]:
    if isinstance(examples, str | bytes | Mapping) or not isinstance(examples, Iterable):
        raise InvalidInputError(
            field, "must be an iterable of (prompt, tier) pairs", value=type(examples).__name__
        )
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(examples):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InvalidInputError(f"{field}[{i}]", "must be a (prompt, tier) pair", value=pair)
        text, tier = pair
        if not isinstance(text, str):
            raise InvalidInputError(f"{field}[{i}][0]", "the prompt must be a string", value=text)
        if not isinstance(tier, str) or not tier:
            raise InvalidInputError(f"{field}[{i}][1]", "the tier must be a non-empty string", value=tier)
        out.append((text, tier))
    if not out:
        raise InvalidInputError(field, "must not be empty", fix="pass labelled (prompt, tier) pairs")
    return out


def _tier_labels(pairs: Sequence[tuple[str, str]], tiers: object) -> tuple[tuple[str, ...], list[int]]:
    """The tier order (given, or ``small, medium, large``) and each pair's tier index.

    Raises:
        InvalidInputError: Labels other than ``small`` / ``medium`` / ``large`` without ``tiers``
            (their order cannot be guessed), or a label not in ``tiers``.
    """
    if tiers is None:
        seen = list(dict.fromkeys(t for _, t in pairs))
        default = ("small", "medium", "large")
        if set(seen) <= set(default):
            order = tuple(t for t in default if t in seen)
        elif len(seen) == 1:
            order = (seen[0],)
        else:
            raise InvalidInputError(
                "tiers",
                f"the labels {sorted(seen)} are not small/medium/large, so which is cheapest is unknown",
                fix="pass tiers=[...] naming them cheapest first, in the router's order",
            )
    else:
        order = check_tiers(tiers)
    index = {t: i for i, t in enumerate(order)}
    for i, (_, t) in enumerate(pairs):
        if t not in index:
            raise InvalidInputError(
                f"examples[{i}][1]", f"{t!r} is not one of the tiers {list(order)}", value=t
            )
    return order, [index[t] for _, t in pairs]


class NearestNeighbourClassifier:
    """Labels a prompt like its ``k`` most similar labelled examples (cosine over embeddings).

    Each neighbour votes for its tier with its similarity; ties go to the pricier tier (an
    under-routed hard prompt costs more than an over-routed easy one). The score is the
    vote-weighted mean tier position, scaled to ``[0, 1]``.

    Build it with :meth:`fit`. The embedding of the prompt being classified runs inside
    :func:`~tokenbudget_core.attribution.overhead` ``("router")``: fitted with a ``ledger``, a paid
    embedding model's calls are recorded there as the package's overhead.

    Example:
        >>> clf = NearestNeighbourClassifier.fit(
        ...     [("what is a token", "small"), ("design a sharded database", "large")], k=1
        ... )
        >>> clf.classify("what is a token?").tier
        'small'
    """

    def __init__(
        self, *, tiers: tuple[str, ...], embedder: Embedder, vectors: Vectors, labels: Sequence[int], k: int
    ) -> None:
        self.tiers = tiers
        self.embedder = embedder
        self.k = k
        self._vectors = vectors
        self._labels = np.asarray(labels, dtype=np.int64)

    @classmethod
    def fit(
        cls,
        examples: Iterable[tuple[str, str]],
        *,
        embedder: object = None,
        k: int = 5,
        tiers: Sequence[str] | None = None,
        ledger: Ledger | None = None,
    ) -> NearestNeighbourClassifier:
        """Embed the labelled examples.

        Args:
            examples: ``(prompt, tier)`` pairs.
            embedder: Anything :func:`~tokenbudget_core.embeddings.as_embedder` accepts (default
                :class:`~tokenbudget_core.embeddings.HashingEmbedder`).
            k: Neighbours that vote (at most the number of examples is used).
            tiers: Tier names cheapest first, as the router orders them; required unless the
                labels are among ``small, medium, large`` (then in that order).
            ledger: Record each call of a paid embedding model there, charged to the current
                payer and priced on the embedding model (see
                :func:`~tokenbudget_core.embeddings.as_embedder`): the examples' embedding now, as
                the app's own call, and each classified prompt's later, as overhead (``router``).

        Raises:
            InvalidInputError: No examples, a malformed pair, a label not in ``tiers``, other
                labels without ``tiers``, a bad ``k``, embedder or ledger.
        """
        pairs = _examples(examples, "examples")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k", "must be a positive integer", value=k)
        order, labels = _tier_labels(pairs, tiers)
        emb = as_embedder(embedder, ledger=ledger)
        # fitting is the app's own work, not overhead; scaled to unit length (a custom embedder's
        # raw vectors would make the nearest the longest, not the most similar)
        vectors = _unit_rows(emb.embed([p for p, _ in pairs]), len(pairs), "the embedder")
        return cls(tiers=order, embedder=emb, vectors=vectors, labels=labels, k=k)

    def _vote(self, vector: Vectors) -> Classification:
        size = self._vectors.shape[1]
        if vector.shape != (size,):
            raise InvalidInputError(
                "embedder",
                f"gave a vector of shape {tuple(vector.shape)} for the prompt, but the classifier was "
                f"fitted on vectors of {size} dimensions (another model, or another dimensions= "
                "setting, behind the embedder)",
                fix="fit the classifier again with the embedder it now uses",
            )
        sims = self._vectors @ vector
        k = min(self.k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        weights = np.clip(sims[top], 0.0, None) + 1e-6
        votes = np.zeros(len(self.tiers))
        np.add.at(votes, self._labels[top], weights)
        best = float(votes.max())
        tier_index = max(i for i, v in enumerate(votes) if v >= best - 1e-12)
        span = max(len(self.tiers) - 1, 1)
        score = float((weights * self._labels[top]).sum() / weights.sum()) / span
        agree = int((self._labels[top] == tier_index).sum())
        nearest = float(sims[top].max())
        tier = self.tiers[tier_index]
        return Classification(
            tier=tier,
            score=round(min(max(score, 0.0), 1.0), 4),
            reason=f"{agree} of {k} nearest examples labelled {tier!r} (nearest similarity {nearest:.2f})",
            rules=("knn",),
        )

    @staticmethod
    def _check(text: object) -> str:
        if not isinstance(text, str):
            raise InvalidInputError("text", f"must be a string, got {type(text).__name__}", value=text)
        return text

    def classify(self, text: str) -> Classification:
        """The tier of ``text``'s nearest labelled examples.

        Raises:
            InvalidInputError: ``text`` is not a string.
        """
        with overhead("router"):
            vector = _unit_rows(self.embedder.embed([self._check(text)]), 1, "the embedder")[0]
        return self._vote(vector)

    async def aclassify(self, text: str) -> Classification:
        """Async twin of :meth:`classify` (the embedder's async path)."""
        with overhead("router"):
            vector = _unit_rows(await self.embedder.aembed([self._check(text)]), 1, "the embedder")[0]
        return self._vote(vector)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evaluation:
    """How a classifier does on a labelled set, in accuracy and in money."""

    n: int
    """Prompts evaluated."""
    accuracy: float
    """Share routed to exactly the labelled tier."""
    under_routed: float
    """Share sent to a cheaper tier than labelled (the quality risk)."""
    over_routed: float
    """Share sent to a pricier tier than labelled (the money wasted)."""
    cost_usd: Decimal
    """What the routed calls would cost (input counted per model, plus ``output_tokens``)."""
    premium_cost_usd: Decimal
    """What the same calls would cost all on the premium tier."""
    saved_share: float
    """``1 - cost_usd / premium_cost_usd``."""
    confusion: dict[tuple[str, str], int]
    """``(label, predicted) -> count``."""
    complex_under_routed: float = 0.0
    """Share of the prompts labelled with the premium tier that went to a cheaper one."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe figures (money as decimal strings, confusion as ``"label->predicted"`` keys)."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "under_routed": self.under_routed,
            "over_routed": self.over_routed,
            "complex_under_routed": self.complex_under_routed,
            "cost_usd": decimal_text(self.cost_usd),
            "premium_cost_usd": decimal_text(self.premium_cost_usd),
            "saved_share": self.saved_share,
            "confusion": {f"{a}->{b}": c for (a, b), c in sorted(self.confusion.items())},
        }


def evaluate(
    classifier: ComplexityClassifier,
    labelled: Iterable[tuple[str, str]],
    *,
    models: Mapping[str, str],
    output_tokens: int = 300,
    registry: ModelRegistry | None = None,
) -> Evaluation:
    """Accuracy, under- and over-routing, and cost against always-premium on a labelled set.

    Each prompt is priced as a single user message on the model of the tier the classifier
    chose, with ``output_tokens`` of output; the premium figure prices it on the model of the
    classifier's last tier.

    Args:
        classifier: Any :class:`~tokenbudget_core.complexity.ComplexityClassifier`.
        labelled: ``(prompt, cheapest adequate tier)`` pairs.
        models: Tier -> model for every classifier tier.
        output_tokens: Output tokens assumed per call.
        registry: Model facts and pricing names.

    Raises:
        InvalidInputError: Empty or malformed pairs, a label or tier without a model, bad
            ``output_tokens``, a premium tier cheaper than the first (tiers in the wrong order).
        UnknownModelError: A model the registry does not know.
        UnpricedModelError: A model without a price (the comparison needs every price).

    Example:
        >>> from tokenbudget_core.complexity import HeuristicClassifier
        >>> ev = evaluate(HeuristicClassifier(tiers=("small", "large")), [("What is 2+2?", "small")],
        ...               models={"small": "gpt-4o-mini", "large": "gpt-4o"})
        >>> ev.accuracy, ev.saved_share > 0.9
        (1.0, True)
    """
    if not callable(getattr(classifier, "classify", None)):
        raise InvalidInputError(
            "classifier",
            f"must be a ComplexityClassifier (tiers and classify()), got {type(classifier).__name__}",
            fix="pass e.g. HeuristicClassifier(tiers=(...)) or a fitted classifier",
        )
    tiers = check_tiers(getattr(classifier, "tiers", None), "classifier.tiers")
    pairs = _examples(labelled, "labelled")
    if not isinstance(models, Mapping):
        raise InvalidInputError("models", "must map tier -> model", value=models)
    for t in tiers:
        if not isinstance(models.get(t), str):
            raise InvalidInputError(
                "models", f"has no model for tier {t!r}", fix=f"map every tier of {list(tiers)}"
            )
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 0:
        raise InvalidInputError("output_tokens", "must be a non-negative integer", value=output_tokens)
    index = {t: i for i, t in enumerate(tiers)}
    for i, (_, label) in enumerate(pairs):
        if label not in index:
            raise InvalidInputError(
                f"labelled[{i}][1]", f"{label!r} is not one of the tiers {list(tiers)}", value=label
            )
    reg = check_registry(registry)
    counters = {t: offline_counter(models[t], reg) for t in tiers}
    premium, cheapest = tiers[-1], tiers[0]

    def price(tier: str, text: str) -> Decimal:
        model = models[tier]
        n = int(counters[tier].count_messages([{"role": "user", "content": text}]))
        cost = cost_or_none(Usage(input_tokens=n, output_tokens=output_tokens), model, registry=reg)
        if cost is None:
            raise UnpricedModelError(model)
        return cost

    confusion: dict[tuple[str, str], int] = {}
    under = over = right = complex_total = complex_under = 0
    cost = premium_cost = cheapest_cost = Decimal(0)
    for text, label in pairs:
        answer = classifier.classify(text)
        if not isinstance(answer, Classification):
            raise InvalidInputError(
                "classifier", f"returned {type(answer).__name__}, not a Classification", value=answer
            )
        got = answer.tier
        if got not in index:
            raise InvalidInputError("classifier", f"returned tier {got!r}, not one of {list(tiers)}")
        confusion[(label, got)] = confusion.get((label, got), 0) + 1
        diff = index[got] - index[label]
        right += diff == 0
        under += diff < 0
        over += diff > 0
        if label == premium:
            complex_total += 1
            complex_under += diff < 0
        cost += price(got, text)
        premium_cost += price(premium, text)
        cheapest_cost += price(cheapest, text)
    if premium_cost < cheapest_cost:
        raise InvalidInputError(
            "models",
            f"the classifier's premium tier {premium!r} ({models[premium]}) costs less than its first "
            f"tier {cheapest!r} ({models[cheapest]}): tiers are ordered cheapest first",
            fix="fit the classifier with tiers=[...] cheapest first, or fix the tier -> model mapping",
        )
    n = len(pairs)
    return Evaluation(
        n=n,
        accuracy=right / n,
        under_routed=under / n,
        over_routed=over / n,
        cost_usd=cost,
        premium_cost_usd=premium_cost,
        saved_share=float(1 - cost / premium_cost) if premium_cost else 0.0,
        confusion=confusion,
        complex_under_routed=complex_under / complex_total if complex_total else 0.0,
    )
