"""The ladder's ``smaller_context`` step acted on by ``TokenBudgetChatMemory(ledger=...)``: a payer
past that step gets ``context_share`` of the window's budget (fewer old turns), other payers the
whole window; what ``get()`` reserves for the input and prefix comes out of the smaller budget."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from pydantic import Field

from llamaindex_tokenbudget import TokenBudgetChatMemory, to_core_messages
from tokenbudget_core import TokenCounter, Usage, attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

COUNTER = TokenCounter.for_model("gpt-4o")
SYSTEM = ChatMessage(role="system", content="You are a terse assistant. Answer in one line.")
BUDGET = 600
LIMIT = 1_000


def tokens(messages: list[ChatMessage]) -> int:
    return int(COUNTER.count_messages(to_core_messages(messages)))


def ledger() -> Ledger:
    return Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(user_daily_tokens=LIMIT)})
    )


def spend(ledger: Ledger, user: str) -> None:
    """Commit real usage taking the user's budget past the ladder's smaller_context (80%)."""
    held = ledger.reserve(
        model="gpt-4o", input_tokens=800, max_output_tokens=10, feature="support", user=user
    )
    ledger.commit(held, Usage(input_tokens=800, output_tokens=0))
    assert ledger.state(feature="support", user=user).step == "smaller_context"


def history(turns: int = 12) -> list[ChatMessage]:
    """A system prompt, a first user message, then turns that call a tool (OpenAI-style)."""
    out = [SYSTEM, ChatMessage(role="user", content="Hi, I am Ada and I live in Lyon.")]
    for t in range(turns):
        ids = [f"t{t}a", f"t{t}b"]
        calls = [
            {"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ids
        ]
        out.append(ChatMessage(role="user", content=f"turn {t}: " + "please check " * 5))
        out.append(ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": calls}))
        out += [
            ChatMessage(role="tool", content="fact " * 8, additional_kwargs={"tool_call_id": i}) for i in ids
        ]
        out.append(ChatMessage(role="assistant", content="done " * 6))
    return out


def assert_tool_pairs_intact(messages: list[ChatMessage]) -> None:
    calls: dict[str, int] = {}
    for k, m in enumerate(messages):
        calls.update(dict.fromkeys((c["id"] for c in m.additional_kwargs.get("tool_calls", [])), k))
        if m.role == "tool":
            owner = calls.get(m.additional_kwargs["tool_call_id"])
            assert owner is not None, f"tool result {k} without its call"
            assert all(x.role == "tool" for x in messages[owner + 1 : k])
    answered = {m.additional_kwargs["tool_call_id"] for m in messages if m.role == "tool"}
    assert set(calls) <= answered, "a tool call lost its result"


def memory_for(
    book: Ledger | None, user: str | None, stored: list[ChatMessage], **options: Any
) -> TokenBudgetChatMemory:
    payer = {} if book is None else {"ledger": book, "feature": "support", "user": user}
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=BUDGET, **payer, **options)
    memory.set(stored)
    return memory


def room(book: Ledger) -> int:
    return int(BUDGET * book.policy.ladder.context_share)


def check_kept(window: list[ChatMessage], stored: list[ChatMessage], budget: int) -> None:
    assert tokens(window) <= budget
    assert window[0] is SYSTEM
    assert window[1] is stored[1]  # the first user message, pinned
    assert window[-1] is stored[-1]
    assert all(any(m is s for s in stored) for m in window)
    assert_tool_pairs_intact(window)


def test_a_payer_past_smaller_context_gets_a_smaller_window() -> None:
    book, stored = ledger(), history()
    whole = memory_for(None, None, stored).get()
    ada, bob = memory_for(book, "ada", stored), memory_for(book, "bob", stored)
    assert ada.get() == whole == bob.get()
    assert tokens(whole) > room(book)

    spend(book, "ada")
    smaller = ada.get()
    check_kept(smaller, stored, room(book))
    assert len(smaller) < len(whole)
    assert bob.get() == whole  # another user: the whole window
    assert ada.get_all() == stored  # the store keeps everything
    with attribute(feature="support", user="ada"):  # the enclosing payer wins over user="bob"
        assert bob.get() == smaller


async def test_async_twin_reads_the_ledger() -> None:
    book, stored = ledger(), history()
    ada, bob = memory_for(book, "ada", stored), memory_for(book, "bob", stored)
    whole = await ada.aget()
    assert tokens(whole) > room(book)
    spend(book, "ada")
    smaller = await ada.aget()
    check_kept(smaller, stored, room(book))
    assert len(smaller) < len(whole)
    assert await bob.aget() == whole


def test_what_get_reserves_comes_out_of_the_smaller_budget() -> None:
    book, stored = ledger(), history()
    prefix = [ChatMessage(role="system", content="Context: " + "the user travels often " * 5)]
    ada = memory_for(book, "ada", stored, prefix_messages=prefix)
    spend(book, "ada")
    question = "and one more thing " * 5
    window = ada.get(input=question, initial_token_count=40)
    sent = [*prefix, *window, ChatMessage(role="user", content=question)]
    assert tokens(sent) <= room(book) - 40
    check_kept(window, stored, room(book))
    assert len(window) < len(memory_for(book, "bob", stored, prefix_messages=prefix).get(input=question))


class RecordingLLM(MockLLM):
    """A MockLLM that records the messages each chat call received."""

    received: list[list[ChatMessage]] = Field(default_factory=list, exclude=True)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.received.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="ok " * 8))


def test_a_chat_engine_sends_less_for_a_payer_past_smaller_context() -> None:
    book = ledger()
    spend(book, "ada")

    def received(user: str) -> list[ChatMessage]:
        llm = RecordingLLM(max_tokens=8)
        memory = TokenBudgetChatMemory(
            model="gpt-4o", max_tokens=BUDGET, ledger=book, feature="support", user=user
        )
        engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, prefix_messages=[SYSTEM])
        for i in range(20):
            engine.chat(f"question {i}: " + "tell me more " * 8)
        last = llm.received[-1]
        assert last[0] is SYSTEM
        assert str(last[1].content).startswith("question 0:")
        assert str(last[-1].content).startswith("question 19:")
        return last

    ada, bob = received("ada"), received("bob")
    assert tokens(ada) <= room(book) < tokens(bob) <= BUDGET
    assert len(ada) < len(bob)


def test_the_whole_budget_when_the_must_keep_messages_need_it() -> None:
    book = ledger()
    big = ChatMessage(role="system", content="Answer with care. " * 90)
    stored = [big, *history(4)[1:]]
    whole = memory_for(None, None, stored).get()
    ada = memory_for(book, "ada", stored)
    spend(book, "ada")
    assert tokens(whole[:2]) > room(book)
    assert ada.get(input="one more question") == memory_for(None, None, stored).get(input="one more question")


@pytest.mark.parametrize("first_user", ["pin", "slide"])
def test_without_input_too_the_whole_budget_when_the_must_keep_messages_need_it(first_user: str) -> None:
    """(review s31) ``get()`` with no input, as agents call it: the window trimmed as far as it
    could go, still over the smaller budget, had kept the system prompt and the last reply only,
    the newest question and every other turn dropped, instead of the whole budget's window."""
    book = ledger()
    big = ChatMessage(role="system", content="Answer with care. " * 90)
    stored = [big, *history(4)[1:]]
    whole = memory_for(None, None, stored, first_user=first_user).get()
    ada = memory_for(book, "ada", stored, first_user=first_user)
    spend(book, "ada")
    assert tokens([big, stored[-1]]) > room(book)
    assert ada.get() == whole
    assert stored[-5] in ada.get()  # the newest question


def test_the_ledger_is_passed_again_not_serialised() -> None:
    book, stored = ledger(), history()
    ada = memory_for(book, "ada", stored)
    spend(book, "ada")
    data = ada.to_dict()
    assert "ledger" not in data
    assert data["user"] == "ada"
    again = TokenBudgetChatMemory.from_dict(data, ledger=book)
    assert again.ledger is book
    assert again.get() == ada.get()
    with pytest.raises(InvalidInputError) as caught:  # its payer without the ledger: named, not ignored
        TokenBudgetChatMemory.from_dict(data)
    assert caught.value.field == "feature"
    copied = ada.model_copy(deep=True)
    assert copied.ledger is book
    assert len(copied.get()) == len(ada.get())
    with pytest.raises(InvalidInputError) as refused:
        pickle.dumps(ada)
    assert refused.value.field == "ledger"


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        ({"ledger": "memory://"}, "ledger", "must be a tokenbudget Ledger"),
        ({"ledger": object()}, "ledger", "must be a tokenbudget Ledger"),
        ({"ledger": Ledger("memory://"), "user": 42}, "user", "must be a non-empty string"),
        ({"ledger": Ledger("memory://"), "feature": ""}, "feature", "must be a non-empty string"),
        ({"user": "ada"}, "user", "no ledger"),
    ],
)
def test_bad_ledger_options_are_named(options: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        TokenBudgetChatMemory(model="gpt-4o", max_tokens=BUDGET, **options)
    assert caught.value.field == field
    assert problem in str(caught.value)
