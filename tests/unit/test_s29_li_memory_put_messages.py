"""put_messages / aput_messages on one LlamaIndex memory are one operation each: two agent runs
writing their scratchpads (tool call, result, answer) never interleave. They did, message by
message: a valid tool result was refused as 'without its call', the rest of that list was never
stored, and get() returned a tool call without its result."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget.memory import SummaryChatMemory, TokenBudgetChatMemory


def scratchpad(w: object) -> list[ChatMessage]:
    tid = f"call_{w}"
    call = {"id": tid, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]}),
        ChatMessage(role="tool", content=f"result {w}", additional_kwargs={"tool_call_id": tid}),
        ChatMessage(role="assistant", content=f"answer {w}"),
    ]


def memory(kind: str) -> Any:
    if kind == "summary":
        return SummaryChatMemory(model="gpt-4o", max_tokens=100_000, llm=MockLLM(max_tokens=10))
    return TokenBudgetChatMemory(model="gpt-4o", max_tokens=100_000)


def units_whole(messages: list[ChatMessage]) -> bool:
    """Every tool call is followed at once by its result (what providers require)."""
    for i, m in enumerate(messages):
        calls = m.additional_kwargs.get("tool_calls")
        if calls:
            after = messages[i + 1] if i + 1 < len(messages) else None
            if after is None or after.additional_kwargs.get("tool_call_id") != calls[0]["id"]:
                return False
    return True


@pytest.mark.parametrize("kind", ["window", "summary"])
def test_concurrent_aput_messages_keep_each_list_whole(kind: str) -> None:
    mem = memory(kind)
    mem.put(ChatMessage(role="user", content="hello"))

    async def main() -> None:
        await asyncio.gather(*(mem.aput_messages(scratchpad(w)) for w in range(6)))

    asyncio.run(main())
    stored = mem.get_all()
    assert len(stored) == 1 + 6 * 3
    assert units_whole(stored)
    assert units_whole(mem.get())


@pytest.mark.parametrize("kind", ["window", "summary"])
def test_concurrent_put_messages_from_threads_keep_each_list_whole(kind: str) -> None:
    mem = memory(kind)

    def worker(w: int) -> None:
        for i in range(8):
            mem.put_messages([ChatMessage(role="user", content=f"q {w}-{i}"), *scratchpad(f"{w}-{i}")])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    stored = mem.get_all()
    assert len(stored) == 8 * 8 * 4
    assert units_whole(stored)
    assert units_whole(mem.get())
