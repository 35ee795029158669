"""A summariser whose call reads the memory it summarises (a tracing hook logging the window)
works in the async path as in the sync one (review s22c #4): the memory's async lock lets the
task holding it in again, and the tasks it starts and awaits meanwhile (``asyncio.wait_for``'s
on Python 3.11), as the sync path's ``RLock`` lets its thread in. It used to wait for itself
forever. Every scenario runs under ``asyncio.wait_for`` so that a regression fails instead of
hanging the suite."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM
from pydantic import PrivateAttr

from llamaindex_tokenbudget.memory import SummaryChatMemory

GUARD_SECONDS = 20  # a hang guard only: a scenario takes milliseconds


class Peeking(MockLLM):
    """A summariser whose call looks at the memory's window first (as a tracing hook might)."""

    _memory: Any = PrivateAttr(default=None)
    _seen: list[int] = PrivateAttr(default_factory=list)
    _via: str = PrivateAttr(default="await")

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self._seen.append(len(self._memory.get()))
        return ChatResponse(message=ChatMessage(role="assistant", content="summary"))

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        if self._via == "await":
            window = await self._memory.aget()
        elif self._via == "to_thread":  # its sync twin in a thread, which carries the context
            return await asyncio.to_thread(self.chat, messages, **kwargs)
        elif self._via == "wait_for":  # a task of its own on Python 3.11
            window = await asyncio.wait_for(self._memory.aget(), GUARD_SECONDS)
        else:
            window = await asyncio.create_task(self._memory.aget())
        self._seen.append(len(window))
        return ChatResponse(message=ChatMessage(role="assistant", content="summary"))


MESSAGES = [
    ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20)
    for i in range(14)
]


def _memory(via: str = "await") -> tuple[SummaryChatMemory, Peeking]:
    llm = Peeking()
    memory = SummaryChatMemory(llm=llm, model="gpt-4o", max_tokens=300, reserve_output=0)
    llm._memory = memory
    llm._via = via
    return memory, llm


def _texts(messages: list[ChatMessage]) -> list[str]:
    return [str(m.content).split()[0] for m in messages]


def _sync_run() -> tuple[list[int], list[str]]:
    memory, llm = _memory()
    for message in MESSAGES:
        memory.put(message)
    return llm._seen, _texts(memory.get())


@pytest.mark.parametrize("via", ["await", "wait_for", "task", "to_thread"])
def test_a_summariser_reading_its_memory_in_the_async_path_works_as_in_the_sync_path(via: str) -> None:
    async def scenario() -> tuple[list[int], list[str]]:
        memory, llm = _memory(via)
        for message in MESSAGES:
            await memory.aput(message)
        return llm._seen, _texts(await memory.aget())

    async def guarded() -> tuple[list[int], list[str]]:
        return await asyncio.wait_for(scenario(), GUARD_SECONDS)

    seen, window = asyncio.run(guarded())
    sync_seen, sync_window = _sync_run()
    assert sync_seen  # the summariser ran (and read the window) in the sync path
    assert (seen, window) == (sync_seen, sync_window)
    assert window[0] == "Summary"  # the summary message leads the window


def test_another_task_still_waits_for_the_operation_in_flight() -> None:
    """The lock still serialises independent tasks: an aget() of another task, made while an
    aput() is in its summariser, sees the put message once, after the put."""

    async def scenario() -> list[str]:
        memory, _llm = _memory()
        gate = asyncio.Event()
        release = asyncio.Event()
        original = Peeking.achat

        async def slow(self: Peeking, messages: Any, **kwargs: Any) -> ChatResponse:
            gate.set()
            await release.wait()
            return await original(self, messages, **kwargs)

        for message in MESSAGES[:-1]:
            memory.put(message)
        Peeking.achat = slow  # type: ignore[method-assign]
        try:
            put = asyncio.create_task(memory.aput(MESSAGES[-1]))
            await gate.wait()
            get = asyncio.create_task(memory.aget())
            await asyncio.sleep(0)
            assert not get.done()  # waiting for the put in flight
            release.set()
            await put
            return _texts(await get)
        finally:
            Peeking.achat = original  # type: ignore[method-assign]

    async def guarded() -> list[str]:
        return await asyncio.wait_for(scenario(), GUARD_SECONDS)

    window = asyncio.run(guarded())
    assert window.count("m13") == 1
    assert window[-1] == "m13"
