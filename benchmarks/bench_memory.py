"""Conversation memory, side by side: tokenbudget vs LangChain trim_messages vs LlamaIndex.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--quick]``. Budget 8,000 tokens,
o200k_base, ~137 tokens per message (issue 3's setting; lengths uniform within +-50%
of the mean). Four parts:

1. one fit of a whole history (100 / 1,000 / 10,000 messages): ``fit_messages`` (cold
   counter and warm) vs ``trim_messages`` with a tiktoken counter vs LlamaIndex
   ``ChatMemoryBuffer.get()`` and ``Memory.get()``;
2. a 2,000-turn chat loop (append, then read the window, every turn): ``ConversationWindow``
   and our LlamaIndex adapter ``TokenBudgetChatMemory`` (put + get, on LlamaIndex's default
   ``SimpleChatStore``) vs LlamaIndex ``Memory`` (put + get), our LangChain
   ``TokenBudgetChatMessageHistory`` and ``SummaryChatMessageHistory`` (add + read, on
   LangChain's in-memory history; a fake summariser), and ``trim_messages`` /
   ``ChatMemoryBuffer`` sampled at turns 100, 1,000 (and 2,000 for trim_messages);
3. how full the windows are (sliding: share of the budget; hysteresis: between the marks);
4. cache stability: the share of turns whose prompt prefix is unchanged, and what the loop
   costs with provider prompt caching, sliding vs hysteresis (priced with genai-prices).

Results are printed and saved to ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import best_of, conversation, save

from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.encodings import get_encoding
from tokenbudget_core.fitting import fit_messages
from tokenbudget_core.window import ConversationWindow

BUDGET = 8_000
ENC = get_encoding("o200k_base")
QUICK = "--quick" in sys.argv


def tiktoken_counter(messages: list[Any]) -> int:
    """The counter a LangChain user passes to trim_messages: OpenAI's chat framing with tiktoken."""
    return 3 + sum(4 + len(ENC.encode(m.content)) for m in messages)


def to_langchain(history: list[dict[str, str]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](m["content"]) for m in history]


def to_llama(history: list[dict[str, str]]) -> list[Any]:
    from llama_index.core.base.llms.types import ChatMessage

    return [ChatMessage(role=m["role"], content=m["content"]) for m in history]


def trim(lc_messages: list[Any]) -> list[Any]:
    from langchain_core.messages import trim_messages

    return trim_messages(
        lc_messages,
        max_tokens=BUDGET,
        token_counter=tiktoken_counter,
        strategy="last",
        include_system=True,
        start_on="human",
    )


def llama_memory(messages: list[Any]) -> Any:
    from llama_index.core.memory import Memory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = Memory.from_defaults(session_id=f"bench-{time.perf_counter_ns()}", token_limit=BUDGET)
        for m in messages:
            memory.put(m)
    return memory


def chat_memory_buffer(messages: list[Any]) -> Any:
    from llama_index.core.memory import ChatMemoryBuffer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ChatMemoryBuffer.from_defaults(
            token_limit=BUDGET, chat_history=messages, tokenizer_fn=ENC.encode
        )


def part1() -> list[dict[str, Any]]:
    rows = []
    for n in (100, 1_000) if QUICK else (100, 1_000, 10_000):
        history = conversation(n, seed=n, mean_words=143, spread=0.5)
        model = TokenCounter.for_model("gpt-4o")

        def cold() -> object:
            return fit_messages(history, BUDGET, TokenCounter.for_model("gpt-4o"))

        fit_messages(history, BUDGET, model)
        row: dict[str, Any] = {
            "messages": n,
            "tokens_per_message": round(sum(len(ENC.encode(m["content"])) for m in history) / n),
            "fit_cold_ms": best_of(cold, repeat=5) * 1e3,
            "fit_warm_ms": best_of(lambda: fit_messages(history, BUDGET, model), repeat=5) * 1e3,
            "raw_tiktoken_us_per_message": best_of(
                lambda: [ENC.encode(m["content"]) for m in history], repeat=3
            )
            / n
            * 1e6,
        }
        lc = to_langchain(history)
        row["trim_messages_ms"] = best_of(lambda: trim(lc), repeat=3 if n < 10_000 else 1) * 1e3
        if n <= 1_000:
            llama = to_llama(history)
            buffer = chat_memory_buffer(llama)
            row["chat_memory_buffer_get_ms"] = best_of(buffer.get, repeat=1) * 1e3
            memory = llama_memory(llama)
            row["llama_memory_get_ms"] = best_of(memory.get, repeat=3) * 1e3
        row["trim_vs_fit_cold"] = row["trim_messages_ms"] / row["fit_cold_ms"]
        rows.append(row)
    return rows


def loop(window: ConversationWindow[dict[str, str]], history: list[dict[str, str]]) -> dict[str, Any]:
    times, fills, prefix_same = [], [], 0
    previous: list[int] = []
    for m in history:
        start = time.perf_counter()
        window.append(m)
        current = window.messages()
        times.append(time.perf_counter() - start)
        ids = [id(x) for x in current]
        if previous and ids[: len(previous)] == previous:
            prefix_same += 1
        previous = ids
        fills.append(window.tokens / window.budget)
    full = fills[len(fills) // 4 :]
    return {
        "first_100_us": statistics.mean(times[:100]) * 1e6,
        "last_100_us": statistics.mean(times[-100:]) * 1e6,
        "max_us": max(times) * 1e6,
        "fill_min": min(full),
        "fill_mean": statistics.mean(full),
        "fill_max": max(full),
        "prefix_unchanged_share": prefix_same / (len(history) - 1),
        "prefix_changes": window.prefix_changes,
    }


def cached_cost(history: list[dict[str, str]], low_water: float | None, model: str) -> dict[str, Any]:
    """Cost of the loop's prompts with prefix caching: the unchanged prefix is read, the rest written."""
    counter = TokenCounter.for_model("gpt-4o")
    window: ConversationWindow[dict[str, str]] = ConversationWindow(
        counter, max_tokens=BUDGET, low_water=low_water
    )
    total = Usage(requests=0)
    uncached = Usage(requests=0)
    previous: list[int] = []
    previous_tokens = 0
    for m in history:
        window.append(m)
        current = window.messages()
        ids = [id(x) for x in current]
        tokens = window.tokens
        hit = bool(previous) and ids[: len(previous)] == previous
        read = previous_tokens if hit else 0
        total += Usage(input_tokens=tokens, cache_read_tokens=read, cache_write_tokens=tokens - read)
        uncached += Usage(input_tokens=tokens)
        previous, previous_tokens = ids, tokens
    return {
        "with_caching_usd": float(cost_of(total, model)),
        "without_caching_usd": float(cost_of(uncached, model)),
    }


def part2() -> dict[str, Any]:
    turns = 500 if QUICK else 2_000
    history = conversation(turns, seed=7, mean_words=143, spread=0.5)
    out: dict[str, Any] = {"turns": turns}
    out["window_sliding"] = loop(ConversationWindow("gpt-4o", max_tokens=BUDGET), history)
    out["window_hysteresis_0.7"] = loop(
        ConversationWindow("gpt-4o", max_tokens=BUDGET, low_water=0.7), history
    )

    from llama_index.core.memory import Memory

    llama = to_llama(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = Memory.from_defaults(session_id="loop", token_limit=BUDGET)
        times = []
        for m in llama:
            start = time.perf_counter()
            memory.put(m)
            got = memory.get()
            times.append(time.perf_counter() - start)
        got_tokens = 3 + sum(4 + len(ENC.encode(x.content or "")) for x in got)
    out["llama_memory"] = {
        "first_100_us": statistics.mean(times[:100]) * 1e6,
        "last_100_us": statistics.mean(times[-100:]) * 1e6,
        "final_fill": got_tokens / BUDGET,
    }
    from llamaindex_tokenbudget import TokenBudgetChatMemory

    ours = TokenBudgetChatMemory(model="gpt-4o", max_tokens=BUDGET)  # on LlamaIndex's SimpleChatStore
    times = []
    for m in llama:
        start = time.perf_counter()
        ours.put(m)
        got = ours.get()
        times.append(time.perf_counter() - start)
    out["tokenbudget_chat_memory"] = {
        "first_100_us": statistics.mean(times[:100]) * 1e6,
        "last_100_us": statistics.mean(times[-100:]) * 1e6,
        "final_fill": (3 + sum(4 + len(ENC.encode(x.content or "")) for x in got)) / BUDGET,
    }
    lc = to_langchain(history)
    from langchain_tokenbudget import TokenBudgetChatMessageHistory

    lc_history = TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=BUDGET)  # in-memory backing
    times = []
    for m in lc:
        start = time.perf_counter()
        lc_history.add_messages([m])
        got_lc = lc_history.messages
        times.append(time.perf_counter() - start)
    out["tokenbudget_chat_message_history"] = {  # LangChain RunnableWithMessageHistory's history
        "first_100_us": statistics.mean(times[:100]) * 1e6,
        "last_100_us": statistics.mean(times[-100:]) * 1e6,
        "final_messages": len(got_lc),
    }
    import itertools

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langchain_tokenbudget import SummaryChatMessageHistory

    writer = GenericFakeChatModel(messages=itertools.repeat(AIMessage("The user asked about the weather.")))
    summary_history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=BUDGET)
    times = []
    for m in lc:
        start = time.perf_counter()
        summary_history.add_messages([m])  # folds what slid out (a fake summariser: no network)
        _ = summary_history.messages
        times.append(time.perf_counter() - start)
    out["summary_chat_message_history"] = {
        "first_100_us": statistics.mean(times[:100]) * 1e6,
        "last_100_us": statistics.mean(times[-100:]) * 1e6,
    }
    out["trim_messages_turn_us"] = {
        str(k): best_of(lambda k=k: trim(lc[:k]), repeat=2) * 1e6 for k in (100, 1_000, turns) if k <= turns
    }
    out["chat_memory_buffer_turn_us"] = {
        str(k): best_of(lambda k=k: chat_memory_buffer(llama[:k]).get(), repeat=1) * 1e6
        for k in (100, 1_000)
        if k <= turns
    }
    last = out["window_sliding"]["last_100_us"]
    out["ratios_at_last_turns"] = {
        "llama_memory_vs_window": out["llama_memory"]["last_100_us"] / last,
        "llama_memory_vs_tokenbudget_chat_memory": out["llama_memory"]["last_100_us"]
        / out["tokenbudget_chat_memory"]["last_100_us"],
        "tokenbudget_chat_memory_last_vs_first": out["tokenbudget_chat_memory"]["last_100_us"]
        / out["tokenbudget_chat_memory"]["first_100_us"],
        "trim_messages_vs_window": out["trim_messages_turn_us"][str(turns)] / last,
        "trim_messages_vs_tokenbudget_chat_message_history": out["trim_messages_turn_us"][str(turns)]
        / out["tokenbudget_chat_message_history"]["last_100_us"],
        "tokenbudget_chat_message_history_last_vs_first": out["tokenbudget_chat_message_history"][
            "last_100_us"
        ]
        / out["tokenbudget_chat_message_history"]["first_100_us"],
        "summary_chat_message_history_last_vs_first": out["summary_chat_message_history"]["last_100_us"]
        / out["summary_chat_message_history"]["first_100_us"],
        "window_last_vs_first": last / out["window_sliding"]["first_100_us"],
    }
    out["cache_cost"] = {
        model: {
            "sliding": cached_cost(history, None, model),
            "hysteresis_0.7": cached_cost(history, 0.7, model),
        }
        for model in ("claude-sonnet-4-5", "gpt-4o")
    }
    return out


def main() -> None:
    result = {"budget": BUDGET, "fit": part1(), "loop": part2()}
    import json

    rounded = _round(result)
    print(json.dumps(rounded, indent=2))
    print(f"\nsaved {save('memory', rounded)}")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4 if abs(value) < 10 else 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


if __name__ == "__main__":
    main()
