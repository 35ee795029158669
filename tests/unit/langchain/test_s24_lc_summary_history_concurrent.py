"""One ``SummaryChatMessageHistory`` serving a session from several threads or tasks at once (a
web server whose ``get_session_history`` hands out one object per session) keeps one operation
at a time: every message is in the window once, in order, and nothing raises.

Before: the history's own state (the messages it had seen, the summary buffer) was read and
written by concurrent calls with no lock: threads raised ``IndexError`` from deep inside and
dropped messages from the window (118 of 300 left in one run). Tasks whose summariser awaits
now fold in turn too (a behaviour check: the old code happened to heal there).

Real ``InMemoryChatMessageHistory`` backing; LangChain fake chat models as summariser (one
whose async path yields to the event loop, as a provider call does)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from langchain_tokenbudget import SummaryChatMessageHistory


class YieldingSummariser(GenericFakeChatModel):
    """Writes a fixed summary; its async path awaits the event loop first, as a network call."""

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.001)
        return self._generate(messages, *args, **kwargs)


def history(max_tokens: int) -> SummaryChatMessageHistory:
    writer = YieldingSummariser(messages=itertools.repeat(AIMessage("Earlier turns, summarised.")))
    return SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=max_tokens)


def test_threads_sharing_one_history(fast_switching: None) -> None:
    for _ in range(8):
        shared = history(max_tokens=120_000)  # nothing folded: every message stays in the window
        errors: list[Exception] = []

        def work(
            name: str, shared: SummaryChatMessageHistory = shared, errors: list[Exception] = errors
        ) -> None:
            try:
                for i in range(60):
                    shared.add_messages([HumanMessage(f"{name} {i}")])
                    _ = shared.messages
            except Exception as e:  # noqa: BLE001  (reported by the test, not lost in the thread)
                errors.append(e)

        threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        window = [m.content for m in shared.messages]
        assert window == [m.content for m in shared.transcript]
        assert len(set(window)) == 180


def test_tasks_sharing_one_history_fold_each_message_once() -> None:
    async def run() -> tuple[list[str], list[str], SummaryChatMessageHistory]:
        shared = history(max_tokens=200)

        async def work(name: str) -> None:
            for i in range(15):
                await shared.aadd_messages([HumanMessage(f"{name} message {i} " + "word " * 12)])
                await shared.aget_messages()

        await asyncio.gather(*(work(f"a{k}") for k in range(4)))
        window = [str(m.content) for m in await shared.aget_messages()]
        return window, [str(m.content) for m in shared.transcript], shared

    window, transcript, shared = asyncio.run(run())
    verbatim = [text for text in window if text in transcript]
    assert len(verbatim) == len(set(verbatim))  # no message twice in the window
    assert verbatim[0] == transcript[0]  # the first user message, pinned
    recent = verbatim[1:]
    assert recent == transcript[len(transcript) - len(recent) :]  # then the newest, in order
    assert shared.summary == "Earlier turns, summarised."
    fresh = SummaryChatMessageHistory(
        shared.history,
        summariser=YieldingSummariser(messages=itertools.repeat(AIMessage("s"))),
        model="gpt-4o",
        max_tokens=200,
    )
    kept = [str(m.content) for m in fresh.messages if str(m.content) in transcript]
    assert kept == verbatim  # the same recent turns a fresh reader of the transcript keeps
