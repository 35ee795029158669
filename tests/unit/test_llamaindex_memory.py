"""LlamaIndex memories: what a chat engine's and an agent's LLM receives stays within budget."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatResponse, DocumentBlock, TextBlock, ToolCallBlock
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory.types import BaseMemory
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.tools import FunctionTool
from pydantic import Field, PrivateAttr

import llamaindex_tokenbudget
from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory, to_core_messages
from tokenbudget_core import TiktokenCounter, TokenCounter
from tokenbudget_core.counting import PDF_PAGE_TOKENS
from tokenbudget_core.errors import (
    ContextOverflowError,
    InvalidInputError,
    InvalidMessageError,
    UnknownModelError,
)

COUNTER = TokenCounter.for_model("gpt-4o")
SYSTEM = ChatMessage(role="system", content="You are a terse assistant. Answer in one line. " * 6)


def tokens(messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> int:
    return int(COUNTER.count_messages(to_core_messages(messages), tools))


class RecordingLLM(MockLLM):
    """A MockLLM that records what chat/achat received and answers ``reply`` (or fails)."""

    reply: str = "ok " * 15
    fail: bool = False
    received: list[tuple[str, list[ChatMessage]]] = Field(default_factory=list, exclude=True)

    def __init__(self, reply: str = "ok " * 15, fail: bool = False) -> None:
        super().__init__()
        self.reply, self.fail = reply, fail

    def _answer(self, how: str, messages: Any) -> ChatResponse:
        self.received.append((how, list(messages)))
        if self.fail:
            raise RuntimeError("the LLM is down")
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._answer("chat", messages)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._answer("achat", messages)


class ToolCallingLLM(MockFunctionCallingLLM):
    """Calls ``lookup`` once per user question, then answers; records every request it received."""

    received: list[tuple[list[ChatMessage], list[Any]]] = Field(default_factory=list, exclude=True)

    def _get_response_generator(self) -> Any:
        def respond(messages: Any, **kwargs: Any) -> ChatMessage:
            self.received.append((list(messages), list(kwargs.get("tools") or [])))
            if messages[-1].role == "user":
                n, query = len(self.received), str(messages[-1].content)[:20]
                call = ToolCallBlock(
                    tool_call_id=f"call_{n}", tool_name="lookup", tool_kwargs={"query": query}
                )
                return ChatMessage(role="assistant", blocks=[call])
            return ChatMessage(role="assistant", content="Found it: " + "answer " * 12)

        return respond


def lookup(query: str) -> str:
    """Look something up."""
    return f"result for {query}: " + "fact " * 10


def assert_tool_pairs_intact(messages: list[ChatMessage]) -> None:
    """Each tool result follows the assistant message that made its call; every call has its result."""
    calls: dict[str, int] = {}
    for k, m in enumerate(messages):
        ids = [b.tool_call_id for b in m.blocks if isinstance(b, ToolCallBlock)]
        ids += [c["id"] for c in m.additional_kwargs.get("tool_calls", [])]
        calls.update(dict.fromkeys(ids, k))
        if m.role == "tool":
            owner = calls.get(m.additional_kwargs["tool_call_id"])
            assert owner is not None, f"tool result {k} without its call"
            assert all(x.role == "tool" for x in messages[owner + 1 : k]), "a call and its results were split"
    answered = {m.additional_kwargs["tool_call_id"] for m in messages if m.role == "tool"}
    assert set(calls) <= answered, "a tool call lost its result"


def test_simple_chat_engine_receives_a_window_within_budget() -> None:
    llm = RecordingLLM()
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=400, prefix_messages=[SYSTEM])
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, prefix_messages=[SYSTEM])
    for i in range(25):
        engine.chat(f"question {i}: " + "tell me more " * 8)
    assert len(llm.received) == 25
    for how, received in llm.received:
        assert how == "chat"
        assert tokens(received) <= 400
        assert received[0] is SYSTEM
        assert received[1].content.startswith("question 0:")  # the first user message is pinned
    last = llm.received[-1][1]
    assert last[-1].content.startswith("question 24:")
    assert len(last) < 2 * 25
    assert tokens(last) > 300
    transcript = memory.chat_store.get_messages("chat_history")
    assert len(transcript) == 50
    assert transcript == memory.get_all() == engine.chat_history


async def test_async_chat_engine_uses_the_async_twins() -> None:
    llm = RecordingLLM()
    memory = TokenBudgetChatMemory.from_defaults([SYSTEM], model="gpt-4o", max_tokens=300)
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
    for i in range(15):
        await engine.achat(f"question {i}: " + "tell me more " * 8)
    assert {how for how, _ in llm.received} == {"achat"}
    assert all(tokens(r) <= 300 and r[0].role == "system" for _, r in llm.received)
    assert len(await memory.aget_all()) == 31
    await memory.aset(openai_style_history(5))
    assert len(await memory.aget()) < len(await memory.aget_all()) == 26
    await memory.areset()
    assert await memory.aget() == await memory.aget_all() == []


# FunctionAgent's constructor runs inspect.getmembers() over a pydantic model: pydantic's own
# deprecation warnings, attributed to the inspect module, are ignored there and nowhere else.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect")
@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_tool_pairs_and_budget(streaming: bool) -> None:
    tool = FunctionTool.from_defaults(lookup)
    llm = ToolCallingLLM()
    limit, headroom = 700, 150  # headroom: the run's tool call and result (the agent's scratchpad)
    memory = TokenBudgetChatMemory(
        model="gpt-4o", max_tokens=limit, reserve_output=headroom, prefix_messages=[SYSTEM], tools=[tool]
    )
    agent = FunctionAgent(tools=[tool], llm=llm, system_prompt=SYSTEM.content, streaming=streaming)
    for i in range(10):
        await agent.run(f"question {i}: " + "what about this " * 6, memory=memory)
    definitions = [tool.metadata.to_openai_tool()]
    assert len(llm.received) == 20
    for k, (received, sent_tools) in enumerate(llm.received):
        assert [t.metadata.name for t in sent_tools] == ["lookup"]
        used = tokens(received, definitions)
        assert used <= limit
        if k % 2 == 0:  # a run's first request: no scratchpad yet, so the window's own budget holds
            assert used <= limit - headroom
        assert (received[0].role, received[0].content) == ("system", SYSTEM.content)
        assert received[1].content.startswith("question 0:")
        assert_tool_pairs_intact(received)
    assert not any("question 1:" in str(m.content) for m in llm.received[-1][0])  # it slid
    transcript = await memory.aget_all()
    assert len(transcript) == 40
    assert [m.role for m in transcript[:4]] == ["user", "assistant", "tool", "assistant"]
    assert_tool_pairs_intact(transcript)


def openai_style_history(turns: int) -> list[ChatMessage]:
    history = [SYSTEM]
    for t in range(turns):
        ids = [f"t{t}a", f"t{t}b"]
        calls = [
            {"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ids
        ]
        history.append(ChatMessage(role="user", content=f"turn {t}: " + "please check " * 5))
        history.append(ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": calls}))
        history += [
            ChatMessage(role="tool", content="fact " * 8, additional_kwargs={"tool_call_id": i}) for i in ids
        ]
        history.append(ChatMessage(role="assistant", content="done " * 6))
    return history


@pytest.mark.parametrize("budget", [150, 200, 260, 333, 500])
def test_additional_kwargs_tool_calls_stay_paired(budget: int) -> None:
    history = openai_style_history(12)
    memory = TokenBudgetChatMemory.from_defaults(history, max_tokens=budget)
    window = memory.get()
    assert tokens(window) <= budget
    assert window[0] is SYSTEM
    assert all(any(m is h for h in history) for m in window)  # the host's own objects come back
    assert_tool_pairs_intact(window)
    assert len(memory.get_all()) == len(history) > len(window)


def test_get_reserves_input_and_initial_token_count() -> None:
    memory = TokenBudgetChatMemory.from_defaults(openai_style_history(12), max_tokens=400)
    full = memory.get()
    question = "and one more thing " * 10
    with_input = memory.get(input=question)
    assert (
        tokens([*with_input, ChatMessage(role="user", content=question)])
        <= 400
        < tokens([*full, ChatMessage(role="user", content=question)])
    )
    assert tokens(memory.get(initial_token_count=120)) <= 400 - 120 < tokens(full)


def test_each_message_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class CountingStore(SimpleChatStore):
        _reads: int = PrivateAttr(default=0)

        def get_messages(self, key: str) -> list[ChatMessage]:
            self._reads += 1
            return super().get_messages(key)

    counted = 0
    original = TiktokenCounter.count_message

    def spy(self: TiktokenCounter, message: Any) -> Any:
        nonlocal counted
        counted += 1
        return original(self, message)

    store = CountingStore()
    store.set_messages("chat_history", openai_style_history(60))
    memory = TokenBudgetChatMemory(chat_store=store, max_tokens=500)
    monkeypatch.setattr(TiktokenCounter, "count_message", spy)
    memory.get()
    assert (counted, store._reads) == (301, 1)
    counted = 0
    for i in range(20):
        memory.put(ChatMessage(role="user", content=f"more {i}"))
        memory.get()
    assert (counted, store._reads) == (20, 41)  # each new message counted once; one read per operation
    size = len(memory.get())
    reserving = TokenBudgetChatMemory(chat_store=store, max_tokens=500, prefix_messages=[SYSTEM])
    assert reserving.get() is not None
    counted = 0
    reserving.get(input="next question")
    assert counted <= size + 2 < 100  # a reserving get counts (from cache) the window, not the history


def test_a_second_memory_on_the_same_store_sees_the_same_window() -> None:
    first = TokenBudgetChatMemory(chat_store=SimpleChatStore(), chat_store_key="alice", max_tokens=250)
    first.put_messages(openai_style_history(10))
    second = TokenBudgetChatMemory(chat_store=first.chat_store, chat_store_key="alice", max_tokens=250)
    assert second.get() == first.get()
    assert len(second.get_all()) == 51
    assert TokenBudgetChatMemory(chat_store=first.chat_store, chat_store_key="bob").get() == []
    second.reset()
    assert second.get() == first.chat_store.get_messages("alice") == []
    assert first.get() == []  # the first memory sees the reset too


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_memories_sharing_a_store_key_see_each_others_messages(kind: str) -> None:
    """Two workers on one chat store: each window follows what the other wrote, counted once."""
    store = SimpleChatStore()
    a, b = (TokenBudgetChatMemory(chat_store=store, chat_store_key="conv", max_tokens=2000) for _ in "ab")

    async def put(memory: TokenBudgetChatMemory, role: str, text: str) -> None:
        message = ChatMessage(role=role, content=text)
        await memory.aput(message) if kind == "async" else memory.put(message)

    async def window(memory: TokenBudgetChatMemory) -> list[str]:
        got = await memory.aget() if kind == "async" else memory.get()
        return [str(m.content) for m in got]

    await put(a, "user", "My name is Ann.")
    assert await window(b) == ["My name is Ann."]
    await put(a, "assistant", "Hi Ann.")
    await put(a, "user", "I live in Oslo.")
    assert await window(b) == ["My name is Ann.", "Hi Ann.", "I live in Oslo."]
    await put(b, "assistant", "Noted.")
    everything = ["My name is Ann.", "Hi Ann.", "I live in Oslo.", "Noted."]
    assert await window(a) == await window(b) == everything
    store.set_messages("conv", [ChatMessage(role="user", content="A new conversation.")])  # replaced
    assert await window(a) == await window(b) == ["A new conversation."]


def test_summary_memory_puts_the_summary_in_the_window() -> None:
    summariser = RecordingLLM(reply="The user is Ada; she wants a budget for tea.")
    llm = RecordingLLM()
    memory = SummaryChatMemory(llm=summariser, model="gpt-4o", max_tokens=400, prefix_messages=[SYSTEM])
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, prefix_messages=[SYSTEM])
    for i in range(20):
        engine.chat(f"question {i}: " + "tell me more " * 8)
    assert summariser.received
    assert {how for how, _ in summariser.received} == {"chat"}
    prompt = summariser.received[0][1]
    assert [m.role for m in prompt] == ["system", "user"]
    assert "question 1:" in prompt[1].content
    _, last = llm.received[-1]
    assert tokens(last) <= 400
    assert last[0] is SYSTEM
    assert (last[1].role, memory.summary) == ("system", summariser.reply)
    assert last[1].content.endswith(summariser.reply)
    assert len(memory.get_all()) == 40


async def test_summary_memory_async_twins_use_achat() -> None:
    summariser = RecordingLLM(reply="Summary so far.")
    memory = SummaryChatMemory(llm=summariser, max_tokens=300)
    for i in range(30):
        await memory.aput(ChatMessage(role="user" if i % 2 == 0 else "assistant", content="word " * 20))
    assert summariser.received
    assert {how for how, _ in summariser.received} == {"achat"}
    window = await memory.aget()
    assert window[0].content.endswith("Summary so far.")
    assert tokens(window) <= 300


def test_summary_failure_falls_back_to_the_window_and_recovers() -> None:
    summariser = RecordingLLM(reply="Recovered summary.", fail=True)
    memory = SummaryChatMemory(llm=summariser, max_tokens=300)
    for i in range(30):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20))
    window = memory.get()
    assert memory.summary is None
    assert "the LLM is down" in (memory.last_error or "")
    assert all(m.role != "system" for m in window)
    assert tokens(window) <= 300
    assert len(memory.get_all()) == 30  # the transcript is whole
    summariser.fail = False
    memory.put(ChatMessage(role="user", content="still there?"))
    assert (memory.summary, memory.last_error) == ("Recovered summary.", None)
    assert memory.get()[0].content.endswith("Recovered summary.")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_tokens": 100, "reserve_output": 200}, "reserve_output"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),  # pydantic's type errors are translated too
        ({"low_water": 1.5}, "low_water"),
        ({"first_user": "forget"}, "first_user"),
        ({"token_limit": 100}, "token_limit"),  # unknown option (from_defaults accepts this one)
        ({"tools": ["lookup"]}, "tools.0"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        TokenBudgetChatMemory(**options)
    assert info.value.field == field


def test_other_bad_input_is_a_token_budget_error() -> None:
    with pytest.raises(UnknownModelError):
        TokenBudgetChatMemory.from_defaults(llm=MockLLM())  # MockLLM names no model
    with pytest.raises(InvalidInputError, match="llm"):
        SummaryChatMemory(max_tokens=300)
    with pytest.raises(InvalidInputError, match="summary_tokens"):
        SummaryChatMemory(llm=MockLLM(), max_tokens=300, summary_tokens=300)
    memory = TokenBudgetChatMemory.from_defaults([SYSTEM], max_tokens=100)
    with pytest.raises(InvalidMessageError) as info:
        memory.put(ChatMessage(role="tool", content="18C", additional_kwargs={"tool_call_id": "nope"}))
    assert info.value.field == "messages[1].tool_call_id"
    with pytest.raises(InvalidMessageError, match="message"):
        memory.put("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="messages"):
        memory.set("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_tokens: cannot be changed"):
        memory.max_tokens = 5_000  # the window was built for 100: silently ignoring it would be worse
    assert memory.get_all() == memory.get() == [SYSTEM]  # nothing bad was written
    big = ChatMessage(role="user", content="word " * 200)
    memory.put(big)  # too big to send, yet kept: the chat store holds every message (a paid reply)
    assert memory.get_all() == [SYSTEM, big]
    with pytest.raises(ContextOverflowError) as overflow:  # refused when it would be sent
        memory.get()
    assert overflow.value.limit == 100 < overflow.value.required


def test_public_api() -> None:
    assert {"SummaryChatMemory", "TokenBudgetChatMemory"} <= set(llamaindex_tokenbudget.__all__)
    for cls in (SummaryChatMemory, TokenBudgetChatMemory):
        assert issubclass(cls, BaseMemory)
        assert cls.class_name() == cls.__name__
        assert all(f.description for f in cls.model_fields.values())


def test_a_document_in_the_conversation_is_counted_by_its_estimate_and_kept_whole() -> None:
    pdf = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 1>>\n2 0 obj <</Type /Page>>\n"
    question = ChatMessage(
        role="user", blocks=[TextBlock(text="What does this say?"), DocumentBlock(data=pdf)]
    )
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=PDF_PAGE_TOKENS + 200)
    earlier = [("user", "hi"), ("assistant", "sunny " * 300), ("user", "weather " * 300), ("assistant", "ok")]
    memory.put_messages([ChatMessage(role=role, content=text) for role, text in earlier])
    memory.put(question)
    kept = memory.get()
    assert kept[-1] is question or kept[-1].blocks == question.blocks  # the document itself
    assert all(m.content != "sunny " * 300 for m in kept)  # an old turn made room for its estimate
    assert len(memory.get_all()) == 5


def test_a_tool_result_without_its_call_id_is_still_refused() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2_000)
    memory.put(ChatMessage(role="user", content="hi"))
    with pytest.raises(InvalidMessageError, match="tool_call_id"):
        memory.put(ChatMessage(role="tool", content="18C"))  # only content may stand in, not structure
