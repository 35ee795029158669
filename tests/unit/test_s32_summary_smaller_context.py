"""The summarising memories act on the ladder's ``smaller_context`` step too (issue 4, section 6):
``SummaryBuffer.messages(within=)`` keeps the running summary and reads the recent turns within
what it leaves, and LlamaIndex's ``SummaryChatMemory(ledger=)`` sends a payer past the step
``context_share`` of its budget, every other payer the whole window. A read never calls the
summariser: the turns left out come back when the payer is below the step again. Before, these
memories took no ledger and sent the whole window to a payer running out of budget."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import SummaryChatMemory, to_core_messages
from tokenbudget_core import TokenCounter, Usage
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.summary import SummaryBuffer

COUNTER = TokenCounter.for_model("gpt-4o")
BUDGET = 600


def turns(n: int) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "word " * 25}
        for i in range(n)
    ]


def buffer_with(n: int, calls: list[int]) -> SummaryBuffer[dict[str, str]]:
    def summarise(previous: str | None, msgs: list[Any]) -> str:
        calls.append(len(msgs))
        return f"{len(msgs)} earlier messages about words"

    buffer: SummaryBuffer[dict[str, str]] = SummaryBuffer(summarise, "gpt-4o", max_tokens=BUDGET)
    buffer.append({"role": "system", "content": "You are terse."})
    buffer.extend(turns(n))
    return buffer


def test_a_read_within_a_smaller_budget_keeps_the_summary_and_the_newest_turns() -> None:
    calls: list[int] = []
    buffer = buffer_with(40, calls)
    assert buffer.summary is not None
    whole = buffer.messages()
    folded = len(calls)

    smaller = buffer.messages(300)

    assert COUNTER.count_messages(smaller) <= 300 < COUNTER.count_messages(whole)
    assert smaller[0] == whole[0]  # the system prompt
    assert smaller[1] == whole[1]  # the summary
    assert smaller[-1] == whole[-1]  # the newest turn
    assert len(smaller) < len(whole)
    assert len(calls) == folded  # a read folds nothing
    assert buffer.messages() == whole  # the turns left out are back at a whole read
    assert buffer.messages(BUDGET) == whole
    assert buffer.messages(5) == whole  # what must be kept cannot fit: the whole buffer


@pytest.mark.parametrize("within", [-1, 1.5, True, "300"])
def test_a_bad_within_is_named(within: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        buffer_with(4, []).messages(within)  # type: ignore[arg-type]
    assert caught.value.field == "within"


def book() -> Ledger:
    return Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(user_daily_tokens=1_000)})
    )


def spend(ledger: Ledger, user: str) -> None:
    ledger.record(Usage(input_tokens=800), model="gpt-4o", feature="support", user=user)
    assert ledger.state(feature="support", user=user).step == "smaller_context"


def memory_for(ledger: Ledger | None, user: str | None) -> SummaryChatMemory:
    payer = {} if ledger is None else {"ledger": ledger, "feature": "support", "user": user}
    memory = SummaryChatMemory(llm=MockLLM(max_tokens=8), model="gpt-4o", max_tokens=BUDGET, **payer)
    memory.put(ChatMessage(role="system", content="You are terse."))
    for m in turns(40):
        memory.put(ChatMessage(role=m["role"], content=m["content"]))
    return memory


def tokens(messages: list[ChatMessage]) -> int:
    return int(COUNTER.count_messages(to_core_messages(messages)))


def test_summary_chat_memory_sends_a_payer_past_smaller_context_less() -> None:
    ledger = book()
    whole = memory_for(None, None).get()
    ada, bob = memory_for(ledger, "ada"), memory_for(ledger, "bob")
    assert ada.summary is not None
    assert ada.get() == whole == bob.get()

    spend(ledger, "ada")
    smaller = ada.get()

    room = int(BUDGET * ledger.policy.ladder.context_share)
    assert tokens(smaller) <= room < tokens(whole)
    assert smaller[0].role == "system"
    assert ada.summary is not None
    assert ada.summary in str(smaller[1].content)  # the summary is kept
    assert smaller[-1] == whole[-1]
    assert bob.get() == whole  # another payer: the whole window
    assert asyncio.run(ada.aget()) == smaller
    assert len(ada.get_all()) == 41  # the store keeps everything


def test_summary_chat_memory_passes_its_ledger_again_not_serialised() -> None:
    ledger = book()
    ada = memory_for(ledger, "ada")
    data = ada.to_dict()
    assert "ledger" not in data
    assert data["user"] == "ada"
    again = SummaryChatMemory.from_dict(data, ledger=ledger, llm=MockLLM(max_tokens=8))
    assert again.ledger is ledger
    with pytest.raises(InvalidInputError) as refused:
        pickle.dumps(ada)
    assert refused.value.field == "ledger"
    with pytest.raises(InvalidInputError) as caught:
        SummaryChatMemory(llm=MockLLM(), model="gpt-4o", max_tokens=BUDGET, user="ada")
    assert caught.value.field == "user"
