"""Counting speed, side by side: tokenbudget vs raw tiktoken vs LlamaIndex's TokenCounter.

Run: ``.venv/bin/python benchmarks/bench_counting.py``. Goals (issue 2):

* ``count_messages`` on a fresh counter costs <= 1.15x raw ``encode`` of the same texts;
* re-counting an unchanged history is >= 50x cheaper than the first count.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import best_of, conversation, save

from tokenbudget_core.encodings import get_encoding
from tokenbudget_core.openai_counting import TiktokenCounter
from tokenbudget_core.registry import get_model


def main() -> None:
    info = get_model("gpt-4o")
    enc = get_encoding("o200k_base")
    rows = []
    for n in (20, 200, 2000):
        history = conversation(n, seed=n)
        texts = [m["content"] for m in history]
        tokens = sum(len(enc.encode_ordinary(t)) for t in texts)

        def raw() -> int:
            return sum(len(enc.encode(t)) for t in texts)

        def first() -> int:
            # A new counter each time: nothing cached, every message tokenised.
            return TiktokenCounter(info).count_messages(history)

        counter = TiktokenCounter(info)
        counter.count_messages(history)

        def recount() -> int:
            return counter.count_messages(history)

        t_raw = best_of(raw)
        t_first = best_of(first)
        t_recount = best_of(recount, number=20)
        row = {
            "messages": n,
            "tokens": tokens,
            "raw_tiktoken_ms": round(t_raw * 1e3, 3),
            "first_count_ms": round(t_first * 1e3, 3),
            "recount_ms": round(t_recount * 1e3, 4),
            "first_vs_raw": round(t_first / t_raw, 3),
            "recount_speedup": round(t_first / t_recount, 1),
        }
        try:
            from llama_index.core.base.llms.types import ChatMessage
            from llama_index.core.utilities.token_counting import TokenCounter as LlamaTokenCounter

            llama = LlamaTokenCounter(tokenizer=enc.encode)
            llama_msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in history]
            t_llama = best_of(lambda: llama.estimate_tokens_in_messages(llama_msgs))
            row["llamaindex_token_counter_ms"] = round(t_llama * 1e3, 3)
        except ImportError:
            pass
        rows.append(row)

    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    path = save("counting", {"rows": rows})
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
