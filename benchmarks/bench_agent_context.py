"""An agent's transcript fitted on every model call, side by side with LangChain's ``trim_messages``.

Run: ``.venv/bin/python benchmarks/bench_agent_context.py``. An agent sends its whole
transcript (questions, tool calls, tool results, answers) on each model call, and
``ContextWindowMiddleware`` / ``BudgetMiddleware`` read it each time. Timed per model call at
100, 500 and 2,000 messages: our fit (``fit_host``: convert, count, fit) with the conversion
memo of ``to_core_request`` (each message object converted once while its fields are
unchanged), the same fit converting every message afresh (no memo), and ``trim_messages``
with LangChain's own approximate counter and with a tiktoken counter (exact counts, what a
budget needs). Results are printed and saved to ``benchmarks/results/agent_context.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import best_of, save
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately
from tiktoken import get_encoding

from langchain_tokenbudget._bridge import Budget, fit_host
from langchain_tokenbudget.messages import to_countable_message

ENC = get_encoding("o200k_base")
BUDGET = 8_000
SYSTEM = SystemMessage("You are a weather assistant. Use the tools.")


def transcript(n: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for i in range(n // 4):
        messages.append(HumanMessage(f"What is the weather in city number {i}, and should I take a coat?"))
        args = {"city": f"City {i}", "days": 3, "units": "metric"}
        messages.append(AIMessage("", tool_calls=[{"name": "weather", "args": args, "id": f"call_{i}"}]))
        messages.append(ToolMessage(f"sunny, {i % 30} degrees, wind from the west", tool_call_id=f"call_{i}"))
        messages.append(AIMessage(f"It is sunny and {i % 30} degrees in City {i}: no coat needed."))
    return messages


def tiktoken_counter(messages: list[Any]) -> int:
    """An exact-ish counter a LangChain user would pass: tiktoken of each message's text and calls."""
    total = 3
    for m in messages:
        total += 4 + len(ENC.encode(m.text))
        for call in getattr(m, "tool_calls", None) or ():
            total += len(ENC.encode(call["name"])) + len(ENC.encode(str(call["args"])))
    return total


def main() -> None:
    budget = Budget.make("gpt-4o", BUDGET)
    rows = []
    for n in (100, 500, 2_000):
        messages = transcript(n)
        fit_host(messages, budget, system=SYSTEM)  # warm: counts cached, conversions remembered

        def fresh(messages: list[BaseMessage] = messages) -> object:
            converted = [to_countable_message(m, where=f"messages[{i}]") for i, m in enumerate(messages)]
            return fit_host(messages, budget, system=SYSTEM, converted=converted)

        def trim(counter: Any, messages: list[BaseMessage] = messages) -> object:
            return trim_messages(
                [SYSTEM, *messages],
                max_tokens=BUDGET,
                token_counter=counter,
                strategy="last",
                include_system=True,
                start_on="human",
            )

        row = {
            "messages": n,
            "ours_ms": best_of(lambda: fit_host(messages, budget, system=SYSTEM)) * 1e3,
            "ours_no_memo_ms": best_of(fresh) * 1e3,
            "trim_messages_approximate_ms": best_of(lambda: trim(count_tokens_approximately)) * 1e3,
            "trim_messages_tiktoken_ms": best_of(lambda: trim(tiktoken_counter), repeat=3) * 1e3,
        }
        row["memo_speedup"] = row["ours_no_memo_ms"] / row["ours_ms"]
        row["vs_trim_messages_tiktoken"] = row["trim_messages_tiktoken_ms"] / row["ours_ms"]
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        print(rows[-1])
    print(f"saved {save('agent_context', {'budget_tokens': BUDGET, 'rows': rows})}")


if __name__ == "__main__":
    main()
