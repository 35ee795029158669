"""Shared helpers for the side-by-side benchmarks (not tests: nothing here asserts a time)."""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_WORDS = [
    "the",
    "budget",
    "model",
    "token",
    "user",
    "feature",
    "request",
    "context",
    "window",
    "summary",
    "cost",
    "cache",
    "price",
    "daily",
    "limit",
    "assistant",
    "answer",
    "question",
    "report",
    "customer",
    "order",
    "invoice",
    "refund",
    "shipping",
    "address",
    "account",
    "password",
    "reset",
    "error",
    "timeout",
    "retry",
    "latency",
    "throughput",
    "database",
    "index",
    "query",
    "join",
    "table",
    "column",
    "schema",
    "migration",
    "deploy",
    "release",
    "version",
    "branch",
    "commit",
    "review",
    "merge",
    "test",
    "coverage",
    "benchmark",
    "profile",
    "memory",
    "leak",
    "thread",
    "lock",
    "queue",
    "worker",
    "scheduler",
    "event",
    "stream",
    "batch",
    "pipeline",
    "transform",
    "load",
    "extract",
    "validate",
    "parse",
    "render",
]


def sentence(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    return body[0].upper() + body[1:] + rng.choice([".", "?", "!", "."])


def conversation(
    n_messages: int, *, seed: int = 0, mean_words: int = 60, spread: float | None = None
) -> list[dict[str, str]]:
    """A deterministic chat history of plain-text messages.

    Lengths are exponential around ``mean_words`` (heavy-tailed), or uniform within
    ``mean_words * (1 +- spread)`` when ``spread`` is given.
    """
    rng = random.Random(seed)
    msgs = [{"role": "system", "content": " ".join(sentence(rng, 12) for _ in range(4))}]
    for i in range(n_messages - 1):
        if spread is None:
            words = max(3, int(rng.expovariate(1 / mean_words)))
        else:
            words = max(3, int(rng.uniform(mean_words * (1 - spread), mean_words * (1 + spread))))
        text = " ".join(sentence(rng, min(words, 18)) for _ in range(max(1, words // 18)))
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return msgs


def best_of(fn: Callable[[], object], *, repeat: int = 7, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls, over ``repeat`` rounds (min is the least noisy)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def median_of(fn: Callable[[], object], *, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": f"{platform.machine()} {platform.python_version()}", **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
