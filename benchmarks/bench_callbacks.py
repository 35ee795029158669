"""Per-call overhead of the LangChain budget handler, next to LangChain's UsageMetadataCallbackHandler.

Run: ``.venv/bin/python benchmarks/bench_callbacks.py``. A fake chat model that returns a reply
with usage is invoked N times with no handler, with ``UsageMetadataCallbackHandler`` (LangChain's
own usage tally) and with ``BudgetCallbackHandler`` on ``Ledger("memory://")`` with a budget
policy (count the input, reserve, commit). Overhead = time per call minus the no-handler time.
Goal (issue 4): ours within 1.5x of UsageMetadataCallbackHandler's overhead. A handler that
implements both events the way ours does (``raise_error``, ``run_inline``) and does nothing is
timed too: its overhead is LangChain's own dispatch of such a handler, the part of ours that is
not our code. So is a handler that only reserves and commits on the same ledger with constant
arguments (no counting, no reading of the run): the floor the ledger itself sets, whatever the
handler does. And a handler doing only a budget handler's arithmetic (payer, cached count, four
cells held and charged under a lock, a rollup; no ledger): the floor pure Python sets, which
shows how much of ours is the work our ledger and handler do per call. Results are printed and
saved to ``benchmarks/results/callbacks.json``.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import save
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

N = 2_000
USAGE = Usage(input_tokens=40, output_tokens=8)
REPLY = AIMessage(
    "Sure, here is the answer.",
    usage_metadata={"input_tokens": 40, "output_tokens": 8, "total_tokens": 48},
    response_metadata={"model_name": "gpt-4o-mini"},
)
MESSAGES = [SystemMessage("You are terse."), HumanMessage("What is a token budget, in one sentence?")]


class NullHandler(BaseCallbackHandler):
    """Both events of our handler, with its flags, doing nothing: LangChain's dispatch alone."""

    raise_error = True
    run_inline = True

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        return None

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        return None


class LedgerOnlyHandler(NullHandler):
    """Reserve and commit with constant arguments: the ledger's own cost inside a LangChain run."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.runs: dict[Any, Any] = {}

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.runs[run_id] = self.ledger.reserve(
            model="gpt-4o-mini", input_tokens=30, max_output_tokens=100, feature="chat", user="u-1"
        )

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.ledger.commit(self.runs.pop(run_id), USAGE)


class ArithmeticOnlyHandler(NullHandler):
    """The arithmetic of a budget handler and nothing else: the payer from the run's metadata,
    the input counted from a per-message cache, four budget cells checked and held under a lock,
    then charged with a small rollup. No ledger, no idempotency, ladder, alerts, leases' expiry
    or validation: the floor pure Python sets for this work inside a LangChain run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[Any, tuple[int, int]] = {}
        self.cells = [[0, 0] for _ in range(4)]
        self.limits = [10**15] * 4
        self.counts: dict[tuple[type, str], int] = {}
        self.rollup: dict[tuple[str, str], list[int]] = {}

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, **kwargs: Any) -> None:
        meta = kwargs.get("metadata") or {}
        payer = (meta.get("feature"), meta.get("user"))
        tokens = 3
        for m in messages[0]:
            n = self.counts.get((type(m), m.content))
            if n is None:
                n = self.counts[(type(m), m.content)] = len(m.content) // 4 + 4
            tokens += n
        amount = tokens * 150 + 100 * 600
        with self.lock:
            for cell, limit in zip(self.cells, self.limits, strict=True):
                if cell[0] + cell[1] + amount > limit:
                    raise RuntimeError("refused")
            for cell in self.cells:
                cell[1] += amount
        self.runs[run_id] = (amount, hash(payer))

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        amount, _ = self.runs.pop(run_id)
        usage = response.generations[0][0].message.usage_metadata
        cost = usage["input_tokens"] * 150 + usage["output_tokens"] * 600
        with self.lock:
            for cell in self.cells:
                cell[1] -= amount
                cell[0] += cost
            row = self.rollup.setdefault(("chat", "u-1"), [0, 0, 0, 0])
            row[0] += 1
            row[1] += usage["input_tokens"]
            row[2] += usage["output_tokens"]
            row[3] += cost


def timings(configs: dict[str, list[Any] | None], rounds: int = 9, n: int = N) -> dict[str, float]:
    """Best time per call of each configuration, the configurations interleaved round by round
    (so drift on a busy machine hits them all alike)."""
    models = {name: GenericFakeChatModel(messages=itertools.repeat(REPLY)) for name in configs}
    settings = {
        name: {"callbacks": cbs, "metadata": {"feature": "chat", "user": "u-1"}}
        for name, cbs in configs.items()
    }
    for name in configs:
        for _ in range(200):
            models[name].invoke(MESSAGES, config=settings[name])
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(rounds):
        for name in configs:
            model, config = models[name], settings[name]
            start = time.perf_counter()
            for _ in range(n // rounds):
                model.invoke(MESSAGES, config=config)
            best[name] = min(best[name], (time.perf_counter() - start) / (n // rounds))
    return best


def main() -> None:
    ledger = Ledger(
        "memory://",
        policy=BudgetPolicy(daily_usd="1000000", features={"chat": FeatureBudget(user_daily_usd="1000")}),
    )
    best = timings(
        {
            "none": None,
            "usage": [UsageMetadataCallbackHandler()],
            "null": [NullHandler()],
            "ledger_only": [LedgerOnlyHandler(ledger)],
            "arithmetic_only": [ArithmeticOnlyHandler()],
            "budget": [BudgetCallbackHandler(ledger, model="gpt-4o-mini")],
        },
        n=N * 3,
    )
    base = best["none"]
    result = {
        "calls": N * 3,
        "no_handler_us": base * 1e6,
        "usage_metadata_handler_overhead_us": (best["usage"] - base) * 1e6,
        "budget_handler_overhead_us": (best["budget"] - base) * 1e6,
        "dispatch_only_overhead_us": (best["null"] - base) * 1e6,
        "ledger_only_overhead_us": (best["ledger_only"] - base) * 1e6,
        "arithmetic_only_overhead_us": (best["arithmetic_only"] - base) * 1e6,
    }
    result["budget_handler_own_code_us"] = best["budget"] * 1e6 - best["null"] * 1e6
    usage_overhead = result["usage_metadata_handler_overhead_us"]
    result["ratio"] = result["budget_handler_overhead_us"] / usage_overhead
    result["ledger_only_ratio"] = result["ledger_only_overhead_us"] / usage_overhead
    result["arithmetic_only_ratio"] = result["arithmetic_only_overhead_us"] / usage_overhead
    for k, v in result.items():
        print(f"{k:38} {v:,.2f}" if isinstance(v, float) else f"{k:38} {v}")
    rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(f"saved {save('callbacks', rounded)}")


if __name__ == "__main__":
    main()
