"""One LlamaIndex memory used by sync and async callers at the same time (a server whose sync
endpoints run in a thread pool beside async ones, or threads each running an event loop of their
own) keeps one operation at a time: every message put is in the window once, in the store's
order, as a fresh memory on the same store sees it.

Before: sync calls took a thread lock and async calls a lock of their event loop, so a sync
``put()`` in one thread and an ``aput()`` on an event loop (or two ``aput()`` on two loops) ran
into each other: a message was missing from the window for good, though the store had it.

Real ``SimpleChatStore`` (the switch interval shortened so that the threads interleave often),
and one whose write of a marked message waits until the test lets it go, as a networked store's
write takes its time: a caller of another thread must wait for that operation, not run beside it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.storage.chat_store import SimpleChatStore

from llamaindex_tokenbudget import TokenBudgetChatMemory

N = 100
ROUNDS = 3


def sync_worker(memory: TokenBudgetChatMemory, name: str) -> Callable[[], None]:
    def run() -> None:
        for i in range(N):
            memory.put(ChatMessage(role="user", content=f"{name} {i}"))
            memory.get()

    return run


def async_worker(memory: TokenBudgetChatMemory, name: str) -> Callable[[], None]:
    async def work() -> None:
        for i in range(N):
            await memory.aput(ChatMessage(role="assistant", content=f"{name} {i}"))
            await memory.aget()

    return lambda: asyncio.run(work())


def run_together(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as e:  # noqa: BLE001  (reported by the test, not lost in the thread)
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class ParkedStore(SimpleChatStore):
    """A ``SimpleChatStore`` whose first write of a message named ``park`` (sync or async) waits
    until the test lets it go: an operation of the memory stays in flight meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "parked", threading.Event())
        object.__setattr__(self, "go", threading.Event())

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        if message.content == "park":
            self.parked.set()
            assert self.go.wait(10)
        super().add_message(key, message, idx)

    async def async_add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        if message.content == "park":
            self.parked.set()
            while not self.go.is_set():
                await asyncio.sleep(0.001)
        super().add_message(key, message, idx)


@pytest.mark.parametrize(("first", "second"), [("sync", "async"), ("async", "sync"), ("async", "async")])
def test_a_caller_waits_for_another_threads_operation_in_flight(first: str, second: str) -> None:
    store = ParkedStore()
    memory = TokenBudgetChatMemory(max_tokens=120_000, chat_store=store, model="gpt-4o")

    def put(kind: str, text: str) -> Callable[[], None]:
        message = ChatMessage(role="user", content=text)
        return (
            (lambda: memory.put(message)) if kind == "sync" else (lambda: asyncio.run(memory.aput(message)))
        )

    parked = threading.Thread(target=put(first, "park"))
    parked.start()
    assert store.parked.wait(10)
    later = threading.Thread(target=put(second, "later"))
    later.start()
    later.join(0.5)
    waited = later.is_alive()  # it must wait for the parked operation, not run beside it
    store.go.set()
    parked.join(10)
    later.join(10)
    assert waited
    assert [m.content for m in store.get_messages(memory.chat_store_key)] == ["park", "later"]
    assert [m.content for m in memory.get()] == ["park", "later"]


@pytest.mark.parametrize("kinds", [("sync", "async"), ("sync", "sync", "async", "async")])
def test_sync_and_async_callers_on_one_memory_lose_nothing(
    fast_switching: None, kinds: tuple[str, ...]
) -> None:
    for _ in range(ROUNDS):
        store = SimpleChatStore()
        memory = TokenBudgetChatMemory(max_tokens=120_000, chat_store=store, model="gpt-4o")
        workers = [
            (sync_worker if kind == "sync" else async_worker)(memory, f"w{k}") for k, kind in enumerate(kinds)
        ]
        assert run_together(workers) == []
        stored = [m.content for m in store.get_messages(memory.chat_store_key)]
        assert len(stored) == len(set(stored)) == N * len(kinds)
        assert [m.content for m in memory.get()] == stored  # this memory's window: each once, in order
        fresh = TokenBudgetChatMemory(max_tokens=120_000, chat_store=store, model="gpt-4o")
        assert [m.content for m in fresh.get()] == stored


def test_a_thread_started_inside_an_event_loop_run_by_a_sync_operation_is_let_in() -> None:
    """A sync operation runs ``asyncio.run``; a coroutine there re-enters (async) and hands sync
    work to a thread with ``asyncio.to_thread``, which carries its context: that thread is let in
    too. Before, it waited for the lock the sync operation held while the operation waited for
    it: a deadlock (re-review s24 F1)."""
    from tokenbudget_core.operation_lock import OperationLock

    lock = OperationLock()
    seen: dict[str, bool] = {}

    def inner() -> bool:
        with lock.operation() as reentered:
            return reentered

    async def summarise() -> None:
        async with lock.aoperation() as reentered:
            seen["async"] = reentered
            seen["thread"] = await asyncio.to_thread(inner)

    def outer() -> None:
        with lock.operation():
            asyncio.run(summarise())
        seen["done"] = True

    worker = threading.Thread(target=outer, daemon=True)
    worker.start()
    worker.join(20)  # a hang guard only: it takes milliseconds
    assert not worker.is_alive(), "deadlocked"
    assert seen == {"async": True, "thread": True, "done": True}
    with lock.operation() as reentered:  # and the lock is free again
        assert not reentered
