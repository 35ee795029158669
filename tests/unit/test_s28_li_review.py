"""Review of the LlamaIndex adapters (s28): an agent's input is not reserved twice, memories
rebuilt from their pydantic dumps, an LLM that is not one named, a summary memory LlamaIndex
can restore by itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.settings import Settings
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.tools import FunctionTool

from llamaindex_tokenbudget import (
    BudgetCallbackHandler,
    CostEventHandler,
    SummaryChatMemory,
    TokenBudgetChatMemory,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger


def _lookup(q: str) -> str:
    """Look something up."""
    return "result"


def _answer(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
    """A tool call first, then an answer once a tool result is in the request."""
    if any(m.role == MessageRole.TOOL for m in messages):
        return ChatMessage(role="assistant", content="done")
    call = ToolCallBlock(tool_call_id="c1", tool_name="_lookup", tool_kwargs={"q": "x"})
    return ChatMessage(role="assistant", blocks=[call])


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect")
async def test_an_agent_whose_message_is_over_half_the_budget_runs_its_tools() -> None:
    """LlamaIndex's agents put the user's message, then pass its text again as ``input`` after
    each round of tool results; they never send it twice, so it is reserved once."""
    llm = MockFunctionCallingLLM(response_generator=_answer, is_chat_model=True)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(_lookup)], llm=llm)
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2_000, reserve_output=0)
    result = await agent.run(user_msg="word " * 1_100, memory=memory)
    assert str(result) == "done"
    assert [m.role for m in memory.get_all()] == ["user", "assistant", "tool", "assistant"]


def test_the_agents_input_does_not_push_older_turns_out() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2_000, reserve_output=0)
    for i in range(30):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"turn {i} " + "w " * 40))
    question = "word " * 600
    memory.put(ChatMessage(role="user", content=question))
    assert memory.get(input=question) == memory.get()
    call = ChatMessage(
        role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={})]
    )
    memory.put(call)
    memory.put(ChatMessage(role="tool", content="42", additional_kwargs={"tool_call_id": "c1"}))
    assert memory.get(input=question) == memory.get()  # after the run's tool steps too


def test_a_chat_engines_input_is_still_reserved() -> None:
    """A chat engine passes the new message before putting it, and sends it beside the window."""
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2_000, reserve_output=0)
    for i in range(30):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"turn {i} " + "w " * 40))
    assert len(memory.get(input="word " * 600)) < len(memory.get())
    repeated = memory.get_all()[-2].content  # the same text as the last question, after its reply
    assert repeated
    assert len(memory.get(input=repeated + " " + "word " * 600)) < len(memory.get())


@pytest.mark.parametrize("kind", ["dump", "json", "kwargs"])
def test_a_memory_is_rebuilt_from_its_pydantic_dump(kind: str) -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=500)
    memory.put(ChatMessage(role="user", content="hello"))
    if kind == "dump":
        again = TokenBudgetChatMemory.model_validate(memory.model_dump())
    elif kind == "json":
        again = TokenBudgetChatMemory.model_validate_json(memory.model_dump_json())
    else:
        again = TokenBudgetChatMemory(**memory.model_dump())
    assert isinstance(again.chat_store, SimpleChatStore)
    again.put(ChatMessage(role="assistant", content="hi"))
    assert [m.content for m in again.get_all()] == ["hello", "hi"]
    assert again.max_tokens == 500


def test_bad_dumps_and_stores_are_named() -> None:
    with pytest.raises(InvalidInputError) as refused:
        TokenBudgetChatMemory(chat_store={"store": {}})
    assert refused.value.field == "chat_store"
    with pytest.raises(InvalidInputError) as refused:
        TokenBudgetChatMemory.model_validate({"model": "gpt-4o", "max_tokens": -5})
    assert refused.value.field == "max_tokens"
    with pytest.raises(InvalidInputError) as refused:
        TokenBudgetChatMemory.model_validate(5)
    assert refused.value.field == "obj"
    with pytest.raises(InvalidInputError) as refused:
        TokenBudgetChatMemory.model_validate_json("{not json")
    assert refused.value.field == "json_data"


def test_from_defaults_names_an_llm_that_is_not_one() -> None:
    with pytest.raises(InvalidInputError) as refused:
        TokenBudgetChatMemory.from_defaults(llm=5)  # type: ignore[arg-type]
    assert refused.value.field == "llm"


@pytest.fixture
def settings_llm() -> Iterator[MockLLM]:
    saved = getattr(Settings, "_llm", None)
    llm = MockLLM(max_tokens=5)
    Settings.llm = llm
    try:
        yield llm
    finally:
        Settings._llm = saved


def test_a_summary_memory_is_restored_without_its_llm_passed(settings_llm: MockLLM) -> None:
    """A workflow's ``Context.from_dict`` rebuilds the memory with no arguments: the LLM set in
    Settings writes the summary from then on, as in ``from_defaults``."""
    memory = SummaryChatMemory(llm=MockLLM(max_tokens=5), model="gpt-4o", max_tokens=300)
    for i in range(30):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content="word " * 20))
    again = SummaryChatMemory.from_dict(memory.to_dict())
    assert again.llm is settings_llm
    assert again.summary == memory.summary
    assert [m.content for m in again.get_all()] == [m.content for m in memory.get_all()]


def test_without_settings_a_summary_memory_still_names_its_llm() -> None:
    saved = getattr(Settings, "_llm", None)
    Settings._llm = None
    try:
        memory = SummaryChatMemory(llm=MockLLM(max_tokens=5), model="gpt-4o", max_tokens=300)
        with pytest.raises(InvalidInputError) as refused:
            SummaryChatMemory.from_dict(memory.to_dict())
        assert refused.value.field == "llm"
    finally:
        Settings._llm = saved


# -- a call cut off once sent is charged, not released -------------------------------------------


class SlowLLM(MockLLM):
    """An OpenAI-like chat model that takes a second to answer (``fail``: it errs at once)."""

    fail: bool = False

    def __init__(self, *, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail = fail

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", num_output=300, is_chat_model=True)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        if self.fail:
            raise ValueError("the request was refused before it went out")
        await asyncio.sleep(1.0)
        return ChatResponse(message=ChatMessage(role="assistant", content="late"))


PROMPT = [ChatMessage(role="user", content="hi " * 50)]


def _call(llm: SlowLLM) -> None:
    async def go() -> None:
        await asyncio.wait_for(llm.achat(PROMPT), 0.1)

    with pytest.raises((asyncio.TimeoutError, ValueError)):
        asyncio.run(go())


def _charged(ledger: Ledger) -> Counter[str]:
    got: Counter[str] = Counter()
    for row in ledger.store.rollup([ledger.day()]):
        got.update(row.values)
    return got


@pytest.mark.parametrize("handler", ["callback", "event"])
@pytest.mark.parametrize("fail", [False, True])
def test_a_call_cut_off_once_sent_is_charged_its_estimate(handler: str, fail: bool) -> None:
    """A timed-out ``achat`` was sent and is billed: charged the counted input, flagged; one that
    failed before it went out is not charged."""
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    if handler == "callback":
        _call(SlowLLM(fail=fail, callback_manager=CallbackManager([BudgetCallbackHandler(ledger, user="u")])))
    else:
        events = CostEventHandler(ledger=ledger, user="u")
        get_dispatcher().add_event_handler(events)
        try:
            _call(SlowLLM(fail=fail))
        finally:
            get_dispatcher().event_handlers.remove(events)
    got = _charged(ledger)
    used = ledger.state(user="u").used["user_daily_tokens (all features)"]
    if fail:
        assert got["requests"] == 0
        assert used == 0
    else:
        assert got["requests"] == got["estimated"] == 1
        assert got["input_tokens"] > 50
        assert used == got["input_tokens"]
